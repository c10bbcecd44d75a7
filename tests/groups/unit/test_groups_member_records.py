"""Members as events hold them: sealed since RosterRecorded/RosterChanged version 2, plaintext in
the version 1 events recorded before, which still read (as plaintext) and still decide."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from services.groups.config import load_config
from services.groups.domain import (
    Group,
    RosterChanged,
    RosterRecorded,
    group_header,
    member_from_input,
)
from services.groups.privacy import MemberErasedError, Reader, Sealer
from shared import pii
from shared.contracts.groups import GroupRegistered
from shared.envelope import Envelope, parse_payload
from shared.errors import RuleViolationError
from shared.nik import make_nik
from tests.groups.groups_support import (
    HASH,
    RULES_2023,
    SEAL,
    TODAY,
    member_inputs,
    member_records,
)

HEADER = group_header(2023, "pemula", "3201", "poultry", "KUB Lama", load_config(), RULES_2023)


def _v1(event_type: str, payload: dict) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=event_type, schema_version=1,
                    occurred_at=datetime(2024, 3, 1, tzinfo=UTC), stream_id="group-x",
                    stream_version=2, correlation_id=uuid.uuid4(), producer="groups",
                    actor="ministry_admin:x", payload=payload)


def _plain(inputs: list[dict]) -> list[dict]:
    """Members as version 1 stored them: the NIK's digits, the name, +62 phone, ISO date."""
    people = [member_from_input(m["nik"], m["name"], m["phone"], TODAY, HASH) for m in inputs]
    return [{"nik": p.nik, "name": p.name, "phone": p.phone,
             "birth_date": p.birth_date.isoformat()} for p in people]


def test_a_version_1_roster_reads_as_plaintext_and_is_known_by_the_nik():
    inputs = member_inputs(10)
    roster = parse_payload(_v1("groups.RosterRecorded", {
        "group_id": HEADER.group_id, "name": "KUB Lama", "registered_on": "2024-03-01",
        "members": _plain(inputs)}))
    assert isinstance(roster, RosterRecorded) and roster.schema_version == 2
    first = roster.members[0]
    assert first.nik_hash is None and first.key == inputs[0]["nik"]
    opened = Reader(pii.PersonKeys({})).member(first.model_dump())
    assert opened == {"nik": inputs[0]["nik"], "name": inputs[0]["name"],
                      "phone": "+62" + inputs[0]["phone"].replace(" ", "")[1:],
                      "birth_date": first.birth_date}

    # the aggregate built from it still knows who is a member: a change keeps the nine,
    # removes one by its NIK and seals only the newcomer
    group = Group.from_history("group-x", [GroupRegistered(
        group_id=HEADER.group_id, year=2023, stage="pemula", province_code="32",
        regency_code="3201", business_type="poultry", member_count=10), roster])
    people = [member_from_input(m["nik"], m["name"], m["phone"], TODAY, HASH) for m in inputs]
    newcomer = member_records(1)[0]
    group.change_members([*people[1:], newcomer], seal=SEAL, rules=RULES_2023, today=TODAY)
    change = group.pending[0]
    assert isinstance(change, RosterChanged)
    assert change.removed == (inputs[0]["nik"],)
    assert [m.nik_hash for m in change.added] == [newcomer.nik_hash]
    assert pii.is_token(change.added[0].name)


def test_a_version_1_roster_change_reads_too():
    added = _plain(member_inputs(1))
    change = parse_payload(_v1("groups.RosterChanged", {
        "group_id": HEADER.group_id, "added": added, "removed": ["3201011508950001"],
        "changed_on": "2024-03-02"}))
    assert change.added[0].nik == added[0]["nik"] and change.removed == ("3201011508950001",)


def test_a_member_is_sealed_field_by_field_and_never_shown_in_a_repr():
    person = member_records(1)[0]
    [record] = SEAL([person])
    for field in ("nik", "name", "phone", "birth_date"):
        assert pii.is_token(getattr(record, field)), field
    assert SEAL.open(record, "birth_date") == person.birth_date.isoformat()
    assert record.nik_hash == HASH(person.nik) and record.key == record.nik_hash
    assert person.nik not in repr(person) and person.name not in repr(person)
    assert person.nik not in record.model_dump_json()


def test_an_erased_person_is_not_sealed_again():
    person = member_records(1)[0]
    erased = pii.PersonKeys({person.nik_hash: pii.PersonKey(person.nik_hash, uuid.uuid4(), None)})
    with pytest.raises(MemberErasedError) as err:
        Sealer(erased)([person])
    assert err.value.nik_hash == person.nik_hash and err.value.status == 409
    assert person.nik not in err.value.reason
    assert Reader(erased).member({"nik": "pii1:" + "A" * 60, "name": "pii1:" + "A" * 60,
                                  "phone": None, "birth_date": "pii1:" + "A" * 60,
                                  "nik_hash": person.nik_hash})["name"] is pii.ERASED


def test_the_rules_run_on_the_plaintext_before_anything_is_sealed():
    on = date(2024, 3, 15)
    sealed: list = []

    def spy(people):
        sealed.extend(people)
        return SEAL(people)

    young = member_from_input(make_nik("320101", date(2010, 1, 15), "F", 1), "Muda", None, on,
                              HASH)
    with pytest.raises(RuleViolationError) as err:
        Group.register(HEADER, [*member_records(9), young], seal=spy, external_ref=None,
                       rules=RULES_2023, registered_on=on)
    assert err.value.field == "members[9].nik" and sealed == []
    Group.register(HEADER, member_records(10), seal=spy, external_ref=None, rules=RULES_2023,
                   registered_on=on)
    assert len(sealed) == 10
