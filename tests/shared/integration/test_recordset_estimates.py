"""The set-based projections' JSON rows are planned at their real count (shared.projections.
recordset), on the real Postgres: a one-event batch updates its row through the table's primary
key, not a seq scan of the whole table (Postgres estimates any `jsonb_to_recordset` at 100 rows:
approval grants used to scan every approval ever made). The statements are planned exactly as
`project` binds them (each with its parameters, the custom plan of a prepared statement) and,
for the approvals, as the generic plan a prepared statement may switch to after five runs,
which it does (the count is no parameter: one-event statements are not planned every run).
Whatever the plan, the same rows are written."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import services.mentoring
from services.mentoring.domain import ReportProblemsNoted
from services.mentoring.projections import project_read_models
from shared.approvals import (
    APPROVALS_SCHEMA,
    ApprovalCarriedOut,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    project,
)
from shared.contracts.mentoring import (
    MentorAssigned,
    MentorUnassigned,
    ReportAmended,
    ReportFiled,
    ReportOverdue,
)
from shared.envelope import Envelope, Event
from shared.eventstore import migrate

pytestmark = pytest.mark.integration

ROWS = 3000  # enough for a seq scan to cost more than a few index probes
NOW = datetime(2023, 5, 2, 8, 30, tzinfo=UTC)
MENTORING_MIGRATIONS = Path(services.mentoring.__file__).parent / "migrations"


def pair(stream_id: str, event: Event, version: int = 1) -> tuple[Envelope, Event]:
    return (Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                     schema_version=event.schema_version, occurred_at=NOW, stream_id=stream_id,
                     stream_version=version, correlation_id=uuid.uuid4(), producer="test",
                     actor="test", payload=event.model_dump(mode="json")), event)


class Planning:
    """Stands for the connection `project` is given: each statement is planned (EXPLAIN) with
    the parameters it is bound to, instead of run. `generic`: also the generic plan, the one a
    prepared statement may keep after its fifth run (PREPARE, then EXPLAIN EXECUTE under
    plan_cache_mode = force_generic_plan)."""

    def __init__(self, conn: asyncpg.Connection, *, generic: bool = False):
        self.conn, self.generic = conn, generic
        self.plans: list[tuple[str, str]] = []  # (statement, plan)

    async def execute(self, sql: str, *args: Any) -> None:
        rows = await self.conn.fetch(f"EXPLAIN {sql}", *args)
        self.plans.append((sql, "\n".join(r[0] for r in rows)))
        if self.generic:
            name = f"planned_{len(self.plans)}"
            await self.conn.execute(f"PREPARE {name} AS {sql}")
            await self.conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            rows = await self.conn.fetch(
                f"EXPLAIN EXECUTE {name}({', '.join(_literal(a) for a in args)})")
            await self.conn.execute("SET LOCAL plan_cache_mode = auto")
            await self.conn.execute(f"DEALLOCATE {name}")
            self.plans.append((f"generic: {sql}", "\n".join(r[0] for r in rows)))


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, str)
    return "'" + value.replace("'", "''") + "'"


def requested(request_id: uuid.UUID, n: int = 0) -> ApprovalRequested:
    return ApprovalRequested(
        request_id=request_id, command_type="fund", target=f"pot-{n}",
        payload={"tranche": 1, "amount": 1_000_000 + n}, province_code="94" if n % 2 else None,
        year=2023, amount=1_000_000 + n, batch_id=None if n % 3 else uuid.UUID(int=7),
        maker=f"maker{n}", maker_role="provincial_officer", checker_roles=["ministry_admin"],
        requested_at=NOW, expires_at=NOW + timedelta(days=7))


@pytest.fixture
async def approvals(database_url):
    """approval_requests as a service's migration creates it, with ROWS requests, analyzed."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(APPROVALS_SCHEMA)
        await conn.execute(
            "INSERT INTO approval_requests (request_id, command_type, target, province_code, "
            "year, amount, maker, maker_role, checker_roles, payload, state, requested_at, "
            "expires_at) SELECT gen_random_uuid(), 'fund', 'pot-' || i, '94', 2023, i, 'm', "
            "'provincial_officer', '{ministry_admin}', '{}', 'pending', now(), "
            "now() + interval '7 days' FROM generate_series(1, $1) AS i", ROWS)
        await conn.execute("ANALYZE approval_requests")
        yield conn
    finally:
        await conn.close()


async def test_one_approval_event_updates_its_request_through_the_primary_key(approvals):
    request_id = uuid.UUID(str(await approvals.fetchval(
        "SELECT request_id FROM approval_requests LIMIT 1")))
    stream = f"approval-{request_id}"
    events = [requested(request_id),
              ApprovalGranted(checker="c", checker_role="ministry_admin", granted_at=NOW),
              ApprovalCarriedOut(result={"ok": True}),
              ApprovalRejected(checker="c", checker_role="ministry_admin",
                               reason_code="duplicate", rejected_at=NOW),
              ApprovalExpired(expired_at=NOW)]
    planning = Planning(approvals, generic=True)
    async with approvals.transaction():
        await project(planning, [pair(stream, e, v) for v, e in enumerate(events, 1)])
    # one statement per kind, each planned custom and generic
    assert len(planning.plans) == 2 * len(events)
    updates = [(sql, plan) for sql, plan in planning.plans if "UPDATE approval_requests" in sql]
    assert len(updates) == 2 * 4
    for sql, plan in updates:
        assert "Seq Scan on approval_requests" not in plan, f"{sql}\n{plan}"
        assert "approval_requests_pkey on approval_requests" in plan, f"{sql}\n{plan}"


async def test_a_one_event_statement_keeps_its_plan(approvals):
    """The count is planned as a literal, not a parameter: after its fifth run the prepared
    statement keeps its plan (generic) instead of planning every run again, as it would for a
    parameter's value (a one-row custom plan always looks cheaper), which costs more than the
    old plans did once the table is big enough for them to use the index."""
    ids = [r[0] for r in await approvals.fetch("SELECT request_id FROM approval_requests "
                                               "ORDER BY request_id LIMIT 8")]
    for request_id in ids:
        async with approvals.transaction():
            await project(approvals, [pair(f"approval-{request_id}",
                                           ApprovalExpired(expired_at=NOW), 2)])
    runs = await approvals.fetch(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
        "WHERE statement LIKE 'UPDATE approval_requests a SET state = ''expired''%'")
    assert len(runs) == 1 and runs[0]["generic_plans"] + runs[0]["custom_plans"] == len(ids)
    assert runs[0]["generic_plans"] >= len(ids) - 5, dict(runs[0])
    assert await approvals.fetchval("SELECT count(*) FROM approval_requests "
                                    "WHERE state = 'expired' AND decided_at = $1", NOW) == 8


async def test_a_batch_of_every_kind_writes_the_same_rows(approvals):
    """Several events of each kind in one `project` call (and again: idempotent): each
    request's row says what its events say."""
    ids = [uuid.uuid4() for _ in range(9)]
    granted, rejected, expired = ids[:3], ids[3:5], ids[5:7]  # the last two stay pending
    later = NOW + timedelta(hours=1)
    pairs = [pair(f"approval-{r}", requested(r, n)) for n, r in enumerate(ids)]
    for n, r in enumerate(granted):
        pairs.append(pair(f"approval-{r}", ApprovalGranted(
            checker=f"checker{n}", checker_role="ministry_admin", granted_at=later), 2))
        pairs.append(pair(f"approval-{r}", ApprovalCarriedOut(result={"funded": n}), 3))
    for n, r in enumerate(rejected):
        pairs.append(pair(f"approval-{r}", ApprovalRejected(
            checker=f"checker{n}", checker_role="provincial_officer", reason_code="duplicate",
            note=None if n else "it's twice", rejected_at=later), 2))
    for r in expired:
        pairs.append(pair(f"approval-{r}", ApprovalExpired(expired_at=later), 2))
    pairs.append(pair("pot-x", ApprovalExpired(expired_at=later)))  # not an approval stream

    def expected(n: int, r: uuid.UUID) -> dict[str, Any]:
        req = requested(r, n)
        row = {"request_id": r, "command_type": "fund", "target": req.target,
               "province_code": req.province_code, "year": 2023, "amount": req.amount,
               "batch_id": req.batch_id, "maker": req.maker, "maker_role": req.maker_role,
               "checker_roles": ["ministry_admin"], "payload": req.payload, "state": "pending",
               "requested_at": NOW, "expires_at": NOW + timedelta(days=7), "decided_at": None,
               "checker": None, "checker_role": None, "reason_code": None, "note": None,
               "result": None}
        if r in granted:
            i = granted.index(r)
            row.update(state="granted", decided_at=later, checker=f"checker{i}",
                       checker_role="ministry_admin", result={"funded": i})
        elif r in rejected:
            i = rejected.index(r)
            row.update(state="rejected", decided_at=later, checker=f"checker{i}",
                       checker_role="provincial_officer", reason_code="duplicate",
                       note=None if i else "it's twice")
        elif r in expired:
            row.update(state="expired", decided_at=later)
        return row

    want = sorted((expected(n, r) for n, r in enumerate(ids)), key=lambda row: row["request_id"])
    for _ in range(2):
        async with approvals.transaction():
            await project(approvals, pairs)
        rows = await approvals.fetch(
            "SELECT *, payload::text AS payload, result::text AS result "
            "FROM approval_requests WHERE request_id = ANY($1) ORDER BY request_id", ids)
        got = [{**dict(row), "checker_roles": list(row["checker_roles"]),
                "payload": _json(row["payload"]), "result": _json(row["result"])}
               for row in rows]
        assert got == want
    assert await approvals.fetchval("SELECT count(*) FROM approval_requests") == ROWS + len(ids)


def _json(text: str | None) -> Any:
    import json

    return None if text is None else json.loads(text)


async def test_one_mentoring_event_updates_its_group_through_the_primary_key(database_url):
    """Mentoring's read models with ROWS funded groups: an assignment, a report and the rest,
    one event each, find their group (and report) by key."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "mentoring", MENTORING_MIGRATIONS)
        await conn.execute(
            "INSERT INTO mentored_groups (group_id, province_code, regency_code, year, "
            "funded_on, tks_id, assigned_on) SELECT 'g' || i, '94', '9471', 2023, "
            "'2023-01-02', 't' || i, '2023-01-03' FROM generate_series(1, $1) AS i", ROWS)
        await conn.execute(
            "INSERT INTO monthly_reports (group_id, period, tks_id, province_code, regency_code, "
            "revenue, production_units, production_unit, members_active, new_workers, "
            "partnership, capital_access, market_access, lpj_help, on_time, filed_at, filed_on) "
            "SELECT 'g' || i, '2023-03', 't' || i, '94', '9471', 1, 1, 'kg', 1, 0, false, "
            "false, false, false, true, now(), '2023-04-03' FROM generate_series(1, $1) AS i", ROWS)
        await conn.execute("ANALYZE")
        figures = {"group_id": "g7", "tks_id": "t7", "revenue": 5, "production_units": 2,
                   "production_unit": "kg", "members_active": 4, "new_workers": 1,
                   "on_time": True}
        events: list[Event] = [
            MentorUnassigned(group_id="g7", tks_id="t7", reason="other",
                             unassigned_on=date(2023, 4, 1)),
            MentorAssigned(group_id="g7", tks_id="t8", province_code="94",
                           regency_code="9471", assigned_on=date(2023, 4, 1)),
            ReportFiled(**figures, period="2023-04", filed_on=date(2023, 5, 2)),
            ReportAmended(**figures, period="2023-03"),
            ReportProblemsNoted(group_id="g7", period="2023-03", problems="none"),
            ReportOverdue(group_id="g7", tks_id="t7", period="2023-02")]
        planning = Planning(conn)
        async with conn.transaction():
            await project_read_models(planning, [pair("group-g7", e) for e in events])
        assert len(planning.plans) == len(events)
        for sql, plan in planning.plans:
            assert "Seq Scan on mentored_groups" not in plan, f"{sql}\n{plan}"
            assert "Seq Scan on monthly_reports" not in plan, f"{sql}\n{plan}"
        joined = [plan for sql, plan in planning.plans if "mentored_groups" in sql]
        assert len(joined) == 4  # unassigned, assigned, filed, overdue
        for plan in joined:
            assert "mentored_groups_pkey on mentored_groups" in plan, plan
    finally:
        await conn.close()
