"""Read-model writes: the facts consumed from recruitment, groups and mentoring (set-based: one
upsert per run of a batch's events of a type, order-independent across topics), and the
projector of the service's own events.

Every consumed fact about a year takes that year's cycle lock in shared mode; closing takes it
exclusively. So a fact committed before the close is in the results, and one that comes after is
recorded in `late_events` (it still updates the facts, never the closed results), unless it is
a consequence of the close itself (`_follows_close`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from services.evaluation.domain import PolicyAdopted, TksNotEvaluated, cycle_stream
from shared.aggregate import UnitOfWork, lock_streams
from shared.consumer import AnyHandler, batched, unique_runs
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.contracts.evaluation import EvaluationClosed, EvaluationOpened, TksEvaluated
from shared.envelope import Envelope, Event, json_text


# (envelope, event, year or None, tks_id, group_id): what `_note_late` checks for lateness
Note = tuple[Envelope, Event, "int | None", "str | None", "str | None"]
Items = list[tuple[Envelope, Any]]


async def _note_late(uow: UnitOfWork, notes: list[Note]) -> None:
    """Record in `late_events` the events about a closed year (and not a consequence of its
    close), after taking the years' cycle locks in shared mode, in one order (`lock_streams`)."""
    years = sorted({year for _, _, year, _, _ in notes if year is not None})
    if not years:
        return
    await lock_streams(uow.conn, [cycle_stream(y) for y in years], shared=True)
    # a statement of its own: its snapshot must be taken after the locks were granted
    closed = {r["year"] for r in await uow.conn.fetch(
        "SELECT year FROM evaluation_cycles WHERE year = ANY($1::int[]) AND status = 'closed'",
        years)}
    if not closed:
        return
    for envelope, event, year, tks_id, group_id in notes:
        if year in closed and not await _follows_close(uow, envelope, year):
            await uow.conn.execute(
                "INSERT INTO late_events (event_id, year, topic, event_type, tks_id, group_id, "
                "occurred_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (event_id) DO NOTHING",
                envelope.event_id, year, type(event).topic or "", envelope.event_type, tks_id,
                group_id, envelope.occurred_at, json_text(envelope.payload))


async def _follows_close(uow: UnitOfWork, envelope: Envelope, year: int) -> bool:
    """Whether the event is a consequence of the year's close rather than news it missed: every
    consumer passes the correlation id on, so recruitment releasing a TKS the close replaced,
    and mentoring unassigning that TKS's groups, carry the close's. Only events a consumer wrote
    (they name their cause) qualify: a command's own event counts as late even when its client
    reused the close's correlation id."""
    if envelope.causation_id is None:
        return False
    return bool(await uow.conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND event_type = $2 "
        "AND correlation_id = $3)",
        cycle_stream(year), EvaluationClosed.event_type, envelope.correlation_id))


async def _upsert(uow: UnitOfWork, items: Items, key: Callable[[Any], Any], sql: str,
                  columns: Callable[[Envelope, Any], tuple]) -> dict[Any, Any]:
    """Run `sql` (an INSERT ... SELECT FROM unnest($1, $2, ...)) once per run of events in which
    no key repeats, with one array per column; returns {key: first column returned} when `sql`
    returns (key, value) rows."""
    returned: dict[Any, Any] = {}
    for run in unique_runs(items, lambda item: key(item[1])):
        rows = [columns(envelope, event) for envelope, event in run]
        arrays = [list(column) for column in zip(*rows, strict=True)]
        for row in await uow.conn.fetch(sql, *arrays):
            returned[row[0]] = row[1]
    return returned


# --- recruitment -------------------------------------------------------------------------------

@batched
async def on_contract(uow: UnitOfWork, items: Items) -> None:
    for _, event in items:
        if event.contract_end < event.contract_start:
            raise ValueError(f"contract of TKS {event.tks_id} ends before it starts")
    await _upsert(
        uow, items, lambda e: (e.tks_id, e.year),
        "INSERT INTO tks_contracts (tks_id, year, province_code, regency_code, contract_start, "
        "contract_end) SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], "
        "$5::date[], $6::date[]) ON CONFLICT (tks_id, year) DO UPDATE SET "
        "province_code = excluded.province_code, regency_code = excluded.regency_code, "
        "contract_start = excluded.contract_start, contract_end = excluded.contract_end",
        lambda _, e: (e.tks_id, e.year, e.province_code, e.regency_code, e.contract_start,
                      e.contract_end))
    await _note_late(uow, [(env, e, e.year, e.tks_id, None) for env, e in items])


@batched
async def on_exit(uow: UnitOfWork, items: Items) -> None:
    await uow.conn.execute(
        "INSERT INTO tks_exits (tks_id, kind, year, effective_date, reason) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::date[], $5::text[]) "
        "ON CONFLICT DO NOTHING",
        [e.tks_id for _, e in items],
        ["released" if isinstance(e, r.TksReleased) else "resigned" for _, e in items],
        [e.year for _, e in items], [e.effective_date for _, e in items],
        [e.reason if isinstance(e, r.TksReleased) else None for _, e in items])
    # recruitment acting on our own outcome is a consequence of the close, not news
    await _note_late(uow, [(env, e, e.year, e.tks_id, None) for env, e in items
                           if not (isinstance(e, r.TksReleased) and e.reason == "evaluation")])


# --- groups ------------------------------------------------------------------------------------

@batched
async def on_group_funded(uow: UnitOfWork, items: Items) -> None:
    # the first tranche names the programme year; later tranches only fill in what is missing
    await _upsert(
        uow, items, lambda e: e.group_id,
        "INSERT INTO group_facts AS f (group_id, funded_year, first_disbursed_on, tranches, "
        "province_code, regency_code) SELECT * FROM unnest($1::text[], $2::int[], $3::date[], "
        "$4::int[], $5::text[], $6::text[]) ON CONFLICT (group_id) DO UPDATE SET "
        "funded_year = CASE WHEN excluded.tranches = 1 THEN excluded.funded_year "
        "ELSE coalesce(f.funded_year, excluded.funded_year) END, "
        "first_disbursed_on = least(f.first_disbursed_on, excluded.first_disbursed_on), "
        "tranches = greatest(f.tranches, excluded.tranches), "
        "province_code = excluded.province_code, regency_code = excluded.regency_code",
        lambda _, e: (e.group_id, e.year, e.disbursed_on, e.tranche, e.province_code,
                      e.regency_code))
    await _note_late(uow, [(env, e, e.year, None, e.group_id) for env, e in items])


_LPJ_STATUS = {g.AccountabilityReportSubmitted: "submitted",
               g.AccountabilityReportAccepted: "accepted",
               g.AccountabilityReportReturned: "returned"}


@batched
async def on_lpj(uow: UnitOfWork, items: Items) -> None:
    """An LPJ submitted, accepted or returned. An accepted LPJ stays accepted; the acceptance day
    decides which mentor is credited."""
    notes: list[Note] = []
    for run in unique_runs(items, lambda item: item[1].group_id):
        years = await _upsert(
            uow, run, lambda e: e.group_id,
            "INSERT INTO group_facts AS f (group_id, lpj_status, lpj_accepted_on) "
            "SELECT g, s, CASE WHEN s = 'accepted' THEN d END "
            "FROM unnest($1::text[], $2::text[], $3::date[]) AS u(g, s, d) "
            "ON CONFLICT (group_id) DO UPDATE SET "
            "lpj_status = CASE WHEN f.lpj_status = 'accepted' THEN f.lpj_status "
            "ELSE excluded.lpj_status END, "
            "lpj_accepted_on = coalesce(f.lpj_accepted_on, excluded.lpj_accepted_on) "
            "RETURNING group_id, funded_year",
            lambda env, e: (e.group_id, _LPJ_STATUS[type(e)], env.occurred_at.date()))
        notes.extend((env, e, years.get(e.group_id), None, e.group_id) for env, e in run)
    await _note_late(uow, notes)


@batched
async def on_group_dissolved(uow: UnitOfWork, items: Items) -> None:
    notes: list[Note] = []
    for run in unique_runs(items, lambda item: item[1].group_id):
        years = await _upsert(
            uow, run, lambda e: e.group_id,
            "INSERT INTO group_facts AS f (group_id, dissolved_on) "
            "SELECT * FROM unnest($1::text[], $2::date[]) ON CONFLICT (group_id) DO UPDATE "
            "SET dissolved_on = coalesce(f.dissolved_on, excluded.dissolved_on) "
            "RETURNING group_id, funded_year",
            lambda env, e: (e.group_id, env.occurred_at.date()))
        notes.extend((env, e, years.get(e.group_id), None, e.group_id) for env, e in run)
    await _note_late(uow, notes)


# --- mentoring ---------------------------------------------------------------------------------

@batched
async def on_mentor_assigned(uow: UnitOfWork, items: Items) -> None:
    await uow.conn.execute(
        "INSERT INTO mentor_assignments (group_id, tks_id, assigned_on, province_code, "
        "regency_code) SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], "
        "$5::text[]) ON CONFLICT DO NOTHING",
        [e.group_id for _, e in items], [e.tks_id for _, e in items],
        [e.assigned_on for _, e in items], [e.province_code for _, e in items],
        [e.regency_code for _, e in items])
    await _note_late(uow, [(env, e, e.assigned_on.year, e.tks_id, e.group_id)
                           for env, e in items])


@batched
async def on_mentor_unassigned(uow: UnitOfWork, items: Items) -> None:
    # a group's events share a partition, so its assignment is already here; if it is not,
    # there is no span to end and nothing to credit
    for run in unique_runs(items, lambda item: (item[1].group_id, item[1].tks_id)):
        await uow.conn.execute(
            "WITH span AS (SELECT DISTINCT ON (u.g, u.t) a.group_id, a.tks_id, a.assigned_on, "
            "u.d FROM unnest($1::text[], $2::text[], $3::date[]) AS u(g, t, d) "
            "JOIN mentor_assignments a ON a.group_id = u.g AND a.tks_id = u.t "
            "AND a.assigned_on <= u.d AND a.unassigned_on IS NULL "
            "ORDER BY u.g, u.t, a.assigned_on DESC) "
            "UPDATE mentor_assignments a SET unassigned_on = span.d FROM span "
            "WHERE (a.group_id, a.tks_id, a.assigned_on) "
            "= (span.group_id, span.tks_id, span.assigned_on)",
            [e.group_id for _, e in run], [e.tks_id for _, e in run],
            [e.unassigned_on for _, e in run])
    await _note_late(uow, [(env, e, e.unassigned_on.year, e.tks_id, e.group_id)
                           for env, e in items])


def _year(period: str) -> int:
    return int(period[:4])


def _report_columns(_: Envelope, e: m.ReportFiled | m.ReportAmended) -> tuple:
    return (e.group_id, e.period, _year(e.period), e.tks_id, e.on_time, e.revenue,
            e.new_workers, e.members_active)


_REPORT_UPSERT = (
    "INSERT INTO report_facts (group_id, period, year, tks_id, status, on_time, revenue, "
    "new_workers, members_active) SELECT g, p, y, t, 'filed', o, r, w, a FROM unnest("
    "$1::text[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::bigint[], $7::int[], "
    "$8::int[]) AS u(g, p, y, t, o, r, w, a) ON CONFLICT (group_id, period) DO UPDATE SET ")


def _report_notes(items: Items) -> list[Note]:
    return [(env, e, _year(e.period), e.tks_id, e.group_id) for env, e in items]


@batched
async def on_report_filed(uow: UnitOfWork, items: Items) -> None:
    # a filing replaces an earlier overdue mark for the same group and month
    await _upsert(uow, items, lambda e: (e.group_id, e.period), _REPORT_UPSERT + (
        "tks_id = excluded.tks_id, status = 'filed', on_time = excluded.on_time, "
        "revenue = excluded.revenue, new_workers = excluded.new_workers, "
        "members_active = excluded.members_active"), _report_columns)
    await _note_late(uow, _report_notes(items))


@batched
async def on_report_amended(uow: UnitOfWork, items: Items) -> None:
    # an amendment corrects the figures; whether the report came on time stays as filed
    await _upsert(uow, items, lambda e: (e.group_id, e.period), _REPORT_UPSERT + (
        "status = 'filed', revenue = excluded.revenue, new_workers = excluded.new_workers, "
        "members_active = excluded.members_active"), _report_columns)
    await _note_late(uow, _report_notes(items))


@batched
async def on_report_overdue(uow: UnitOfWork, items: Items) -> None:
    await uow.conn.execute(
        "INSERT INTO report_facts (group_id, period, year, tks_id, status) "
        "SELECT g, p, y, t, 'overdue' FROM unnest($1::text[], $2::text[], $3::int[], "
        "$4::text[]) AS u(g, p, y, t) ON CONFLICT (group_id, period) DO NOTHING",
        [e.group_id for _, e in items], [e.period for _, e in items],
        [_year(e.period) for _, e in items], [e.tks_id for _, e in items])
    await _note_late(uow, _report_notes(items))


@batched
async def on_period_closed(uow: UnitOfWork, items: Items) -> None:
    await _upsert(
        uow, items, lambda e: e.period,
        "INSERT INTO periods_closed (period, year, due, filed, overdue) SELECT * FROM unnest("
        "$1::text[], $2::int[], $3::int[], $4::int[], $5::int[]) ON CONFLICT (period) DO UPDATE "
        "SET due = excluded.due, filed = excluded.filed, overdue = excluded.overdue",
        lambda _, e: (e.period, _year(e.period), e.due, e.filed, e.overdue))
    await _note_late(uow, [(env, e, _year(e.period), None, None) for env, e in items])


HANDLERS: dict[str, AnyHandler] = {
    r.TksRecruited.event_type: on_contract,
    r.TksContractRenewed.event_type: on_contract,
    r.TksReleased.event_type: on_exit,
    r.TksResigned.event_type: on_exit,
    g.GroupFunded.event_type: on_group_funded,
    g.AccountabilityReportSubmitted.event_type: on_lpj,
    g.AccountabilityReportAccepted.event_type: on_lpj,
    g.AccountabilityReportReturned.event_type: on_lpj,
    g.GroupDissolved.event_type: on_group_dissolved,
    m.MentorAssigned.event_type: on_mentor_assigned,
    m.MentorUnassigned.event_type: on_mentor_unassigned,
    m.ReportFiled.event_type: on_report_filed,
    m.ReportAmended.event_type: on_report_amended,
    m.ReportOverdue.event_type: on_report_overdue,
    m.PeriodClosed.event_type: on_period_closed,
}


# --- the service's own events ------------------------------------------------------------------

# the tables only the service's own events write (`REBUILD` in app.py adds the consumed facts)
OWN_TABLES = ("evaluation_cycles", "evaluation_results", "evaluation_exclusions")

async def project(conn: asyncpg.Connection, items: list[tuple[Envelope, Event]]) -> None:
    results = []
    for envelope, event in items:
        match event:
            case EvaluationOpened():
                await conn.execute(
                    "INSERT INTO evaluation_cycles (year, status, policy_version, opened_at, "
                    "opened_by) VALUES ($1, 'open', $2, $3, $4)",
                    event.year, event.policy_version, envelope.occurred_at, envelope.actor)
            case PolicyAdopted():
                await conn.execute("UPDATE evaluation_cycles SET policy = $2, "
                                   "policy_version = $3 WHERE year = $1",
                                   event.year, event.policy.model_dump_json(),
                                   event.policy.version)
            case TksEvaluated():
                results.append((event.year, event.tks_id, event.province_code,
                                event.regency_code, event.score, event.decision,
                                json_text([i.model_dump() for i in event.indicators]),
                                event.policy_version))
            case TksNotEvaluated():
                await conn.executemany(
                    "INSERT INTO evaluation_exclusions (year, tks_id, reason, months_served, "
                    "province_code, regency_code) VALUES ($1, $2, $3, $4, $5, $6)",
                    [(event.year, x.tks_id, x.reason, x.months_served, x.province_code,
                      x.regency_code) for x in event.exclusions])
            case EvaluationClosed():
                await conn.execute(
                    "UPDATE evaluation_cycles SET status = 'closed', closed_at = $2, "
                    "closed_by = $3, evaluated = $4, continued = $5, replaced = $6 "
                    "WHERE year = $1",
                    event.year, envelope.occurred_at, envelope.actor, event.evaluated,
                    event.continued, event.replaced)
    if results:
        await conn.executemany(
            "INSERT INTO evaluation_results (year, tks_id, province_code, regency_code, score, "
            "decision, indicators, policy_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            results)
