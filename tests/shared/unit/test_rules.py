"""shared.rules without a database: which year's rules decide, validation errors, shipped files."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from shared.envelope import Envelope, parse_payload
from shared.errors import RuleViolationError
from shared.rules import (
    Adopted,
    InForce,
    NoRulesError,
    ProgrammeRulesAdopted,
    RuleBook,
    _shipped_files,
)


class Members(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_count: int = Field(ge=1)


class YearRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: Members
    amount: int = Field(gt=0)


def entry(year: int, version: int, count: int) -> Adopted[YearRules]:
    return Adopted(year, version, YearRules(members=Members(max_count=count), amount=1),
                   datetime(2026, 1, 1, tzinfo=UTC), "system", None)


LATEST = {2021: entry(2021, 1, 16), 2023: entry(2023, 3, 10)}


@pytest.mark.parametrize(("year", "defined", "count"), [
    (2021, 2021, 16), (2022, 2021, 16), (2023, 2023, 10), (2030, 2023, 10),
    (2018, 2021, 16),  # before the first year defined: the earliest
])
def test_the_greatest_year_defined_at_or_before_decides(year, defined, count):
    picked = RuleBook._pick(LATEST, year)
    assert (picked.year, picked.rules.members.max_count) == (defined, count)


def test_in_force_is_a_triple():
    rules, year_defined, version = InForce(LATEST[2023].rules, 2023, 3)
    assert (year_defined, version, rules.amount) == (2023, 3, 1)


def test_no_rules_at_all_is_a_clear_error():
    with pytest.raises(NoRulesError) as info:
        RuleBook._pick({}, 2023)
    assert info.value.status == 503


def test_invalid_rules_name_the_field_path():
    book = RuleBook("t", YearRules)
    with pytest.raises(RuleViolationError) as info:
        book.validate({"members": {"max_count": 0}, "amount": 5})
    assert info.value.status == 422
    assert info.value.field == "rules.members.max_count"
    with pytest.raises(RuleViolationError) as info:
        book.validate({"members": {"max_count": 3}, "amount": 5, "typo": 1})
    assert info.value.field == "rules.typo"
    with pytest.raises(RuleViolationError) as info:
        book.validate([1, 2])
    assert info.value.field == "rules"
    assert book.validate({"members": {"max_count": 3}, "amount": 5}).amount == 5
    for sloppy in ("5", 5.0, True):  # strict, as every number people send
        with pytest.raises(RuleViolationError) as info:
            book.validate({"members": {"max_count": 3}, "amount": sloppy})
        assert info.value.field == "rules.amount"


def test_shipped_files_by_year(tmp_path: Path):
    (tmp_path / "2021.toml").write_text("amount = 1\n[members]\nmax_count = 16\n")
    (tmp_path / "2023.toml").write_text("amount = 2\n[members]\nmax_count = 0\n")
    (tmp_path / "README.toml").write_text("")
    assert sorted(_shipped_files(tmp_path)) == [2021, 2023]
    book = RuleBook("t", YearRules, tmp_path)
    assert book._from_file(tmp_path / "2021.toml").members.max_count == 16
    with pytest.raises(ValueError, match=r"rules\.members\.max_count"):
        book._from_file(tmp_path / "2023.toml")


def test_the_event_round_trips_through_the_registry():
    event = ProgrammeRulesAdopted(year=2021, version=2, rules={"a": {"b": [1, 2]}}, note="x")
    env = Envelope(event_id=uuid.UUID(int=1),
                   event_type=event.event_type, schema_version=1,
                   occurred_at=datetime(2026, 1, 1, tzinfo=UTC), stream_id="rules-2021",
                   stream_version=2, correlation_id=uuid.UUID(int=2),
                   producer="groups", actor="system", payload=event.model_dump(mode="json"))
    assert parse_payload(env) == event
    assert ProgrammeRulesAdopted.topic is None  # internal: never published
