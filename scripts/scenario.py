"""The programme year the demo drives through the services: generated, realistic, reproducible.

The default reproduces the 2023 intake (DOMAIN.md): stage I 386 TKS in 141 regencies mentoring
4,398 groups, stage II 333 in 182 with 3,790, stage III 181 in 118 with 2,767. Regencies are
drawn by province population (so the denser west gets more) and are distinct across stages, so a
regency's groups are mentored by that stage's TKS only.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from shared import regions
from shared.nik import random_valid_nik

DATA = Path(__file__).parent / "data"
BUSINESS_TYPES = ("poultry", "cattle", "goats", "garments", "tailoring", "embroidery",
                  "bridal_makeup", "catering", "motorbike_repair", "screen_printing", "printing",
                  "welding", "small_construction")


@dataclass(frozen=True)
class StageTarget:
    stage: int
    tks: int
    regencies: int
    groups: int
    briefed_on: date
    funded_on: date


# briefing and funding dates are illustrative; every stage serves the six months the default
# evaluation policy asks of a TKS before it is evaluated
TARGETS_2023 = (
    StageTarget(1, 386, 141, 4398, date(2023, 2, 20), date(2023, 3, 15)),
    StageTarget(2, 333, 182, 3790, date(2023, 4, 17), date(2023, 5, 15)),
    StageTarget(3, 181, 118, 2767, date(2023, 6, 19), date(2023, 7, 17)),
)


@dataclass
class Person:
    nik: str
    name: str
    sex: str
    phone: str
    diligent: bool = True  # for a TKS: files on time and its groups grow

@dataclass
class GroupPlan:
    ref: str
    name: str
    regency_code: str
    business_type: str
    members: list[Person]
    base_revenue: int = 5_000_000  # rupiah a month when funded

@dataclass
class RegencyPlan:
    code: str
    province_code: str
    tks: list[Person] = field(default_factory=list)
    groups: list[GroupPlan] = field(default_factory=list)


@dataclass
class StagePlan:
    target: StageTarget
    regencies: list[RegencyPlan]

    @property
    def tks_count(self) -> int:
        return sum(len(r.tks) for r in self.regencies)

    @property
    def group_count(self) -> int:
        return sum(len(r.groups) for r in self.regencies)


@dataclass
class Scenario:
    year: int
    seed: int
    stages: list[StagePlan]
    members_per_group: int


def province_weights() -> dict[str, float]:
    with (DATA / "province_population_2023.csv").open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["province_code"]: float(r["population_thousands"]) for r in rows}


def scaled_targets(groups: int | None) -> tuple[StageTarget, ...]:
    """The 2023 targets, or the same shape scaled to about `groups` groups in all."""
    if not groups:
        return TARGETS_2023
    factor = groups / sum(t.groups for t in TARGETS_2023)
    out = []
    for t in TARGETS_2023:
        g = max(1, round(t.groups * factor))
        tks = max(1, round(t.tks * factor))
        out.append(StageTarget(t.stage, tks, max(1, min(tks, round(t.regencies * factor))), g,
                               t.briefed_on, t.funded_on))
    return tuple(out)


def build(seed: int = 2023, groups: int | None = None, members_per_group: int = 10,
          year: int = 2023, poor_share: float = 0.15) -> Scenario:
    rng = random.Random(seed)
    targets = scaled_targets(groups)
    weights = province_weights()
    candidates = regions.regencies()
    # weighted draw without replacement (Efraimidis-Spirakis): key = u ** (1 / weight)
    per_province = {p: len(regions.regencies(p)) for p in weights}
    keyed = sorted(candidates, key=lambda r: rng.random() ** (
        per_province[r.province_code] / weights[r.province_code]), reverse=True)
    needed = sum(t.regencies for t in targets)
    chosen = keyed[:needed]
    rng.shuffle(chosen)
    used_niks: set[str] = set()
    stages, start = [], 0
    for target in targets:
        picked = chosen[start:start + target.regencies]
        start += target.regencies
        plans = [RegencyPlan(r.code, r.province_code) for r in picked]
        tks_split = _split(target.tks, [weights[p.province_code] for p in plans], rng, minimum=1)
        group_split = _split(target.groups, tks_split, rng, minimum=0)
        for plan, n_tks, n_groups in zip(plans, tks_split, group_split, strict=True):
            plan.tks = [_person(rng, plan.code, used_niks, age=(22, 34)) for _ in range(n_tks)]
            for tks in plan.tks:
                tks.diligent = rng.random() >= poor_share
            plan.groups = [
                GroupPlan(ref=f"{year}-{target.stage}-{plan.code}-{i + 1:03d}",
                          name=f"KUB {rng.choice(_GROUP_WORDS)} {plan.code}-{i + 1}",
                          regency_code=plan.code, business_type=rng.choice(BUSINESS_TYPES),
                          members=[_person(rng, plan.code, used_niks, age=(18, 50))
                                   for _ in range(members_per_group)],
                          base_revenue=rng.randrange(2_000_000, 15_000_000, 50_000))
                for i in range(n_groups)]
        stages.append(StagePlan(target, plans))
    return Scenario(year, seed, stages, members_per_group)


def _split(total: int, weights: list[float], rng: random.Random, minimum: int) -> list[int]:
    """`total` spread over len(weights) parts, each >= minimum, proportional to weights
    (largest remainder, ties broken by the seeded generator)."""
    parts = [minimum] * len(weights)
    rest = total - minimum * len(weights)
    if rest < 0:
        raise ValueError(f"cannot give {len(weights)} parts at least {minimum} from {total}")
    wsum = sum(weights) or 1
    exact = [rest * w / wsum for w in weights]
    parts = [p + int(e) for p, e in zip(parts, exact, strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - int(exact[i]), rng.random()),
                   reverse=True)
    for i in order[:total - sum(parts)]:
        parts[i] += 1
    return parts


# prefixes of Indonesian mobile operators, so generated numbers pass phone validation
_MOBILE_PREFIXES = ("0812", "0813", "0821", "0822", "0852", "0853", "0857", "0858", "0877",
                    "0878", "0881", "0896")
_GROUP_WORDS = ("Maju Bersama", "Sejahtera", "Karya Mandiri", "Berkah", "Harapan Baru",
                "Sumber Rejeki", "Makmur Jaya", "Tunas Muda", "Mekar Sari", "Bina Usaha")
_FIRST = ("Siti", "Budi", "Dewi", "Agus", "Rina", "Andi", "Sri", "Eko", "Nur", "Wahyu", "Putri",
          "Rudi", "Yuni", "Joko", "Fitri", "Hendra", "Lestari", "Bayu", "Ayu", "Dedi")
_LAST = ("Santoso", "Wijaya", "Lestari", "Saputra", "Rahmawati", "Hidayat", "Pratama",
         "Kurniawan", "Sari", "Nugroho", "Siregar", "Nasution", "Manurung", "Daeng", "Wenda")


def _person(rng: random.Random, regency_code: str, used: set[str], age: tuple[int, int]) -> Person:
    sex = rng.choice("FM")
    while True:
        years = rng.randint(*age)
        born = date(2023 - years, rng.randint(1, 12), rng.randint(1, 28))
        nik = random_valid_nik(rng, regency_code=regency_code, sex=sex, birth_date=born)
        if nik not in used:
            used.add(nik)
            break
    return Person(nik=nik, name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", sex=sex,
                  phone=f"{rng.choice(_MOBILE_PREFIXES)}{rng.randint(10**7, 10**8 - 1)}")
