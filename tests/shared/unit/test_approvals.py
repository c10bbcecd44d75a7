"""shared.approvals without a database: the rules section, the request's life and its guards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.approvals import (
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequest,
    ApprovalRequested,
    CommandRule,
    FourEyesRules,
    NotPendingError,
    SelfCheckError,
    check_payload,
)
from shared.auth import Actor, Role
from shared.envelope import Envelope, parse_payload
from shared.errors import ForbiddenError

NOW = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
RULES = FourEyesRules.model_validate({
    "commands": {
        "fund": {"makers": ["ministry_admin", "provincial_officer"],
                 "checkers": ["ministry_admin"], "threshold": 0},
        "accept_lpj": {"makers": ["provincial_officer"],
                       "checkers": ["provincial_officer", "ministry_admin"],
                       "threshold": 5_000_000},
        "close_year": {"makers": ["ministry_admin"],
                       "checkers": ["ministry_admin", "provincial_officer"]},
    },
    "expires_after_days": 7,
})

MAKER = Actor("maker@kemnaker.go.id", Role.ADMIN, alias="m1")
# the same person with a provincial token: the same pseudonym
MAKER_AS_PROVINCE = Actor("maker@kemnaker.go.id", Role.PROVINCE, province_code="94", alias="m1")
CHECKER = Actor("checker@kemnaker.go.id", Role.ADMIN, alias="c1")
PAPUA = Actor("officer@papua.go.id", Role.PROVINCE, province_code="94", alias="p1")
ACEH = Actor("officer@aceh.go.id", Role.PROVINCE, province_code="11", alias="p2")


def request(command_type: str = "fund", maker: Actor = MAKER, province: str | None = "94",
            amount: int | None = 20_000_000) -> ApprovalRequest:
    rule = RULES.rule(command_type, amount)
    assert rule is not None
    return ApprovalRequest.make(
        request_id=uuid.uuid4(), command_type=command_type, target="group-1",
        payload={"tranche": 1, "amount": amount}, province_code=province, year=2023,
        amount=amount, batch_id=None, maker=maker, rule=rule, rules=RULES, now=NOW)


def test_the_threshold_decides_whether_four_eyes_apply():
    assert RULES.rule("fund", None) is not None  # 0: always, with or without an amount
    assert RULES.rule("accept_lpj", 4_999_999) is None
    assert RULES.rule("accept_lpj", 5_000_000) is not None
    assert RULES.rule("accept_lpj", None) is None
    assert RULES.rule("register", 1) is None  # not listed: carried out at once


def test_only_admins_and_provincial_officers_make_or_check_money_commands():
    with pytest.raises(ValidationError) as info:
        CommandRule.model_validate({"makers": ["ministry_admin"], "checkers": ["auditor"]})
    assert "auditor may not make or check" in str(info.value)
    with pytest.raises(ValidationError):
        CommandRule.model_validate({"makers": ["tks"], "checkers": ["ministry_admin"]})
    with pytest.raises(ValidationError):
        CommandRule.model_validate({"makers": ["ministry_admin"], "checkers": []})
    with pytest.raises(ValidationError):
        FourEyesRules.model_validate({"expires_after_days": 0})
    with pytest.raises(ValidationError):
        FourEyesRules.model_validate({"reason_codes": ["Not A Code"]})
    assert FourEyesRules().reason_codes[0] == "wrong_amount"


def test_a_request_expires_in_utc_days_after_it_was_made():
    agg = request()
    assert agg.request.expires_at == datetime(2026, 3, 17, 23, 30, tzinfo=UTC)
    assert agg.request.checker_roles == ["ministry_admin"]
    assert (agg.request.maker, agg.request.maker_role) == ("m1", "ministry_admin")
    assert not agg.is_past_due(NOW + timedelta(days=7) - timedelta(seconds=1))
    assert agg.is_past_due(NOW + timedelta(days=7))


def test_a_maker_never_checks_their_own_request_under_any_role():
    with pytest.raises(SelfCheckError) as info:
        request().grant(MAKER, NOW)
    assert (info.value.status, info.value.field) == (403, "checker")
    agg = request(command_type="accept_lpj", maker=PAPUA)
    with pytest.raises(SelfCheckError):
        agg.reject(PAPUA, "other", None, NOW)
    agg = request(command_type="accept_lpj", maker=MAKER_AS_PROVINCE)
    with pytest.raises(SelfCheckError):
        agg.grant(MAKER, NOW)  # the maker's admin token is still the maker


def test_a_checker_holds_a_checking_role_and_for_a_province_its_province():
    with pytest.raises(ForbiddenError) as info:
        request().grant(PAPUA, NOW)  # funding: admins check
    assert "may not check fund" in info.value.reason
    lpj = request(command_type="accept_lpj", maker=MAKER_AS_PROVINCE)
    with pytest.raises(ForbiddenError):
        lpj.grant(ACEH, NOW)
    lpj.grant(PAPUA, NOW)
    assert (lpj.state, lpj.checker, lpj.checker_role) == ("granted", "p1", "provincial_officer")


def test_a_provincial_officer_makes_only_in_its_province_and_what_its_role_may():
    with pytest.raises(ForbiddenError):
        request(maker=ACEH)
    with pytest.raises(ForbiddenError):
        request(maker=PAPUA, province=None)  # a national command
    agg = request(command_type="close_year", province=None, amount=None)
    with pytest.raises(ForbiddenError) as info:
        agg.grant(PAPUA, NOW)  # a checking role, but only admins check a national one
    assert "national" in info.value.reason
    agg.grant(CHECKER, NOW)


def test_decided_requests_are_never_decided_again():
    agg = request()
    agg.grant(CHECKER, NOW)
    agg.carried_out({"funded_total": 20_000_000})
    with pytest.raises(NotPendingError) as info:
        agg.grant(Actor("other@kemnaker.go.id", Role.ADMIN, alias="o1"), NOW)
    assert info.value.details["result"] == {"funded_total": 20_000_000}
    with pytest.raises(AssertionError):
        agg.carried_out({})
    rejected = request()
    rejected.reject(CHECKER, "wrong_amount", None, NOW)
    with pytest.raises(NotPendingError):
        rejected.grant(CHECKER, NOW)
    expired = request()
    expired.expire(NOW + timedelta(days=8))
    with pytest.raises(NotPendingError) as info:
        expired.grant(CHECKER, NOW)
    assert info.value.details["state"] == "expired"


def test_replaying_the_events_rebuilds_the_request():
    agg = request()
    agg.grant(CHECKER, NOW)
    events = list(agg.pending)
    again = ApprovalRequest.from_history(agg.stream_id, events)
    assert (again.state, again.checker, again.version) == ("granted", "c1", 2)
    assert isinstance(events[0], ApprovalRequested) and isinstance(events[1], ApprovalGranted)
    # stored and read back through the envelope as every event is
    for event in [*events, ApprovalExpired(expired_at=NOW)]:
        envelope = Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                            schema_version=1, occurred_at=NOW, stream_id=agg.stream_id,
                            stream_version=1, correlation_id=uuid.uuid4(), producer="t",
                            actor="a", payload=event.model_dump(mode="json"))
        assert parse_payload(envelope) == event
        assert event.topic is None  # internal: never published


def test_personal_data_never_goes_into_a_request_payload():
    check_payload({"tranche": 2, "amount": 5, "items": [{"group_id": "g"}]})
    with pytest.raises(ValueError, match=r"payload.items\[0\].nik"):
        check_payload({"items": [{"nik": "1234"}]})
    with pytest.raises(ValueError, match="Name"):
        check_payload({"Name": "x"})
    with pytest.raises(ValueError, match="not JSON"):
        check_payload({"on": datetime.now(UTC)})
    with pytest.raises(ValueError, match="bytes"):
        check_payload({"x": "y" * 20_000})


def test_a_bad_four_eyes_section_is_refused_naming_its_field():
    from pydantic import BaseModel, Field

    from shared.errors import RuleViolationError
    from shared.rules import RuleBook

    class YearRules(BaseModel):
        four_eyes: FourEyesRules = Field(default_factory=FourEyesRules)

    book = RuleBook("t", YearRules)
    with pytest.raises(RuleViolationError) as info:
        book.validate({"four_eyes": {"commands": {"fund": {
            "makers": ["provincial_officer"], "checkers": ["auditor"]}}}})
    assert info.value.field == "rules.four_eyes.commands.fund.checkers"
    assert "auditor may not make or check" in info.value.reason
    assert book.validate({}).four_eyes.commands == {}
