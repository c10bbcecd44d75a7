"""Read queries over the read models: the facts commands decide on, and what the API shows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

import asyncpg

from services.mentoring.domain import DueGroup, FundedGroup, Mentor, period_bounds
from shared.paging import PageParams

_GROUP_FACTS = "group_id, province_code, regency_code, funded_on, dissolved_on, year"
_MENTOR_FACTS = ("tks_id, province_code, regency_code, active, caseload, left_on, "
                 "contract_start, contract_end")


async def funded_groups(conn: asyncpg.Connection, group_ids: Iterable[str]) -> dict[str, FundedGroup]:
    rows = await conn.fetch(f"SELECT {_GROUP_FACTS} FROM mentored_groups "
                            "WHERE group_id = ANY($1::text[])", list(group_ids))
    return {r["group_id"]: FundedGroup(**r) for r in rows}


async def mentors(conn: asyncpg.Connection, tks_ids: Iterable[str], *,
                  lock: bool = False) -> dict[str, Mentor]:
    """With `lock`, the rows stay locked to the transaction (in id order): caseloads cannot move
    under a decision about them."""
    rows = await conn.fetch(f"SELECT {_MENTOR_FACTS} FROM mentors WHERE tks_id = ANY($1::text[]) "
                            f"ORDER BY tks_id{' FOR UPDATE' if lock else ''}",
                            sorted(set(tks_ids)))
    return {r["tks_id"]: Mentor(**r) for r in rows}


async def closed_periods(conn: asyncpg.Connection, periods: Iterable[str]) -> set[str]:
    rows = await conn.fetch("SELECT period FROM period_closures WHERE period = ANY($1::text[])",
                            list(periods))
    return {r["period"] for r in rows}


async def due_groups(conn: asyncpg.Connection, period: str) -> list[DueGroup]:
    """Groups funded by the period's last day, not dissolved before it and mentored during it;
    the TKS answerable is the one whose stint in the period began last."""
    first, last = period_bounds(period)
    # `filed` is an EXISTS on the reports' key, not a join: the month's reports are read once
    # into a hashed set (or each group looked up by key) whatever the statistics say. A close
    # follows thousands of filings the statistics have not seen yet; a join planned on them
    # (the month's reports estimated at one row) rescanned those reports for every group:
    # 0.9-6 s a close in the demo year, holding off the next month's filings meanwhile
    rows = await conn.fetch("""
        SELECT g.group_id, a.tks_id,
               EXISTS (SELECT FROM monthly_reports r
                       WHERE r.group_id = g.group_id AND r.period = $3) AS filed
        FROM mentored_groups g
        JOIN LATERAL (
            SELECT tks_id FROM mentor_assignments a
            WHERE a.group_id = g.group_id AND a.assigned_on <= $2
              AND (a.unassigned_on IS NULL OR a.unassigned_on > $1)
            ORDER BY a.assigned_on DESC, a.stream_version DESC LIMIT 1) AS a ON true
        WHERE g.funded_on <= $2 AND (g.dissolved_on IS NULL OR g.dissolved_on >= $1)
        ORDER BY g.group_id""", first, last, period)
    return [DueGroup(**r) for r in rows]


def _region_filter(province_code: str | None, regency_code: str | None,
                   first_param: int, alias: str = "") -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in (("province_code", province_code), ("regency_code", regency_code)):
        if value is not None:
            args.append(value)
            clauses.append(f"{alias}{column} = ${first_param + len(args) - 1}")
    return " AND ".join(clauses) or "true", args


async def unassigned_facts(conn: asyncpg.Connection, province_code: str | None,
                           regency_code: str | None) -> list[FundedGroup]:
    where, args = _region_filter(province_code, regency_code, 1)
    rows = await conn.fetch(f"SELECT {_GROUP_FACTS} FROM mentored_groups "
                            f"WHERE tks_id IS NULL AND dissolved_on IS NULL AND {where}", *args)
    return [FundedGroup(**r) for r in rows]


async def active_mentors(conn: asyncpg.Connection, province_codes: Iterable[str]) -> list[Mentor]:
    rows = await conn.fetch(f"SELECT {_MENTOR_FACTS} FROM mentors "
                            "WHERE active AND province_code = ANY($1::text[])",
                            list(province_codes))
    return [Mentor(**r) for r in rows]


async def unassigned_groups(conn: asyncpg.Connection, province_code: str | None,
                            regency_code: str | None, page: PageParams) -> dict:
    where, args = _region_filter(province_code, regency_code, 1)
    window = page.window(paged := list(args))
    rows = await conn.fetch(
        "SELECT group_id, province_code, regency_code, year, funded_on, last_tks_id, "
        "unassigned_on, unassigned_reason, count(*) OVER () AS total FROM mentored_groups "
        f"WHERE tks_id IS NULL AND dissolved_on IS NULL AND {where} "
        f"ORDER BY unassigned_on NULLS LAST, group_id {window}", *paged)
    total = rows[0]["total"] if rows else await conn.fetchval(
        f"SELECT count(*) FROM mentored_groups WHERE tks_id IS NULL AND dissolved_on IS NULL "
        f"AND {where}", *args)
    return page.out([_plain(r, exclude={"total"}) for r in rows], total)


async def tks_list(conn: asyncpg.Connection, province_code: str | None,
                   regency_code: str | None, page: PageParams) -> dict:
    """The TKS mentoring knows, by id, each with its caseload and the report counts of its page
    (`tks_view`'s `reports.filed`, `on_time` and `overdue`) in one call, instead of one
    `GET /tks/{id}` a TKS."""
    where, args = _region_filter(province_code, regency_code, 1, "m.")
    window = page.window(paged := list(args))
    rows = await conn.fetch(
        "SELECT m.tks_id, m.province_code, m.regency_code, m.contract_year, m.active, "
        "m.left_on, m.caseload, r.filed, r.on_time, o.overdue, count(*) OVER () AS total "
        "FROM mentors m "
        "CROSS JOIN LATERAL (SELECT count(*)::int AS filed, count(*) FILTER (WHERE on_time)::int "
        "AS on_time FROM monthly_reports WHERE tks_id = m.tks_id) r "
        "CROSS JOIN LATERAL (SELECT count(*)::int AS overdue FROM overdue_reports "
        "WHERE tks_id = m.tks_id) o "
        f"WHERE {where} ORDER BY m.tks_id {window}", *paged)
    total = rows[0]["total"] if rows else await conn.fetchval(
        f"SELECT count(*) FROM mentors m WHERE {where}", *args)
    return page.out([_plain(r, exclude={"total"}) for r in rows], total)


async def tks_view(conn: asyncpg.Connection, tks_id: str, today: date) -> dict | None:
    mentor = await conn.fetchrow("SELECT * FROM mentors WHERE tks_id = $1", tks_id)
    if mentor is None:
        return None
    groups = await conn.fetch(
        "SELECT group_id, regency_code, funded_on, assigned_on FROM mentored_groups "
        "WHERE tks_id = $1 ORDER BY group_id", tks_id)
    counts = await conn.fetchrow(
        "SELECT count(*) AS filed, count(*) FILTER (WHERE on_time) AS on_time "
        "FROM monthly_reports WHERE tks_id = $1", tks_id)
    overdue = await conn.fetch("SELECT group_id, period FROM overdue_reports WHERE tks_id = $1 "
                               "ORDER BY period, group_id", tks_id)
    # months that have ended, in which this TKS mentored the group, not filed and not closed
    pending = await conn.fetch("""
        SELECT DISTINCT a.group_id, to_char(m, 'YYYY-MM') AS period
        FROM mentor_assignments a JOIN mentored_groups g USING (group_id)
        CROSS JOIN LATERAL generate_series(
            date_trunc('month', greatest(a.assigned_on, g.funded_on)),
            least(date_trunc('month', coalesce(a.unassigned_on - 1, $2)),
                  date_trunc('month', coalesce(g.dissolved_on, $2)),
                  date_trunc('month', $2::date) - interval '1 month'),
            interval '1 month') AS m
        WHERE a.tks_id = $1
          AND NOT EXISTS (SELECT 1 FROM monthly_reports r
                          WHERE r.group_id = a.group_id AND r.period = to_char(m, 'YYYY-MM'))
          AND NOT EXISTS (SELECT 1 FROM period_closures c WHERE c.period = to_char(m, 'YYYY-MM'))
        ORDER BY 2, 1""", tks_id, today)
    return {
        **_plain(mentor),
        "groups": [_plain(g) for g in groups],
        "reports": {"filed": counts["filed"], "on_time": counts["on_time"],
                    "overdue": len(overdue), "pending": len(pending),
                    "due": counts["filed"] + len(overdue) + len(pending)},
        "overdue": [_plain(o) for o in overdue],
        "pending": [_plain(p) for p in pending],
    }


async def group_view(conn: asyncpg.Connection, group_id: str) -> dict | None:
    group = await conn.fetchrow("SELECT * FROM mentored_groups WHERE group_id = $1", group_id)
    if group is None:
        return None
    stints = await conn.fetch(
        "SELECT tks_id, assigned_on, unassigned_on, reason FROM mentor_assignments "
        "WHERE group_id = $1 ORDER BY stream_version", group_id)
    reports = await conn.fetch(
        "SELECT period, tks_id, revenue, production_units, production_unit, members_active, "
        "new_workers, partnership, capital_access, market_access, lpj_help, problems, on_time, "
        "filed_on, filed_at AS recorded_at, amended_at, amendments FROM monthly_reports "
        "WHERE group_id = $1 "
        "ORDER BY period", group_id)
    overdue = await conn.fetch("SELECT period, tks_id FROM overdue_reports WHERE group_id = $1 "
                               "ORDER BY period", group_id)
    return {**_plain(group), "assignments": [_plain(s) for s in stints],
            "reports": [_report(r) for r in reports], "overdue": [_plain(o) for o in overdue]}


def _report(row: asyncpg.Record) -> dict:
    out = _plain(row, exclude={"partnership", "capital_access", "market_access"})
    out["support"] = [s for s in ("partnership", "capital_access", "market_access") if row[s]]
    return out


async def region_summary(conn: asyncpg.Connection, *, province_code: str | None = None,
                         regency_code: str | None = None, year: int | None = None,
                         period: str | None = None) -> dict:
    where, args = _region_filter(province_code, regency_code, 1, "t.")
    if year is not None:
        args.append(f"{year:04d}-%")
        where += f" AND t.period LIKE ${len(args)}"
    if period is not None:
        args.append(period)
        where += f" AND t.period = ${len(args)}"
    rows = await conn.fetch(f"""
        SELECT t.period, c.period IS NOT NULL AS closed, sum(t.filed)::int AS filed,
            sum(t.on_time)::int AS on_time, sum(t.overdue)::int AS overdue,
            sum(t.revenue)::bigint AS revenue, sum(t.members_active)::bigint AS members_active,
            sum(t.new_workers)::bigint AS new_workers, sum(t.lpj_help)::int AS lpj_help,
            sum(t.partnership)::int AS partnership, sum(t.capital_access)::int AS capital_access,
            sum(t.market_access)::int AS market_access
        FROM report_totals t LEFT JOIN period_closures c USING (period)
        WHERE {where} GROUP BY t.period, c.period ORDER BY t.period""", *args)
    gwhere, gargs = _region_filter(province_code, regency_code, 1)
    groups = await conn.fetchrow(
        "SELECT count(*) AS funded, count(tks_id) AS mentored FROM mentored_groups "
        f"WHERE dissolved_on IS NULL AND {gwhere}", *gargs)
    tks = await conn.fetchval(f"SELECT count(*) FROM mentors WHERE active AND {gwhere}", *gargs)
    periods = [{**_plain(r), **_rates([r])} for r in rows]
    sums = {k: sum(r[k] for r in rows) for k in ("filed", "on_time", "overdue", "revenue",
                                                 "new_workers", "lpj_help")}
    return {"province_code": province_code, "regency_code": regency_code, "year": year,
            "groups_funded": groups["funded"], "groups_mentored": groups["mentored"],
            "tks_active": tks, **sums, **_rates([r for r in rows if r["closed"]]),
            "periods": periods}


def _rates(rows: list) -> dict:
    """Over closed months, where due = filed + overdue: compliance counts on-time reports."""
    closed = [r for r in rows if r["closed"]]
    due = sum(r["filed"] + r["overdue"] for r in closed)
    if not due:
        return {"compliance_rate": None, "filing_rate": None}
    return {"compliance_rate": round(sum(r["on_time"] for r in closed) / due, 4),
            "filing_rate": round(sum(r["filed"] for r in closed) / due, 4)}


async def period_view(conn: asyncpg.Connection, period: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM period_closures WHERE period = $1", period)
    return _plain(row) if row else None


async def overdue_list(conn: asyncpg.Connection, period: str, province_code: str | None,
                       regency_code: str | None) -> list[dict]:
    where, args = _region_filter(province_code, regency_code, 2)
    rows = await conn.fetch(
        "SELECT group_id, tks_id, province_code, regency_code FROM overdue_reports "
        f"WHERE period = $1 AND {where} ORDER BY group_id", period, *args)
    return [_plain(r) for r in rows]


def _plain(row: asyncpg.Record, exclude: set[str] = frozenset()) -> dict:
    return {k: v for k, v in dict(row).items() if k not in exclude}


_STATS_GROUPS = """
SELECT province_code, count(*) AS groups_funded, count(tks_id) AS groups_mentored,
       count(*) FILTER (WHERE tks_id IS NULL) AS groups_unassigned
FROM mentored_groups
WHERE year = $1 AND dissolved_on IS NULL AND ($2::text IS NULL OR province_code = $2)
GROUP BY province_code"""
_STATS_ACTIVE = """
SELECT province_code, count(*) AS tks_active FROM mentors
WHERE active AND contract_start <= $3 AND contract_end >= $1
  AND ($2::text IS NULL OR province_code = $2)
GROUP BY province_code"""
_STATS_MENTORING = """
SELECT g.province_code, count(DISTINCT a.tks_id) AS tks_mentoring
FROM mentor_assignments a JOIN mentored_groups g USING (group_id)
WHERE a.assigned_on <= $3 AND (a.unassigned_on IS NULL OR a.unassigned_on > $1)
  AND ($2::text IS NULL OR g.province_code = $2)
GROUP BY g.province_code"""
_STATS_REPORTS = """
SELECT t.province_code, sum(t.filed)::int AS filed, sum(t.on_time)::int AS on_time,
       sum(t.filed - t.on_time)::int AS late, sum(t.overdue)::int AS overdue,
       coalesce(sum(t.filed + t.overdue) FILTER (WHERE c.period IS NOT NULL), 0)::int
           AS due_closed,
       coalesce(sum(t.filed) FILTER (WHERE c.period IS NOT NULL), 0)::int AS filed_closed,
       coalesce(sum(t.on_time) FILTER (WHERE c.period IS NOT NULL), 0)::int AS on_time_closed
FROM report_totals t LEFT JOIN period_closures c USING (period)
WHERE t.period LIKE $1 AND ($2::text IS NULL OR t.province_code = $2)
GROUP BY t.province_code"""
_COUNTS = ("groups_funded", "groups_mentored", "groups_unassigned", "tks_active",
           "tks_mentoring", "filed", "on_time", "late", "overdue", "due_closed", "filed_closed",
           "on_time_closed")


def _with_rates(counts: dict[str, int]) -> dict:
    """Over closed months, where due = filed + overdue: compliance counts on-time reports."""
    due = counts["due_closed"]
    return {k: v for k, v in counts.items() if k not in ("filed_closed", "on_time_closed")} | {
        "compliance_rate": round(counts["on_time_closed"] / due, 4) if due else None,
        "filing_rate": round(counts["filed_closed"] / due, 4) if due else None}


async def stats(conn: asyncpg.Connection, year: int, period: str | None,
                province_code: str | None) -> dict:
    """National totals and one row per province: the groups of the programme year, the TKS
    serving and mentoring in the year (or month), the reports on the year's (or the month's)
    months. A province with nothing to count is left out."""
    first, last = (period_bounds(period) if period else (date(year, 1, 1), date(year, 12, 31)))
    by: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTS, 0))
    for query, args in ((_STATS_GROUPS, (year, province_code)),
                        (_STATS_ACTIVE, (first, province_code, last)),
                        (_STATS_MENTORING, (first, province_code, last)),
                        (_STATS_REPORTS, (period or f"{year:04d}-%", province_code))):
        for row in await conn.fetch(query, *args):
            by[row["province_code"]].update({k: v for k, v in dict(row).items()
                                             if k != "province_code"})
    national = {k: sum(r[k] for r in by.values()) for k in _COUNTS}
    return {"year": year, "period": period, "province_code": province_code,
            "national": _with_rates(national),
            "provinces": [{"province_code": p, **_with_rates(by[p])} for p in sorted(by)]}
