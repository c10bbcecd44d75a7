"""The consumer's one-pass decoding (`decode_wanted`) gives what `decode` gives, or steps aside
(None) so the general path decides: it never accepts what `decode` refuses."""

import json
import uuid
from datetime import UTC, datetime

import shared.contracts  # noqa: F401 - registers the published events
from shared.contracts.recruitment import Quota, RecruitmentRoundOpened
from shared.envelope import Envelope, Event, decode, decode_wanted

OPENED = RecruitmentRoundOpened(round_id="r1", year=2023, stage=1,
                                quotas=(Quota(province_code="32", places=5),))
WANTED = {OPENED.event_type}


def _raw(event: Event, **overrides) -> dict:
    return {**Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                       schema_version=event.schema_version, occurred_at=datetime.now(UTC),
                       stream_id="round-r1", stream_version=1, correlation_id=uuid.uuid4(),
                       producer="recruitment", actor="system",
                       payload=event.model_dump(mode="json")).model_dump(mode="json"),
            **overrides}


def test_a_wanted_event_decodes_in_one_pass_as_decode_does():
    raw = _raw(OPENED, trace_id="abc")
    raw["payload"]["quotas"][0]["reserved_places"] = 1  # unknown, nested
    data = json.dumps(raw).encode()
    fast = decode_wanted(data, WANTED)
    assert fast is not None
    envelope, event = fast
    slow_envelope, slow_event = decode(data)
    assert event == slow_event == OPENED
    assert isinstance(envelope, Envelope)
    assert envelope.payload == slow_envelope.payload  # the document's payload, as a dict
    assert json.loads(envelope.model_dump_json()) == json.loads(slow_envelope.model_dump_json())


def test_anything_else_steps_aside_for_the_general_path():
    good = _raw(OPENED)
    assert decode_wanted(json.dumps(good).encode(), set()) is None  # not wanted
    assert decode_wanted(json.dumps({**good, "schema_version": 2}).encode(), WANTED) is None
    strict = _raw(OPENED)
    strict["payload"]["year"] = "2023"  # decode refuses it: so does the fast path
    assert decode_wanted(json.dumps(strict).encode(), WANTED) is None
    assert decode_wanted(b"not json", WANTED) is None
    assert decode_wanted(None, WANTED) is None


def test_a_payload_field_named_like_the_envelope_does_not_mislead_it():
    # the payload comes first and names another type: the envelope's own type decides
    raw = _raw(OPENED)
    document = ('{"payload": {"event_type": "RecruitmentRoundOpened", "schema_version": 1}, '
                + json.dumps({**raw, "event_type": "GroupFunded"})[1:].replace('"payload"',
                                                                                '"ignored"'))
    assert decode_wanted(document.encode(), WANTED) is None
