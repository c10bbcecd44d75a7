"""The published groups contract: reason codes instead of free text, old versions upcast."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

import shared.contracts  # noqa: F401 - registers the published events
from shared.contracts.groups import (
    DISSOLUTION_REASONS,
    LPJ_RETURN_REASONS,
    REJECTION_REASONS,
    AccountabilityReportReturned,
    GroupDissolved,
    GroupRejected,
)
from shared.envelope import ContractError, decode

# what an officer once typed, and what v1 events carried onto the topic
FREE_TEXT = "Anggota Siti Aminah NIK 3201014506990001 HP 081234567890 sudah bekerja"


def _raw(event_type: str, version: int, payload: dict) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": version,
        "occurred_at": datetime.now(UTC).isoformat(), "stream_id": "group-g1",
        "stream_version": 3, "correlation_id": str(uuid.uuid4()), "producer": "groups",
        "actor": "ministry_admin:alice", "payload": payload}).encode()


def test_a_v1_group_rejected_decodes_to_v2_with_reason_other_and_no_text():
    envelope, event = decode(_raw("GroupRejected", 1, {"group_id": "g1", "reason": FREE_TEXT}))
    assert envelope.schema_version == 1
    assert event == GroupRejected(group_id="g1", reason_code="other")
    assert type(event).schema_version == 2
    dumped = event.model_dump_json()
    assert "reason\"" not in dumped and "Siti" not in dumped and "3201014506990001" not in dumped


@pytest.mark.parametrize("event_type, payload, expected", [
    ("AccountabilityReportReturned", {"group_id": "g1", "report_id": "r1", "reason": FREE_TEXT},
     AccountabilityReportReturned(group_id="g1", report_id="r1", reason_code="other")),
    ("GroupDissolved", {"group_id": "g1", "reason": FREE_TEXT},
     GroupDissolved(group_id="g1", reason_code="other")),
])
def test_the_other_v1_reason_events_upcast_dropping_the_text(event_type, payload, expected):
    _, event = decode(_raw(event_type, 1, payload))
    assert event == expected
    assert "Siti" not in event.model_dump_json()


def test_v2_events_carry_a_code_from_the_contract_and_no_free_text():
    for cls, codes in ((GroupRejected, REJECTION_REASONS), (GroupDissolved, DISSOLUTION_REASONS),
                       (AccountabilityReportReturned, LPJ_RETURN_REASONS)):
        assert cls.schema_version == 2
        assert "reason" not in cls.model_fields and "reason_code" in cls.model_fields
        assert "other" in codes
    with pytest.raises(ValidationError):
        GroupRejected(group_id="g1", reason_code="members_employed", reason=FREE_TEXT)
    with pytest.raises(ValidationError):
        GroupRejected(group_id="g1", reason_code=FREE_TEXT)
    with pytest.raises(ContractError, match="reason_code"):
        decode(_raw("GroupRejected", 2, {"group_id": "g1", "reason_code": "gossip"}))
    # consumers ignore unknown fields (COMPATIBILITY.md): text smuggled into a v2 payload is
    # dropped on decode, never handed on
    _, event = decode(_raw("GroupDissolved", 2, {"group_id": "g1", "reason_code": "other",
                                                 "reason": FREE_TEXT}))
    assert event == GroupDissolved(group_id="g1", reason_code="other")
    assert "Siti" not in event.model_dump_json()


def test_v2_events_round_trip():
    _, event = decode(_raw("GroupRejected", 2, {"group_id": "g1",
                                                "reason_code": "members_employed"}))
    assert event == GroupRejected(group_id="g1", reason_code="members_employed")
