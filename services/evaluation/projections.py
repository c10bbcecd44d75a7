"""Read-model writes: the facts consumed from recruitment, groups and mentoring (one upsert per
event, order-independent across topics), and the projector of the service's own events.

Every consumed fact about a year takes that year's cycle lock in shared mode; closing takes it
exclusively. So a fact committed before the close is in the results, and one that comes after is
recorded in `late_events` (it still updates the facts, never the closed results), unless it is
a consequence of the close itself (`_follows_close`)."""

from __future__ import annotations

import json

import asyncpg

from services.evaluation.domain import PolicyAdopted, TksNotEvaluated, cycle_stream
from shared.aggregate import UnitOfWork, lock_stream
from shared.consumer import Handler
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.contracts.evaluation import EvaluationClosed, EvaluationOpened, TksEvaluated
from shared.envelope import Envelope, Event


async def _note_if_late(uow: UnitOfWork, envelope: Envelope, event: Event, year: int | None,
                        *, tks_id: str | None = None, group_id: str | None = None) -> None:
    if year is None:
        return
    await lock_stream(uow.conn, cycle_stream(year), shared=True)
    # a statement of its own: its snapshot must be taken after the lock was granted
    closed = await uow.conn.fetchval(
        "SELECT status = 'closed' FROM evaluation_cycles WHERE year = $1", year)
    if closed and not await _follows_close(uow, envelope, year):
        await uow.conn.execute(
            "INSERT INTO late_events (event_id, year, topic, event_type, tks_id, group_id, "
            "occurred_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (event_id) DO NOTHING",
            envelope.event_id, year, type(event).topic or "", envelope.event_type, tks_id,
            group_id, envelope.occurred_at, json.dumps(envelope.payload))


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


# --- recruitment -------------------------------------------------------------------------------

async def on_contract(uow: UnitOfWork, envelope: Envelope,
                      event: r.TksRecruited | r.TksContractRenewed) -> None:
    if event.contract_end < event.contract_start:
        raise ValueError(f"contract of TKS {event.tks_id} ends before it starts")
    await uow.conn.execute(
        "INSERT INTO tks_contracts (tks_id, year, province_code, regency_code, contract_start, "
        "contract_end) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tks_id, year) DO UPDATE SET "
        "province_code = $3, regency_code = $4, contract_start = $5, contract_end = $6",
        event.tks_id, event.year, event.province_code, event.regency_code,
        event.contract_start, event.contract_end)
    await _note_if_late(uow, envelope, event, event.year, tks_id=event.tks_id)


async def on_exit(uow: UnitOfWork, envelope: Envelope,
                  event: r.TksReleased | r.TksResigned) -> None:
    released = isinstance(event, r.TksReleased)
    await uow.conn.execute(
        "INSERT INTO tks_exits (tks_id, kind, year, effective_date, reason) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event.tks_id, "released" if released else "resigned", event.year, event.effective_date,
        event.reason if released else None)
    if released and event.reason == "evaluation":
        return  # recruitment acting on our own outcome: a consequence of the close, not news
    await _note_if_late(uow, envelope, event, event.year, tks_id=event.tks_id)


# --- groups ------------------------------------------------------------------------------------

async def on_group_funded(uow: UnitOfWork, envelope: Envelope, event: g.GroupFunded) -> None:
    # the first tranche names the programme year; later tranches only fill in what is missing
    await uow.conn.execute(
        "INSERT INTO group_facts AS f (group_id, funded_year, first_disbursed_on, tranches, "
        "province_code, regency_code) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (group_id) DO UPDATE SET "
        "funded_year = CASE WHEN $4 = 1 THEN $2 ELSE coalesce(f.funded_year, $2) END, "
        "first_disbursed_on = least(f.first_disbursed_on, $3), "
        "tranches = greatest(f.tranches, $4), province_code = $5, regency_code = $6",
        event.group_id, event.year, event.disbursed_on, event.tranche, event.province_code,
        event.regency_code)
    await _note_if_late(uow, envelope, event, event.year, group_id=event.group_id)


async def _lpj(uow: UnitOfWork, envelope: Envelope, event: Event, group_id: str,
               status: str) -> None:
    # an accepted LPJ stays accepted; the acceptance day decides which mentor is credited
    year = await uow.conn.fetchval(
        "INSERT INTO group_facts AS f (group_id, lpj_status, lpj_accepted_on) "
        "VALUES ($1, $2, CASE WHEN $2 = 'accepted' THEN $3::date END) "
        "ON CONFLICT (group_id) DO UPDATE SET "
        "lpj_status = CASE WHEN f.lpj_status = 'accepted' THEN f.lpj_status ELSE $2 END, "
        "lpj_accepted_on = coalesce(f.lpj_accepted_on, EXCLUDED.lpj_accepted_on) "
        "RETURNING funded_year",
        group_id, status, envelope.occurred_at.date())
    await _note_if_late(uow, envelope, event, year, group_id=group_id)


async def on_lpj_submitted(uow: UnitOfWork, envelope: Envelope,
                           event: g.AccountabilityReportSubmitted) -> None:
    await _lpj(uow, envelope, event, event.group_id, "submitted")


async def on_lpj_accepted(uow: UnitOfWork, envelope: Envelope,
                          event: g.AccountabilityReportAccepted) -> None:
    await _lpj(uow, envelope, event, event.group_id, "accepted")


async def on_lpj_returned(uow: UnitOfWork, envelope: Envelope,
                          event: g.AccountabilityReportReturned) -> None:
    await _lpj(uow, envelope, event, event.group_id, "returned")


async def on_group_dissolved(uow: UnitOfWork, envelope: Envelope,
                             event: g.GroupDissolved) -> None:
    year = await uow.conn.fetchval(
        "INSERT INTO group_facts AS f (group_id, dissolved_on) VALUES ($1, $2) "
        "ON CONFLICT (group_id) DO UPDATE SET dissolved_on = coalesce(f.dissolved_on, $2) "
        "RETURNING funded_year", event.group_id, envelope.occurred_at.date())
    await _note_if_late(uow, envelope, event, year, group_id=event.group_id)


# --- mentoring ---------------------------------------------------------------------------------

async def on_mentor_assigned(uow: UnitOfWork, envelope: Envelope,
                             event: m.MentorAssigned) -> None:
    await uow.conn.execute(
        "INSERT INTO mentor_assignments (group_id, tks_id, assigned_on, province_code, "
        "regency_code) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event.group_id, event.tks_id, event.assigned_on, event.province_code,
        event.regency_code)
    await _note_if_late(uow, envelope, event, event.assigned_on.year, tks_id=event.tks_id,
                        group_id=event.group_id)


async def on_mentor_unassigned(uow: UnitOfWork, envelope: Envelope,
                               event: m.MentorUnassigned) -> None:
    # a group's events share a partition, so its assignment is already here; if it is not,
    # there is no span to end and nothing to credit
    await uow.conn.execute(
        "UPDATE mentor_assignments SET unassigned_on = $3 WHERE (group_id, tks_id, assigned_on) "
        "= (SELECT group_id, tks_id, assigned_on FROM mentor_assignments WHERE group_id = $1 "
        "AND tks_id = $2 AND assigned_on <= $3 AND unassigned_on IS NULL "
        "ORDER BY assigned_on DESC LIMIT 1)",
        event.group_id, event.tks_id, event.unassigned_on)
    await _note_if_late(uow, envelope, event, event.unassigned_on.year, tks_id=event.tks_id,
                        group_id=event.group_id)


def _year(period: str) -> int:
    return int(period[:4])


async def on_report_filed(uow: UnitOfWork, envelope: Envelope, event: m.ReportFiled) -> None:
    # a filing replaces an earlier overdue mark for the same group and month
    await uow.conn.execute(
        "INSERT INTO report_facts (group_id, period, year, tks_id, status, on_time, revenue, "
        "new_workers, members_active) VALUES ($1, $2, $3, $4, 'filed', $5, $6, $7, $8) "
        "ON CONFLICT (group_id, period) DO UPDATE SET tks_id = $4, status = 'filed', "
        "on_time = $5, revenue = $6, new_workers = $7, members_active = $8",
        event.group_id, event.period, _year(event.period), event.tks_id, event.on_time,
        event.revenue, event.new_workers, event.members_active)
    await _note_if_late(uow, envelope, event, _year(event.period), tks_id=event.tks_id,
                        group_id=event.group_id)


async def on_report_amended(uow: UnitOfWork, envelope: Envelope, event: m.ReportAmended) -> None:
    # an amendment corrects the figures; whether the report came on time stays as filed
    await uow.conn.execute(
        "INSERT INTO report_facts (group_id, period, year, tks_id, status, on_time, revenue, "
        "new_workers, members_active) VALUES ($1, $2, $3, $4, 'filed', $5, $6, $7, $8) "
        "ON CONFLICT (group_id, period) DO UPDATE SET status = 'filed', revenue = $6, "
        "new_workers = $7, members_active = $8",
        event.group_id, event.period, _year(event.period), event.tks_id, event.on_time,
        event.revenue, event.new_workers, event.members_active)
    await _note_if_late(uow, envelope, event, _year(event.period), tks_id=event.tks_id,
                        group_id=event.group_id)


async def on_report_overdue(uow: UnitOfWork, envelope: Envelope, event: m.ReportOverdue) -> None:
    await uow.conn.execute(
        "INSERT INTO report_facts (group_id, period, year, tks_id, status) "
        "VALUES ($1, $2, $3, $4, 'overdue') ON CONFLICT (group_id, period) DO NOTHING",
        event.group_id, event.period, _year(event.period), event.tks_id)
    await _note_if_late(uow, envelope, event, _year(event.period), tks_id=event.tks_id,
                        group_id=event.group_id)


async def on_period_closed(uow: UnitOfWork, envelope: Envelope, event: m.PeriodClosed) -> None:
    await uow.conn.execute(
        "INSERT INTO periods_closed (period, year, due, filed, overdue) VALUES ($1, $2, $3, $4, "
        "$5) ON CONFLICT (period) DO UPDATE SET due = $3, filed = $4, overdue = $5",
        event.period, _year(event.period), event.due, event.filed, event.overdue)
    await _note_if_late(uow, envelope, event, _year(event.period))


HANDLERS: dict[str, Handler] = {
    r.TksRecruited.event_type: on_contract,
    r.TksContractRenewed.event_type: on_contract,
    r.TksReleased.event_type: on_exit,
    r.TksResigned.event_type: on_exit,
    g.GroupFunded.event_type: on_group_funded,
    g.AccountabilityReportSubmitted.event_type: on_lpj_submitted,
    g.AccountabilityReportAccepted.event_type: on_lpj_accepted,
    g.AccountabilityReportReturned.event_type: on_lpj_returned,
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
                await conn.execute("UPDATE evaluation_cycles SET policy = $2 WHERE year = $1",
                                   event.year, event.policy.model_dump_json())
            case TksEvaluated():
                results.append((event.year, event.tks_id, event.province_code,
                                event.regency_code, event.score, event.decision,
                                json.dumps([i.model_dump() for i in event.indicators]),
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
