"""A seeded past programme year in the CSV layout of `tkm load-history` (docs/history.md).

The default is the 2021 shape: 664 TKS in three briefing stages, 6,250 groups of 16 members
(100,000 people), one tranche of Rp 20,000,000 a group, each group mentored by a TKS of its
regency from its funding day. `scale` shrinks it (0.04: 27 TKS, 250 groups). NIKs are valid
(shared.nik, real districts of shared.regions), birth dates make every member 18-60 during the
year and every TKS 22-34 on 1 January. Same seed, same files, byte for byte.
"""

from __future__ import annotations

import csv
import random
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from scripts.scenario import BUSINESS_TYPES, province_weights
from shared import regions
from shared.nik import random_valid_nik

TKS_2021, GROUPS_2021, MEMBERS_2021 = 664, 6_250, 16
FUNDING_2021 = 20_000_000  # rupiah a group, one tranche
CASELOAD_CAP = 25  # mentoring's stock cap


@dataclass(frozen=True)
class Stage:
    stage: int
    share: float  # of the year's TKS and groups
    city: str
    briefed_on: date  # = contract start
    registered_on: date  # groups of this stage registered from this day (for 3 weeks)
    funded_on: date


def stages(year: int) -> tuple[Stage, ...]:
    return (Stage(1, 0.45, "Jakarta", date(year, 3, 1), date(year, 3, 22), date(year, 4, 15)),
            Stage(2, 0.35, "Surabaya", date(year, 5, 3), date(year, 5, 24), date(year, 6, 15)),
            Stage(3, 0.20, "Makassar", date(year, 7, 5), date(year, 7, 26), date(year, 8, 16)))


HEADERS = {
    "tks.csv": ("ref", "nik", "full_name", "sex", "birth_date", "education",
                "domicile_regency_code", "regency_code", "stage", "briefing_city", "briefed_on",
                "contract_start", "contract_end", "phone", "email"),
    "groups.csv": ("ref", "year", "stage", "regency_code", "business_type", "name",
                   "registered_on"),
    "members.csv": ("group_ref", "nik", "name", "phone"),
    "fundings.csv": ("group_ref", "tranche", "amount", "disbursed_on", "budget_year"),
    "mentors.csv": ("group_ref", "tks_ref", "assigned_on"),
    "reports.csv": ("group_ref", "tks_ref", "period", "filed_on", "revenue", "production_units",
                    "production_unit", "members_active", "new_workers"),
}
_FIRST = ("Siti", "Budi", "Dewi", "Agus", "Rina", "Andi", "Sri", "Eko", "Nur", "Wahyu", "Putri",
          "Rudi", "Yuni", "Joko", "Fitri", "Hendra", "Lestari", "Bayu", "Ayu", "Dedi")
_LAST = ("Santoso", "Wijaya", "Lestari", "Saputra", "Rahmawati", "Hidayat", "Pratama",
         "Kurniawan", "Sari", "Nugroho", "Siregar", "Nasution", "Manurung", "Daeng", "Wenda")
_WORDS = ("Maju Bersama", "Sejahtera", "Karya Mandiri", "Berkah", "Harapan Baru",
          "Sumber Rejeki", "Makmur Jaya", "Tunas Muda", "Mekar Sari", "Bina Usaha")
_MOBILE = ("0812", "0813", "0821", "0852", "0857", "0878", "0896")


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` over `parts` parts, each at least 1, the rest drawn evenly."""
    out = [1] * parts
    for _ in range(total - parts):
        out[rng.randrange(parts)] += 1
    return out


def _birth(rng: random.Random, youngest: date, oldest: date) -> date:
    return oldest + timedelta(days=rng.randrange((youngest - oldest).days + 1))


def generate(out: Path, *, year: int = 2021, scale: float = 1.0, seed: int = 2021,
             mentors: bool = True, reports: bool = False) -> dict[str, int]:
    """Writes the CSV files under `out`; returns the figures they hold."""
    if not 0 < scale <= 1:
        raise ValueError("scale must be in (0, 1]")
    rng = random.Random(seed)
    tks_total = max(3, round(TKS_2021 * scale))
    groups_total = max(tks_total, round(GROUPS_2021 * scale))
    weights = province_weights()
    # regencies drawn by province population (weighted, without replacement), a TKS or more each
    pool = [r for r in regions.regencies() if r.province_code in weights]
    keyed = sorted(pool, key=lambda r: rng.random() ** (1 / weights[r.province_code]),
                   reverse=True)
    n_regencies = max(3, round(tks_total * 0.6))
    chosen = keyed[:n_regencies]
    used: set[str] = set()
    rows: dict[str, list[tuple]] = {name: [] for name in HEADERS}
    # every member is 18-60 on every day of the year; every TKS 22-34 on 1 January
    m_youngest, m_oldest = date(year - 19, 1, 1), date(year - 60, 1, 2)
    t_youngest, t_oldest = date(year - 22, 1, 1), date(year - 34, 1, 2)

    def person(regency: str, youngest: date, oldest: date) -> tuple[str, str, str, date]:
        sex = rng.choice("FM")
        while True:
            born = _birth(rng, youngest, oldest)
            nik = random_valid_nik(rng, regency_code=regency, sex=sex, birth_date=born)
            if nik not in used:
                used.add(nik)
                return nik, f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", sex, born

    plan = stages(year)
    start = 0
    tks_left, groups_left = tks_total, groups_total
    for i, stage in enumerate(plan):
        last = i == len(plan) - 1
        n_tks = tks_left if last else round(tks_total * stage.share)
        n_groups = groups_left if last else round(groups_total * stage.share)
        tks_left, groups_left = tks_left - n_tks, groups_left - n_groups
        n_reg = max(1, min(n_tks, round(len(chosen) * stage.share))) if not last \
            else max(1, min(n_tks, len(chosen) - start))
        picked = chosen[start:start + n_reg]
        start += n_reg
        per_regency = _split(n_tks, len(picked), rng)
        # groups in proportion to a regency's TKS: caseloads stay far under the cap
        group_split = [n_groups * t // n_tks for t in per_regency]
        for j in rng.sample(range(len(picked)), n_groups - sum(group_split)):
            group_split[j] += 1
        for regency, t_count, g_count in zip(picked, per_regency, group_split, strict=True):
            tks_refs = []
            for k in range(t_count):
                nik, name, sex, born = person(regency.code, t_youngest, t_oldest)
                ref = f"TKS-{year}-{stage.stage}-{regency.code}-{k + 1:02d}"
                tks_refs.append(ref)
                phone = f"{rng.choice(_MOBILE)}{rng.randint(10**7, 10**8 - 1)}"
                rows["tks.csv"].append((
                    ref, nik, name, sex, born.isoformat(),
                    rng.choice(("D3", "S1", "S1", "S1", "S2")), regency.code, regency.code,
                    stage.stage, stage.city, stage.briefed_on.isoformat(),
                    stage.briefed_on.isoformat(), date(year, 12, 31).isoformat(), phone,
                    ""))
            load = dict.fromkeys(tks_refs, 0)
            for g in range(g_count):
                ref = f"KUB-{year}-{regency.code}-{stage.stage}{g + 1:03d}"
                registered = stage.registered_on + timedelta(days=rng.randrange(21))
                rows["groups.csv"].append((
                    ref, year, "pemula", regency.code, rng.choice(BUSINESS_TYPES),
                    f"KUB {rng.choice(_WORDS)} {regency.code}-{stage.stage}{g + 1:03d}",
                    registered.isoformat()))
                for _ in range(MEMBERS_2021):
                    nik, name, _sex, _born = person(regency.code, m_youngest, m_oldest)
                    phone = (f"{rng.choice(_MOBILE)}{rng.randint(10**7, 10**8 - 1)}"
                             if rng.random() < 0.3 else "")
                    rows["members.csv"].append((ref, nik, name, phone))
                rows["fundings.csv"].append((ref, 1, FUNDING_2021,
                                             stage.funded_on.isoformat(), year))
                # the stock rule: the TKS of the regency with the lightest caseload
                mentor = min(tks_refs, key=lambda t: (load[t], tks_refs.index(t)))
                if load[mentor] >= CASELOAD_CAP:
                    raise ValueError(f"regency {regency.code}: more groups than TKS can mentor")
                load[mentor] += 1
                if mentors:
                    rows["mentors.csv"].append((ref, mentor, stage.funded_on.isoformat()))
                if reports:
                    rows["reports.csv"].extend(_reports(rng, ref, mentor, stage.funded_on,
                                                        year))
    out.mkdir(parents=True, exist_ok=True)
    for name, header in HEADERS.items():
        if (name == "mentors.csv" and not mentors) or (name == "reports.csv" and not reports):
            (out / name).unlink(missing_ok=True)
            continue
        with (out / name).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows[name])
    return {"tks": len(rows["tks.csv"]), "groups": len(rows["groups.csv"]),
            "members": len(rows["members.csv"]), "fundings": len(rows["fundings.csv"]),
            "mentors": len(rows["mentors.csv"]), "reports": len(rows["reports.csv"])}


def _reports(rng: random.Random, group_ref: str, tks_ref: str, funded_on: date,
             year: int) -> list[tuple]:
    """A report for each month from the funding month to November, filed by the 10th of the
    next month (a few days late now and then)."""
    out = []
    revenue = rng.randrange(2_000_000, 15_000_000, 50_000)
    for month in range(funded_on.month, 12):
        revenue = int(revenue * rng.uniform(0.97, 1.06)) // 1000 * 1000
        filed = date(year, month + 1, 1) + timedelta(days=rng.randrange(14))
        filed = min(filed, date(year, month + 1, monthrange(year, month + 1)[1]))
        out.append((group_ref, tks_ref, f"{year}-{month:02d}", filed.isoformat(), revenue,
                    rng.randint(20, 400), "pcs", MEMBERS_2021 - (rng.random() < 0.1),
                    int(rng.random() < 0.12)))
    return out
