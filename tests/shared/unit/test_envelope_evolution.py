"""Strict where we write, tolerant where we read: what a producer one version ahead sends is
understood, what our own code constructs is still checked."""

import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import ValidationError

import shared.contracts  # noqa: F401 - registers the published events
from shared.consumer import Held, PartitionHolds
from shared.contracts.recruitment import Quota, RecruitmentRoundOpened
from shared.envelope import (
    ContractError,
    Envelope,
    Event,
    NewerVersionError,
    decode,
    decode_envelope,
    encode,
    register,
)

OPENED = RecruitmentRoundOpened(round_id="r1", year=2023, stage=1,
                                quotas=(Quota(province_code="32", places=5),))


def _raw(event: Event, **overrides) -> dict:
    return {**Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                       schema_version=event.schema_version, occurred_at=datetime.now(UTC),
                       stream_id="round-r1", stream_version=1, correlation_id=uuid.uuid4(),
                       producer="recruitment", actor="system",
                       payload=event.model_dump(mode="json")).model_dump(mode="json"),
            **overrides}


def test_fields_added_by_a_newer_producer_are_ignored_at_every_depth():
    raw = _raw(OPENED, trace_id="abc")  # a field of a later envelope
    raw["payload"]["quotas"][0]["reserved_places"] = 1  # nested, in a known version
    raw["payload"]["announced_on"] = "2023-01-02"
    envelope, event = decode(json.dumps(raw))
    assert event == OPENED
    assert not hasattr(envelope, "trace_id")
    # and the unknown fields do not come back out: what we store round-trips
    assert decode(encode(envelope.model_copy(update={"payload": event.model_dump(mode="json")}))
                  )[1] == OPENED


def test_what_our_code_constructs_is_still_checked():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RecruitmentRoundOpened(round_id="r1", year=2023, stage=1, quotas=(), nik="1" * 16)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Quota(province_code="32", places=5, regency="x")
    with pytest.raises(ValidationError):
        Envelope(**{**_raw(OPENED), "trace_id": "abc"})


def test_a_known_field_is_still_validated_strictly():
    raw = _raw(OPENED)
    raw["payload"]["year"] = "2023"
    with pytest.raises(ContractError, match="year"):
        decode(json.dumps(raw))


def test_the_envelope_decodes_without_its_payload_being_parsed():
    raw = _raw(OPENED, payload={"round_id": 5})
    envelope = decode_envelope(json.dumps(raw))
    assert envelope.event_type == "RecruitmentRoundOpened" and envelope.payload == {"round_id": 5}


def test_a_newer_version_is_its_own_error_not_a_bad_event():
    raw = _raw(OPENED, schema_version=2)
    with pytest.raises(NewerVersionError, match="version 2 is newer than 1"):
        decode(json.dumps(raw))
    assert issubclass(NewerVersionError, ContractError)


class _FakeConsumer:
    def __init__(self):
        self.calls: list[tuple] = []
        self._paused: set[TopicPartition] = set()

    def seek(self, tp, offset):
        self.calls.append(("seek", tp, offset))

    def pause(self, tp):
        self._paused.add(tp)

    def resume(self, tp):
        self._paused.discard(tp)
        self.calls.append(("resume", tp))

    def paused(self):
        return set(self._paused)


def test_held_partitions_are_reported_and_resume_once_the_version_is_known():
    name = f"KernelTestHeld{uuid.uuid4().hex[:8]}"

    @register
    class V1(Event):
        event_type = name

    consumer, holds = _FakeConsumer(), PartitionHolds("svc-held")
    gone = Held("t", 1, 3, uuid.uuid4(), name, 2, 1)
    held = Held("t", 0, 7, uuid.uuid4(), name, 2, 1)
    holds.hold(consumer, held)
    holds.hold(consumer, gone)
    tp = TopicPartition("t", 0)
    assert consumer.calls[0] == ("seek", tp, 7) and tp in consumer.paused()
    assert holds.report()["status"] == "degraded"
    gauge = lambda: REGISTRY.get_sample_value(  # noqa: E731
        "tkm_consumer_paused_partitions", {"service": "svc-held", "topic": "t"})
    assert gauge() == 2

    consumer._paused.discard(TopicPartition("t", 1))  # a rebalance took it away
    assert holds.recheck() == [] and list(holds.held) == [("t", 0)]
    assert gauge() == 1

    @register
    class V2(Event):
        event_type = name
        schema_version = 2

    assert holds.recheck() == [held]
    assert consumer.calls[-2:] == [("seek", tp, 7), ("resume", tp)]
    assert holds.report() == {"status": "ok", "paused_partitions": []} and gauge() == 0
