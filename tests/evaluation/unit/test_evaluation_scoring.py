from datetime import date

import pytest

from services.evaluation.config import load_policy
from services.evaluation.scoring import (
    TksFacts,
    evaluate_year,
    exclusion,
    histogram,
    months_served,
    normalise,
    revenue_growth,
    score,
)

POLICY = load_policy()
YEAR = 2031


def _facts(**changes) -> TksFacts:
    base = dict(tks_id="t-1", province_code="32", regency_code="3201", months_served=12,
                reports_due=12, reports_on_time=12, quarters_filed=4,
                first_quarter_revenue=1_000_000.0, last_quarter_revenue=1_500_000.0,
                new_workers=6, groups_reported=3, funded_groups=3, lpj_accepted=3,
                year_end_groups=3, active_groups=3)
    return TksFacts(**{**base, **changes})


@pytest.mark.parametrize(("contracts", "months"), [
    ([(date(YEAR, 1, 1), date(YEAR, 12, 31))], 12),
    ([(date(YEAR, 7, 1), date(YEAR + 1, 6, 30))], 6),
    ([(date(YEAR - 1, 7, 1), date(YEAR, 3, 31))], 3),
    ([(date(YEAR, 7, 15), date(YEAR, 12, 31))], 5),
    ([(date(YEAR, 10, 1), date(YEAR, 12, 31))], 3),
    # a renewal overlapping the first contract is not counted twice
    ([(date(YEAR, 1, 1), date(YEAR, 6, 30)), (date(YEAR, 5, 1), date(YEAR, 12, 31))], 12),
    # two contracts with a gap: the gap is not service
    ([(date(YEAR, 1, 1), date(YEAR, 3, 31)), (date(YEAR, 7, 1), date(YEAR, 9, 30))], 6),
    ([(date(YEAR + 1, 1, 1), date(YEAR + 1, 12, 31))], 0),
    ([], 0),
])
def test_months_served_counts_whole_months_of_contract_inside_the_year(contracts, months):
    assert months_served(contracts, YEAR) == months


@pytest.mark.parametrize(("first", "last", "quarters", "growth"), [
    (1_000_000.0, 1_500_000.0, 4, 0.5),
    (1_000_000.0, 800_000.0, 2, -0.2),
    (1_000_000.0, 1_500_000.0, 1, 0.0),  # one quarter: nothing to compare
    (None, None, 0, 0.0),
    (0.0, 500_000.0, 2, 1.0),  # from no revenue to some counts as doubling
    (0.0, 0.0, 3, 0.0),
])
def test_revenue_growth_compares_the_first_and_last_filed_quarters(first, last, quarters, growth):
    assert revenue_growth(first, last, quarters) == pytest.approx(growth)


def test_normalise_caps_values_into_zero_to_one():
    assert normalise(0.5, 0.25) == 1.0
    assert normalise(0.1, 0.25) == pytest.approx(0.4)
    assert normalise(-0.3, 0.25) == 0.0
    assert normalise(1.0, 2.0) == 0.5


def test_full_marks_score_100_and_every_contribution_is_weight_times_normalised():
    scored = score(_facts(), POLICY)
    assert scored.score == 100.0
    assert scored.decision == "continue"
    assert [i.name for i in scored.indicators] == list(POLICY.indicators)
    for indicator in scored.indicators:
        rule = POLICY.indicators[indicator.name]
        assert indicator.contribution == pytest.approx(rule.weight * indicator.normalised * 100)


def test_partial_performance_adds_up_the_weighted_normalised_indicators():
    facts = _facts(reports_on_time=6, last_quarter_revenue=1_100_000.0, new_workers=3,
                   lpj_accepted=0, active_groups=2)
    scored = score(facts, POLICY)
    by_name = {i.name: i for i in scored.indicators}
    assert by_name["reporting_compliance"].value == 0.5
    assert by_name["revenue_growth"].value == pytest.approx(0.1)
    assert by_name["revenue_growth"].normalised == pytest.approx(0.4)
    assert by_name["new_workers"].value == 1.0
    assert by_name["lpj_completion"].contribution == 0.0
    expected = 100 * (0.30 * 0.5 + 0.25 * 0.4 + 0.15 * 0.5 + 0.15 * 0 + 0.15 * 2 / 3)
    assert scored.score == pytest.approx(round(expected, 2))
    assert scored.decision == "replace"  # 42.5 < 60
    assert by_name["reporting_compliance"].basis == {"on_time": 6, "due": 12}


def test_the_threshold_itself_is_enough_to_continue():
    policy = POLICY.model_copy(update={"threshold": 30.0})
    # compliance alone at full marks is exactly 30 points
    facts = _facts(last_quarter_revenue=1_000_000.0, new_workers=0, lpj_accepted=0,
                   active_groups=0)
    scored = score(facts, policy)
    assert scored.score == 30.0
    assert scored.decision == "continue"
    assert score(facts, policy.model_copy(update={"threshold": 30.01})).decision == "replace"


def test_mostly_overdue_reports_and_nothing_else_is_replaced():
    facts = _facts(reports_due=12, reports_on_time=2, quarters_filed=1, new_workers=0,
                   lpj_accepted=0, active_groups=0, funded_groups=1, year_end_groups=1)
    scored = score(facts, POLICY)
    assert scored.score == pytest.approx(5.0)
    assert scored.decision == "replace"


def test_no_facts_score_zero_without_dividing_by_zero():
    scored = score(TksFacts(tks_id="t", province_code="11", regency_code="1101",
                            months_served=12), POLICY)
    assert scored.score == 0.0
    assert all(i.value == 0.0 for i in scored.indicators)


@pytest.mark.parametrize(("facts", "reason"), [
    (_facts(), None),
    (_facts(months_served=POLICY.minimum_months), None),
    (_facts(months_served=POLICY.minimum_months - 1), "too_few_months"),
    (_facts(left_programme=True), "left_programme"),
    (TksFacts(tks_id="unknown"), "no_contract"),
])
def test_who_is_evaluable(facts, reason):
    assert exclusion(facts, POLICY) == reason


def test_evaluate_year_scores_the_evaluable_and_lists_the_others_with_their_reason():
    outcome = evaluate_year([_facts(tks_id="b", months_served=3), _facts(tks_id="a"),
                             _facts(tks_id="c", left_programme=True)], POLICY)
    assert [s.facts.tks_id for s in outcome.evaluated] == ["a"]
    assert [(f.tks_id, r) for f, r in outcome.excluded] == [("b", "too_few_months"),
                                                           ("c", "left_programme")]


def test_histogram_buckets_include_100_in_the_last_one():
    buckets = histogram([0.0, 9.99, 10.0, 55.5, 100.0, 99.0], 10)
    assert len(buckets) == 10
    assert buckets[0] == {"min_score": 0, "max_score": 10, "count": 2}
    assert buckets[1]["count"] == 1
    assert buckets[5]["count"] == 1
    assert buckets[9] == {"min_score": 90, "max_score": 100, "count": 2}
    uneven = histogram([100.0], 30)
    assert [b["max_score"] for b in uneven] == [30, 60, 90, 100]
    assert uneven[-1]["count"] == 1
