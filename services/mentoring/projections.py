"""Read-model writes. `project` is the inline projector of the service's own events (run inside
the command's transaction, set-based so a batch of thousands costs a handful of statements); the
`record_*` functions project the events consumed from recruitment and groups."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg

from services.mentoring.domain import ReportProblemsNoted
from shared.aggregate import UnitOfWork
from shared.consumer import batched, unique_runs
from shared.contracts.groups import GroupDissolved, GroupFunded
from shared.contracts.mentoring import (
    MentorAssigned,
    MentorUnassigned,
    PeriodClosed,
    ReportAmended,
    ReportFiled,
    ReportOverdue,
)
from shared.contracts.recruitment import TksContractRenewed, TksRecruited
from shared.envelope import Envelope, Event, json_text
from shared.localtime import ZONES
from shared.projections import RebuildPlan, recordset

Rows = list[dict]


async def _assigned(conn: asyncpg.Connection, rows: Rows) -> None:
    await conn.execute(f"""
        WITH r AS {recordset("group_id text, tks_id text, assigned_on date, v int", len(rows))},
        stint AS (INSERT INTO mentor_assignments (group_id, stream_version, tks_id, assigned_on)
                  SELECT group_id, v, tks_id, assigned_on FROM r)
        UPDATE mentored_groups g SET tks_id = r.tks_id, assigned_on = r.assigned_on
        FROM r WHERE g.group_id = r.group_id""", json_text(rows))


async def _unassigned(conn: asyncpg.Connection, rows: Rows) -> None:
    await conn.execute(f"""
        WITH r AS {recordset("group_id text, tks_id text, unassigned_on date, reason text",
                             len(rows))},
        stint AS (UPDATE mentor_assignments a SET unassigned_on = r.unassigned_on,
                         reason = r.reason
                  FROM r WHERE a.group_id = r.group_id AND a.unassigned_on IS NULL)
        UPDATE mentored_groups g SET tks_id = NULL, assigned_on = NULL,
               last_tks_id = r.tks_id, unassigned_on = r.unassigned_on,
               unassigned_reason = r.reason
        FROM r WHERE g.group_id = r.group_id""", json_text(rows))


_REPORT_COLUMNS = ("group_id text, period text, tks_id text, revenue bigint, "
                   "production_units bigint, production_unit text, members_active int, "
                   "new_workers int, partnership bool, capital_access bool, market_access bool, "
                   "lpj_help bool, on_time bool, at timestamptz")


# each province's IANA zone (shared.localtime's rule), a parameter: inlined, it would push the
# statement past what pg_stat_activity shows of it
_ZONES = json_text({code: zone.key for code, zone in sorted(ZONES.items())})


# filed_on: the day as sent; a report filed before the event carried it was filed on the day
# it was recorded, in the group's time zone. Whitespace squeezed: pg_stat_activity shows the
# first 1024 bytes of a statement, and a lock wait on report_totals must show in them.
# `{rows}`: the reports' recordset (shared.projections), planned at their number.
_FILED = " ".join("""
        WITH r AS {rows},
        report AS (
            INSERT INTO monthly_reports (group_id, period, tks_id, province_code, regency_code,
                revenue, production_units, production_unit, members_active, new_workers,
                partnership, capital_access, market_access, lpj_help, on_time, filed_at,
                filed_on)
            SELECT r.group_id, r.period, r.tks_id, g.province_code, g.regency_code, r.revenue,
                r.production_units, r.production_unit, r.members_active, r.new_workers,
                r.partnership, r.capital_access, r.market_access, r.lpj_help, r.on_time, r.at,
                coalesce(r.filed_on, (r.at AT TIME ZONE ($2::jsonb ->> g.province_code))::date)
            FROM r JOIN mentored_groups g USING (group_id))
        INSERT INTO report_totals AS t (regency_code, period, province_code, filed, on_time,
            revenue, members_active, new_workers, lpj_help, partnership, capital_access,
            market_access)
        SELECT g.regency_code, r.period, g.province_code, count(*),
            count(*) FILTER (WHERE r.on_time), sum(r.revenue), sum(r.members_active),
            sum(r.new_workers), count(*) FILTER (WHERE r.lpj_help),
            count(*) FILTER (WHERE r.partnership), count(*) FILTER (WHERE r.capital_access),
            count(*) FILTER (WHERE r.market_access)
        FROM r JOIN mentored_groups g USING (group_id)
        GROUP BY 1, 2, 3 ORDER BY 1, 2
        ON CONFLICT (regency_code, period) DO UPDATE SET
            filed = t.filed + excluded.filed, on_time = t.on_time + excluded.on_time,
            revenue = t.revenue + excluded.revenue,
            members_active = t.members_active + excluded.members_active,
            new_workers = t.new_workers + excluded.new_workers,
            lpj_help = t.lpj_help + excluded.lpj_help,
            partnership = t.partnership + excluded.partnership,
            capital_access = t.capital_access + excluded.capital_access,
            market_access = t.market_access + excluded.market_access""".split())


async def _filed(conn: asyncpg.Connection, rows: Rows) -> None:
    sql = _FILED.format(rows=recordset(_REPORT_COLUMNS + ", filed_on date", len(rows)))
    await conn.execute(sql, json_text(rows), _ZONES)


async def _amended(conn: asyncpg.Connection, rows: Rows) -> None:
    # every sub-statement sees the rows as they were before this one, so `old` is the old report
    await conn.execute(f"""
        WITH r AS {recordset(_REPORT_COLUMNS, len(rows))},
        old AS (SELECT m.* FROM monthly_reports m JOIN r USING (group_id, period)),
        d AS (SELECT old.regency_code, old.period,
                  sum(r.revenue - old.revenue) AS revenue,
                  sum(r.members_active - old.members_active) AS members_active,
                  sum(r.new_workers - old.new_workers) AS new_workers,
                  sum(r.lpj_help::int - old.lpj_help::int) AS lpj_help,
                  sum(r.partnership::int - old.partnership::int) AS partnership,
                  sum(r.capital_access::int - old.capital_access::int) AS capital_access,
                  sum(r.market_access::int - old.market_access::int) AS market_access
              FROM r JOIN old USING (group_id, period) GROUP BY 1, 2),
        totals AS (
            UPDATE report_totals t SET revenue = t.revenue + d.revenue,
                members_active = t.members_active + d.members_active,
                new_workers = t.new_workers + d.new_workers, lpj_help = t.lpj_help + d.lpj_help,
                partnership = t.partnership + d.partnership,
                capital_access = t.capital_access + d.capital_access,
                market_access = t.market_access + d.market_access
            FROM d WHERE t.regency_code = d.regency_code AND t.period = d.period)
        UPDATE monthly_reports m SET tks_id = r.tks_id, revenue = r.revenue,
            production_units = r.production_units, production_unit = r.production_unit,
            members_active = r.members_active, new_workers = r.new_workers,
            partnership = r.partnership, capital_access = r.capital_access,
            market_access = r.market_access, lpj_help = r.lpj_help, amended_at = r.at,
            amendments = m.amendments + 1
        FROM r WHERE m.group_id = r.group_id AND m.period = r.period""", json_text(rows))


async def _noted(conn: asyncpg.Connection, rows: Rows) -> None:
    await conn.execute(f"""
        UPDATE monthly_reports m SET problems = r.problems
        FROM {recordset("group_id text, period text, problems text", len(rows))} AS r
        WHERE m.group_id = r.group_id AND m.period = r.period""", json_text(rows))


async def _overdue(conn: asyncpg.Connection, rows: Rows) -> None:
    await conn.execute(f"""
        WITH r AS {recordset("group_id text, period text, tks_id text, at timestamptz",
                             len(rows))},
        flagged AS (
            INSERT INTO overdue_reports (group_id, period, tks_id, province_code, regency_code,
                flagged_at)
            SELECT r.group_id, r.period, r.tks_id, g.province_code, g.regency_code, r.at
            FROM r JOIN mentored_groups g USING (group_id))
        INSERT INTO report_totals AS t (regency_code, period, province_code, overdue)
        SELECT g.regency_code, r.period, g.province_code, count(*)
        FROM r JOIN mentored_groups g USING (group_id)
        GROUP BY 1, 2, 3 ORDER BY 1, 2
        ON CONFLICT (regency_code, period) DO UPDATE SET overdue = t.overdue + excluded.overdue
        """, json_text(rows))


async def _closed(conn: asyncpg.Connection, rows: Rows) -> None:
    await conn.execute(f"""
        INSERT INTO period_closures (period, due, filed, overdue, closed_at)
        SELECT period, due, filed, overdue, at
        FROM {recordset("period text, due int, filed int, overdue int, at timestamptz",
                        len(rows))} AS r
        """, json_text(rows))


def _report_row(envelope: Envelope, event: ReportFiled | ReportAmended) -> dict:
    row = event.model_dump(mode="json", exclude={"support"})
    row.update({s: s in event.support for s in ("partnership", "capital_access",
                                                 "market_access")})
    row["at"] = envelope.occurred_at.isoformat()
    return row


def _row(envelope: Envelope, event: Event) -> dict:
    if isinstance(event, ReportFiled | ReportAmended):
        return _report_row(envelope, event)
    row = event.model_dump(mode="json")
    row["at"] = envelope.occurred_at.isoformat()
    row["v"] = envelope.stream_version
    return row


# The order the writers run in. One save never records these types in another order
# (a reassignment ends the old stint before it starts the new one; a report comes before its
# problems note), so grouping a batch by type keeps every stream's order.
_WRITERS: tuple[tuple[type[Event], Callable[[asyncpg.Connection, Rows], Awaitable[None]]], ...] = (
    (MentorUnassigned, _unassigned),
    (MentorAssigned, _assigned),
    (ReportFiled, _filed),
    (ReportAmended, _amended),
    (ReportProblemsNoted, _noted),
    (ReportOverdue, _overdue),
    (PeriodClosed, _closed),
)


async def project(conn: asyncpg.Connection, saved: list[tuple[Envelope, Event]]) -> None:
    """The inline projector: the read models, then the caseload rule."""
    await project_read_models(conn, saved)
    await keep_caseloads(conn, saved)


async def project_read_models(conn: asyncpg.Connection,
                              saved: list[tuple[Envelope, Event]]) -> None:
    """The read models alone: what a rebuild replays."""
    rows: dict[type[Event], Rows] = defaultdict(list)
    for envelope, event in saved:
        rows[type(event)].append(_row(envelope, event))
    for event_type, write in _WRITERS:
        if rows[event_type]:
            await write(conn, rows[event_type])


async def keep_caseloads(conn: asyncpg.Connection, saved: list[tuple[Envelope, Event]]) -> None:
    """`mentors` is a service table, not a read model: its caseload decides assignments (the
    cap, under the rows' locks), so it is kept here in the command's transaction and never
    rebuilt; its TKS rows come from recruitment's events. Stints ended are counted off before
    new ones are counted on, as a reassignment records them."""
    for event_type, sign in ((MentorUnassigned, -1), (MentorAssigned, 1)):
        counts = Counter(e.tks_id for _, e in saved if isinstance(e, event_type))
        if counts:
            await conn.execute(
                "UPDATE mentors m SET caseload = m.caseload + c.n "
                "FROM unnest($1::text[], $2::int[]) AS c(tks_id, n) WHERE m.tks_id = c.tks_id",
                list(counts), [sign * n for n in counts.values()])


# a contract that overlaps or follows on from the one on file extends it; one after a gap
# replaces it
_CONTRACT_FOLLOWS = ("excluded.contract_start <= mentors.contract_end + 1 AND "
                     "excluded.contract_end >= mentors.contract_start - 1")


async def record_tks_many(conn: asyncpg.Connection,
                          events: list[TksRecruited | TksContractRenewed]) -> None:
    """Record the TKS of these contracts, active, in one statement per run in which no TKS
    repeats (the last contract of a TKS wins, as one by one)."""
    for run in unique_runs(events, lambda e: e.tks_id):
        await conn.execute(
            "INSERT INTO mentors (tks_id, province_code, regency_code, contract_year, active, "
            "contract_start, contract_end) "
            "SELECT t, p, r, y, true, s, e FROM unnest($1::text[], $2::text[], $3::text[], "
            "$4::int[], $5::date[], $6::date[]) AS u(t, p, r, y, s, e) "
            "ON CONFLICT (tks_id) DO UPDATE SET "
            "province_code = excluded.province_code, regency_code = excluded.regency_code, "
            "contract_year = excluded.contract_year, active = true, left_on = NULL, "
            f"contract_start = CASE WHEN {_CONTRACT_FOLLOWS} "
            "THEN least(mentors.contract_start, excluded.contract_start) "
            "ELSE excluded.contract_start END, "
            f"contract_end = CASE WHEN {_CONTRACT_FOLLOWS} "
            "THEN greatest(mentors.contract_end, excluded.contract_end) "
            "ELSE excluded.contract_end END",
            [e.tks_id for e in run], [e.province_code for e in run],
            [e.regency_code for e in run], [e.year for e in run],
            [e.contract_start for e in run], [e.contract_end for e in run])


async def record_tks_left(conn: asyncpg.Connection, tks_id: str, left_on: date) -> bool:
    return bool(await conn.fetchval(
        "UPDATE mentors SET active = false, left_on = $2 WHERE tks_id = $1 RETURNING 1",
        tks_id, left_on))


async def record_funding(conn: asyncpg.Connection, event: GroupFunded) -> None:
    # a later tranche keeps the first disbursement as the funding date
    await conn.execute(
        "INSERT INTO mentored_groups (group_id, province_code, regency_code, year, funded_on) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id) DO UPDATE SET "
        "funded_on = LEAST(mentored_groups.funded_on, excluded.funded_on)",
        event.group_id, event.province_code, event.regency_code, event.year, event.disbursed_on)


async def record_funding_many(conn: asyncpg.Connection, events: list[GroupFunded]) -> None:
    """`record_funding` for many events in one statement per run in which no group repeats."""
    for run in unique_runs(events, lambda e: e.group_id):
        await conn.execute(
            "INSERT INTO mentored_groups (group_id, province_code, regency_code, year, funded_on) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::date[]) "
            "ON CONFLICT (group_id) DO UPDATE SET "
            "funded_on = LEAST(mentored_groups.funded_on, excluded.funded_on)",
            [e.group_id for e in run], [e.province_code for e in run],
            [e.regency_code for e in run], [e.year for e in run],
            [e.disbursed_on for e in run])


async def record_dissolution(conn: asyncpg.Connection, group_id: str, on: date) -> bool:
    return bool(await conn.fetchval(
        "UPDATE mentored_groups SET dissolved_on = coalesce(dissolved_on, $2) "
        "WHERE group_id = $1 RETURNING 1", group_id, on))


# ---- rebuild ----------------------------------------------------------------------------------
# The projection side of the consumer handlers (their policies are not replayed: the events
# they saved are in the event store). TKS rows are not among them: `mentors` is not rebuilt.

@batched
async def _funding(uow: UnitOfWork, items: list[tuple[Envelope, GroupFunded]]) -> None:
    await record_funding_many(uow.conn, [e for _, e in items])


async def _dissolution(uow: UnitOfWork, envelope: Envelope, event: GroupDissolved) -> None:
    await record_dissolution(uow.conn, event.group_id, envelope.occurred_at.date())


# A rebuild replays the consumed events before the own ones (shared.projections), which gives
# the live answer whatever the live interleaving was:
# - a command touching a group or a TKS needs its row (found, else refused), so the consumed
#   event creating the row always came first live too;
# - after that, consumed and own events write different columns: GroupFunded only lowers
#   funded_on and GroupDissolved only sets dissolved_on once, while own events set the mentor
#   columns and the report tables, whose regency/province are copied from the row's first
#   GroupFunded and never change after;
# - own events replay in store order, which keeps every stream's order and every cause
#   before its consequence; consumed events in their partitions' order (one key, one partition).
REBUILD_TABLES = ("mentored_groups", "mentor_assignments", "monthly_reports", "overdue_reports",
                  "period_closures", "report_totals")
REBUILD = RebuildPlan(REBUILD_TABLES, project_read_models,
                      consumed={GroupFunded.event_type: _funding,
                                GroupDissolved.event_type: _dissolution})
