"""A database from before reason codes: migration 002 and a rebuild both drop the free text."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

import services.groups
from services.groups.projections import READ_MODELS, project_read_models
from shared.contracts.groups import (
    AccountabilityReportSubmitted,
    GroupApproved,
    GroupFunded,
    GroupRegistered,
)
from shared.eventstore import migrate
from shared.projections import rebuild

pytestmark = pytest.mark.integration

MIGRATIONS = Path(services.groups.__file__).parent / "migrations"
NOTE = "Anggota Siti Aminah NIK 3201014506990001 HP 081234567890 sudah bekerja"
AT = datetime(2023, 9, 1, tzinfo=UTC)


def _registered(group_id: str) -> GroupRegistered:
    return GroupRegistered(group_id=group_id, year=2023, stage="pemula", province_code="32",
                           regency_code="3201", business_type="tailoring", member_count=10)


async def _store(conn: asyncpg.Connection, stream: str, events: list[tuple[str, int, dict]]):
    for version, (event_type, schema_version, payload) in enumerate(events, start=1):
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
            "schema_version, occurred_at, correlation_id, actor, payload) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, 'ministry_admin:test', $8)",
            uuid.uuid4(), stream, version, event_type, schema_version, AT, uuid.uuid4(),
            json.dumps(payload))


def _current(event) -> tuple[str, int, dict]:
    return event.event_type, event.schema_version, event.model_dump(mode="json")


async def _reasons(conn: asyncpg.Connection) -> tuple[list, list]:
    groups = await conn.fetch("SELECT group_id, status, status_reason_code, status_note "
                              "FROM group_registry ORDER BY group_id")
    reports = await conn.fetch("SELECT report_id, status, reason_code, note FROM lpj_reports "
                               "ORDER BY report_id")
    return [tuple(r) for r in groups], [tuple(r) for r in reports]


async def test_free_text_reasons_of_before_become_other_and_disappear(database_url, tmp_path):
    old = tmp_path / "migrations"
    old.mkdir()
    shutil.copy(MIGRATIONS / "001_read_models.sql", old)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", old)
        # v1 events, as stored before, and the read model the old projector made of them
        await _store(conn, "group-g1", [_current(_registered("g1")),
                                        ("GroupRejected", 1, {"group_id": "g1", "reason": NOTE})])
        await _store(conn, "group-g2", [
            _current(_registered("g2")), _current(GroupApproved(group_id="g2")),
            _current(GroupFunded(group_id="g2", tranche=1, amount=20_000_000,
                                 disbursed_on=date(2023, 6, 1), budget_year=2023, year=2023,
                                 province_code="32", regency_code="3201",
                                 lpj_due_on=date(2023, 8, 30))),
            _current(AccountabilityReportSubmitted(
                group_id="g2", report_id="r1", tools=1, materials=1, other=0,
                remaining_balance=19_999_998, evidence_count=1)),
            ("AccountabilityReportReturned", 1,
             {"group_id": "g2", "report_id": "r1", "reason": NOTE}),
            ("GroupDissolved", 1, {"group_id": "g2", "reason": NOTE})])
        for group_id, status in (("g1", "rejected"), ("g2", "dissolved")):
            await conn.execute(
                "INSERT INTO group_registry (group_id, year, stage, province_code, "
                "regency_code, business_type, status, status_reason, member_count, "
                "registered_at, updated_at) VALUES ($1, 2023, 'pemula', '32', '3201', "
                "'tailoring', $2, $3, 10, $4, $4)", group_id, status, NOTE, AT)
        await conn.execute(
            "INSERT INTO lpj_reports (report_id, group_id, tools, materials, other, "
            "remaining_balance, evidence_count, funds_covered, status, reason, submitted_at) "
            "VALUES ('r1', 'g2', 1, 1, 0, 19999998, 1, 20000000, 'returned', $1, $2)", NOTE, AT)

        assert (await migrate(conn, "groups", MIGRATIONS))[0] == "groups:002_reason_codes"
        migrated = await _reasons(conn)
        assert migrated == ([("g1", "rejected", "other", None), ("g2", "dissolved", "other", None)],
                            [("r1", "returned", "other", None)])
        for table in ("group_registry", "lpj_reports"):
            rows = await conn.fetch(f"SELECT * FROM {table}")
            assert not any("Siti" in str(v) for r in rows for v in r.values())

        # the event store still holds the v1 payloads: replaying them upcasts, dropping the text
        await rebuild(conn, project_read_models, READ_MODELS)
        assert await _reasons(conn) == migrated
    finally:
        await conn.close()
