"""How a rebuild decodes a stored row (shared.projections): the typed event from the row's
JSON, the envelope from its columns, and no second parse of the payload. A projector that
reads the envelope's payload instead of the event is told so, not handed an empty dict."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from datetime import UTC, datetime

import pytest

from services.groups.domain import GroupApproved
from shared.envelope import current_version
from shared.projections import ReplayedPayload, _decoded, _fewer_collections, _replayed


def _row(group_id: str, version: int = 1) -> dict:
    return {"event_id": uuid.uuid4(), "event_type": GroupApproved.event_type,
            "schema_version": current_version(GroupApproved.event_type),
            "occurred_at": datetime(2023, 3, 1, tzinfo=UTC), "stream_id": f"group-{group_id}",
            "stream_version": version, "correlation_id": uuid.uuid4(), "causation_id": None,
            "actor": "ministry_admin:x", "tx_id": 1, "global_position": version,
            "payload": json.dumps({"group_id": group_id})}


def test_a_row_gives_its_typed_event_and_an_envelope_of_its_columns() -> None:
    row = _row("g1", version=3)
    envelope, event = _replayed(row)
    assert isinstance(event, GroupApproved) and event.group_id == "g1"
    assert (envelope.event_id, envelope.stream_id, envelope.stream_version) == (
        row["event_id"], "group-g1", 3)


def test_reading_a_replayed_envelope_s_payload_fails_loudly() -> None:
    envelope, _ = _replayed(_row("g1"))
    assert isinstance(envelope.payload, ReplayedPayload)
    for read in (lambda p: p["group_id"], lambda p: p.get("group_id"), list, len, dict):
        with pytest.raises(RuntimeError, match="typed event"):
            read(envelope.payload)
    with pytest.raises(TypeError):  # not an empty object on a topic or in a table
        json.dumps(envelope.payload)
    assert "typed event" in repr(envelope.payload)


def test_a_page_is_decoded_in_slices_in_order() -> None:
    rows = [_row(f"g{i}", version=i + 1) for i in range(600)]  # three slices of 250
    decoded = asyncio.run(_decoded(rows))
    assert [e.group_id for _, e in decoded] == [f"g{i}" for i in range(600)]


def test_the_collector_runs_less_often_while_replays_run_and_as_before_after() -> None:
    before = gc.get_threshold()
    first, second = _fewer_collections(), _fewer_collections()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold()[0] >= 50_000
    first.__exit__(None, None, None)  # one replay ends while another still runs
    assert gc.get_threshold()[0] >= 50_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_decoding_the_next_page_lets_the_page_written_last_go() -> None:
    spent: list = [[_replayed(_row("g0"))]]
    decoded = asyncio.run(_decoded([_row("g1")], spent))
    assert spent == [] and [e.group_id for _, e in decoded] == ["g1"]
