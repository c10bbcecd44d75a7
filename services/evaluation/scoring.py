"""Year-end scoring of one TKS from the facts gathered about its year: pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from services.evaluation.config import INDICATORS, IndicatorName, Policy
from shared.contracts.evaluation import Decision

ExclusionReason = Literal["left_programme", "too_few_months", "no_contract"]


@dataclass(frozen=True)
class TksFacts:
    """What the projections know about one TKS in one year. Group counts are credited to the
    TKS that mentored the group when the fact happened (see views.tks_facts)."""

    tks_id: str
    province_code: str | None = None
    regency_code: str | None = None
    months_served: int = 0
    left_programme: bool = False
    reports_due: int = 0
    reports_on_time: int = 0
    quarters_filed: int = 0
    first_quarter_revenue: float | None = None  # average revenue per filed report
    last_quarter_revenue: float | None = None
    new_workers: int = 0
    groups_reported: int = 0
    funded_groups: int = 0  # credited by the LPJ's acceptance (or year end when none)
    lpj_accepted: int = 0
    year_end_groups: int = 0  # credited by the dissolution (or year end when still active)
    active_groups: int = 0


@dataclass(frozen=True)
class IndicatorScore:
    name: IndicatorName
    value: float
    normalised: float
    weight: float
    contribution: float
    basis: dict[str, float | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    facts: TksFacts
    score: float
    decision: Decision
    indicators: tuple[IndicatorScore, ...]


def months_served(contracts: list[tuple[date, date]], year: int) -> int:
    """Whole months of contract within `year`; overlapping contracts are counted once."""
    first, last = date(year, 1, 1), date(year, 12, 31)
    spans = sorted((max(s, first), min(e, last)) for s, e in contracts if s <= last and e >= first)
    merged: list[list[date]] = []
    for start, end in spans:
        if start > end:
            continue
        if merged and start <= merged[-1][1] + timedelta(days=1):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return sum(_whole_months(start, end + timedelta(days=1)) for start, end in merged)


def _whole_months(start: date, stop: date) -> int:
    months = (stop.year - start.year) * 12 + stop.month - start.month
    return months - 1 if stop.day < start.day else months


def exclusion(facts: TksFacts, policy: Policy) -> ExclusionReason | None:
    """Why a TKS is not evaluated this year, or None when it is evaluable."""
    if facts.province_code is None or facts.regency_code is None:
        return "no_contract"
    if facts.left_programme:
        return "left_programme"
    if facts.months_served < policy.minimum_months:
        return "too_few_months"
    return None


def revenue_growth(first: float | None, last: float | None, quarters: int) -> float:
    # growth needs two quarters to compare; going from no revenue to some counts as doubling
    if quarters < 2 or first is None or last is None:
        return 0.0
    if first <= 0:
        return 1.0 if last > 0 else 0.0
    return last / first - 1


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def measure(facts: TksFacts) -> dict[IndicatorName, tuple[float, dict[str, float | int | None]]]:
    """Each indicator's raw value, with the counts it was computed from."""
    f = facts
    return {
        "reporting_compliance": (_ratio(f.reports_on_time, f.reports_due),
                                 {"on_time": f.reports_on_time, "due": f.reports_due}),
        "revenue_growth": (revenue_growth(f.first_quarter_revenue, f.last_quarter_revenue,
                                          f.quarters_filed),
                           {"first_quarter_revenue": f.first_quarter_revenue,
                            "last_quarter_revenue": f.last_quarter_revenue,
                            "quarters_filed": f.quarters_filed}),
        "new_workers": (_ratio(f.new_workers, f.groups_reported),
                        {"new_workers": f.new_workers, "groups_reported": f.groups_reported}),
        "lpj_completion": (_ratio(f.lpj_accepted, f.funded_groups),
                           {"accepted": f.lpj_accepted, "funded_groups": f.funded_groups}),
        "groups_active": (_ratio(f.active_groups, f.year_end_groups),
                          {"active": f.active_groups, "groups": f.year_end_groups}),
    }


def normalise(value: float, cap: float) -> float:
    return min(max(value, 0.0) / cap, 1.0)


def score(facts: TksFacts, policy: Policy) -> Scored:
    measured = measure(facts)
    indicators = []
    total = 0.0
    for name in INDICATORS:
        value, basis = measured[name]
        rule = policy.indicators[name]
        normalised = normalise(value, rule.cap)
        contribution = rule.weight * normalised * 100
        total += contribution
        indicators.append(IndicatorScore(name, round(value, 4), round(normalised, 4), rule.weight,
                                         round(contribution, 2), basis))
    # the decision follows the published (rounded) score, so the two never disagree
    final = min(round(total, 2), 100.0)
    decision: Decision = "continue" if final >= policy.threshold else "replace"
    return Scored(facts, final, decision, tuple(indicators))


@dataclass(frozen=True)
class YearOutcome:
    evaluated: list[Scored]
    excluded: list[tuple[TksFacts, ExclusionReason]]


def evaluate_year(facts: list[TksFacts], policy: Policy) -> YearOutcome:
    evaluated, excluded = [], []
    for f in sorted(facts, key=lambda f: f.tks_id):
        reason = exclusion(f, policy)
        if reason is None:
            evaluated.append(score(f, policy))
        else:
            excluded.append((f, reason))
    return YearOutcome(evaluated, excluded)


def histogram(scores: list[float], width: int) -> list[dict[str, float | int]]:
    """Counts of scores in buckets [k*width, (k+1)*width); the last bucket includes 100."""
    buckets = -(-100 // width)
    counts = [0] * buckets
    for s in scores:
        counts[min(int(s // width), buckets - 1)] += 1
    return [{"min_score": k * width, "max_score": min((k + 1) * width, 100), "count": n}
            for k, n in enumerate(counts)]
