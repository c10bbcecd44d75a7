import json
import uuid
from datetime import UTC, date, datetime

import pytest

import shared.contracts  # noqa: F401 - registers the published events
from shared.contracts.groups import GroupFunded
from shared.envelope import (
    ContractError,
    Envelope,
    Event,
    decode,
    encode,
    parse_payload,
    register,
    registered_events,
    upcaster,
)


def _envelope(event: Event, **overrides) -> Envelope:
    fields = dict(event_id=uuid.uuid4(), event_type=event.event_type,
                  schema_version=event.schema_version, occurred_at=datetime.now(UTC),
                  stream_id="group-1", stream_version=1, correlation_id=uuid.uuid4(),
                  producer="groups", actor="ministry_admin:alice",
                  payload=event.model_dump(mode="json"))
    return Envelope(**{**fields, **overrides})


FUNDED = GroupFunded(group_id="g1", tranche=1, amount=20_000_000, disbursed_on=date(2023, 5, 2),
                     budget_year=2023, year=2023, province_code="32", regency_code="3201",
                     lpj_due_on=date(2023, 8, 1))


def test_a_published_event_round_trips_through_bytes():
    envelope, event = decode(encode(_envelope(FUNDED)))
    assert event == FUNDED
    assert envelope.occurred_at.tzinfo is not None


def test_an_unknown_event_type_is_a_contract_error():
    raw = _envelope(FUNDED).model_dump(mode="json") | {"event_type": "GroupTeleported"}
    with pytest.raises(ContractError, match="unknown event type 'GroupTeleported'"):
        decode(json.dumps(raw))


@pytest.mark.parametrize("payload, where", [
    ({"amount": "20000000"}, "amount"),          # strict: no strings for integers
    ({"amount": 1.5}, "amount"),                 # whole rupiah only
    ({"amount": -1}, "amount"),
])
def test_a_malformed_payload_names_the_field(payload, where):
    raw = _envelope(FUNDED).model_dump(mode="json")
    raw["payload"] = {**raw["payload"], **payload}
    with pytest.raises(ContractError, match=where):
        decode(json.dumps(raw))


def test_a_naive_timestamp_is_refused():
    raw = _envelope(FUNDED).model_dump(mode="json")
    raw["occurred_at"] = "2023-05-02T10:00:00"
    with pytest.raises(ContractError, match="occurred_at"):
        decode(json.dumps(raw))


def test_garbage_is_a_contract_error_not_a_crash():
    with pytest.raises(ContractError, match="malformed envelope"):
        decode(b"\xff\x00")


def test_old_versions_are_upcast_to_the_current_one():
    @register
    class Renamed(Event):
        event_type = "test.Renamed"
        schema_version = 2
        full_amount: int

    @upcaster("test.Renamed", 1)
    def _v1_to_v2(payload):
        return {"full_amount": payload["amount"]}

    old = _envelope(FUNDED, event_type="test.Renamed", schema_version=1, payload={"amount": 5})
    assert parse_payload(old) == Renamed(full_amount=5)
    newer = _envelope(FUNDED, event_type="test.Renamed", schema_version=3, payload={})
    with pytest.raises(ContractError, match="newer"):
        parse_payload(newer)


def test_no_published_event_carries_personal_data_fields():
    personal = {"nik", "name", "full_name", "phone", "email", "birth_date", "members"}
    for (event_type, _), cls in registered_events().items():
        if cls.topic:
            assert not personal & set(cls.model_fields), event_type


def test_stored_rows_are_read_straight_at_the_current_version_and_upcast_below_it():
    from shared.eventstore import event_from_row

    @register
    class Stored(Event):
        event_type = "test.Stored"
        schema_version = 2
        total: int

    @upcaster("test.Stored", 1)
    def _v1_to_v2(payload):
        return {"total": payload["amount"]}

    def row(version: int, payload: str) -> dict:
        return {"event_type": "test.Stored", "schema_version": version, "payload": payload}

    assert event_from_row(row(2, '{"total": 7}')) == Stored(total=7)
    assert event_from_row(row(1, '{"amount": 5}')) == Stored(total=5)
    with pytest.raises(ContractError, match=r"test\.Stored"):
        event_from_row(row(2, '{"total": "7"}'))
