import json
import uuid

import pytest

from services.evaluation.config import load_policy
from services.evaluation.domain import (
    EvaluationCycle,
    PolicyAdopted,
    TksEvaluations,
    TksNotEvaluated,
    cycle_stream,
    tks_stream,
)
from services.evaluation.scoring import TksFacts, evaluate_year
from shared.contracts.evaluation import EvaluationClosed, EvaluationOpened, TksEvaluated
from shared.envelope import Envelope, parse_payload, utcnow
from shared.errors import ConflictError, RuleViolationError

POLICY = load_policy()
YEAR = 2042


def _good(tks_id: str) -> TksFacts:
    return TksFacts(tks_id=tks_id, province_code="51", regency_code="5171", months_served=12,
                    reports_due=12, reports_on_time=12, quarters_filed=4,
                    first_quarter_revenue=100.0, last_quarter_revenue=150.0, new_workers=4,
                    groups_reported=2, funded_groups=2, lpj_accepted=2, year_end_groups=2,
                    active_groups=2)


def _poor(tks_id: str) -> TksFacts:
    return TksFacts(tks_id=tks_id, province_code="51", regency_code="5103", months_served=12,
                    reports_due=12, reports_on_time=1)


def _opened() -> EvaluationCycle:
    return EvaluationCycle.from_history(cycle_stream(YEAR), [
        EvaluationOpened(year=YEAR, policy_version=POLICY.version),
        PolicyAdopted(year=YEAR, policy=POLICY)])


def test_opening_records_the_contract_event_and_freezes_the_policy():
    cycle = EvaluationCycle(cycle_stream(YEAR))
    cycle.open(YEAR, POLICY)
    assert cycle.pending == [EvaluationOpened(year=YEAR, policy_version=POLICY.version),
                             PolicyAdopted(year=YEAR, policy=POLICY)]
    assert (cycle.status, cycle.policy) == ("open", POLICY)


def test_an_open_cycle_cannot_be_opened_again():
    with pytest.raises(ConflictError, match="already open"):
        _opened().open(YEAR, POLICY)


def test_a_cycle_must_be_opened_before_it_is_closed():
    with pytest.raises(RuleViolationError, match="opened before"):
        EvaluationCycle(cycle_stream(YEAR)).close(evaluate_year([], POLICY))


def test_closing_decides_each_evaluable_tks_and_counts_the_decisions():
    cycle = _opened()
    outcome = evaluate_year([_good("g"), _poor("p"),
                             TksFacts(tks_id="s", province_code="51", regency_code="5171",
                                      months_served=2)], POLICY)
    evaluated = cycle.close(outcome)
    assert [(e.tks_id, e.decision) for e in evaluated] == [("g", "continue"), ("p", "replace")]
    assert all(e.year == YEAR and e.policy_version == POLICY.version for e in evaluated)
    good = evaluated[0]
    assert good.score == 100.0
    assert sum(i.contribution for i in good.indicators) == pytest.approx(good.score)
    excluded, closed = cycle.pending
    assert isinstance(excluded, TksNotEvaluated)
    assert [(x.tks_id, x.reason, x.months_served) for x in excluded.exclusions] == [
        ("s", "too_few_months", 2)]
    assert closed == EvaluationClosed(year=YEAR, evaluated=2, continued=1, replaced=1,
                                      policy_version=POLICY.version)
    assert cycle.status == "closed"


def test_a_closed_cycle_cannot_be_closed_or_opened_again():
    cycle = _opened()
    cycle.close(evaluate_year([_good("g")], POLICY))
    rebuilt = EvaluationCycle.from_history(cycle.stream_id, cycle.pending)
    with pytest.raises(ConflictError, match="already closed"):
        rebuilt.close(evaluate_year([_good("g")], POLICY))
    with pytest.raises(ConflictError, match="already closed"):
        rebuilt.open(YEAR, POLICY)


def test_outcomes_carry_no_personal_data_and_go_on_the_tks_stream():
    cycle = _opened()
    [event] = cycle.close(evaluate_year([_good("g-1")], POLICY))
    assert set(TksEvaluated.model_fields) == {"year", "tks_id", "province_code", "regency_code",
                                              "score", "decision", "indicators",
                                              "policy_version"}
    stream = TksEvaluations.at_version(tks_stream("g-1"), 3)
    stream.add(event)
    assert (stream.stream_id, stream.version, stream.pending) == ("tks-g-1", 3, [event])


def test_the_adopted_policy_survives_the_round_trip_through_the_event_store():
    event = PolicyAdopted(year=YEAR, policy=POLICY)
    envelope = Envelope(event_id=uuid.uuid4(), event_type=event.event_type, schema_version=1,
                        occurred_at=utcnow(), stream_id=cycle_stream(YEAR), stream_version=2,
                        correlation_id=uuid.uuid4(), producer="t", actor="t",
                        payload=json.loads(event.model_dump_json()))
    assert parse_payload(envelope) == event
