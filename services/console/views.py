"""Read queries over the console's projection, for the pages. Every query takes the province a
reader is limited to (None: the whole country); the figures follow the definitions of the demo's
tables (scripts/results.py), so the dashboard and `make demo` agree."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.localtime import local_today
from shared.regions import province as province_of


def province_name(code: str | None) -> str:
    found = province_of(code) if code else None
    return found.name if found else (code or "–")


async def years(conn: asyncpg.Pool) -> list[int]:
    rows = await conn.fetch("SELECT DISTINCT year FROM tks_years UNION "
                            "SELECT DISTINCT year FROM tkm_groups WHERE year IS NOT NULL "
                            "ORDER BY 1 DESC")
    return [r["year"] for r in rows]


async def roster(conn, year: int, province: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT y.tks_id, t.stage, y.province_code, y.regency_code, y.status "
        "FROM tks_years y JOIN tks t USING (tks_id) WHERE y.year = $1 "
        "AND ($2::text IS NULL OR y.province_code = $2)", year, province)


async def _funded_groups(conn, year: int, province: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT group_id, province_code, regency_code, member_count, funded_total, "
        "accounted_total FROM tkm_groups WHERE year = $1 AND funded_total > 0 "
        "AND ($2::text IS NULL OR province_code = $2)", year, province)


async def by_stage(conn, year: int, province: str | None = None) -> list[dict[str, Any]]:
    tks = await roster(conn, year, province)
    groups = await _funded_groups(conn, year, province)
    like = f"{year:04d}-%"
    filed = {r["tks_id"]: r for r in await conn.fetch(
        "SELECT tks_id, count(*) AS filed, count(*) FILTER (WHERE on_time) AS on_time "
        "FROM monthly_reports WHERE period LIKE $1 GROUP BY tks_id", like)}
    overdue = {r["tks_id"]: r["n"] for r in await conn.fetch(
        "SELECT tks_id, count(*) AS n FROM overdue_reports WHERE period LIKE $1 GROUP BY tks_id",
        like)}
    decision = {r["tks_id"]: r["decision"] for r in await conn.fetch(
        "SELECT tks_id, decision FROM tks_evaluations WHERE year = $1", year)}
    rows = []
    for stage in sorted({t["stage"] for t in tks if t["stage"] is not None}):
        ids = {t["tks_id"] for t in tks if t["stage"] == stage}
        regencies = {t["regency_code"] for t in tks if t["stage"] == stage}
        # the funded groups of the regencies this stage's TKS serve (as the demo counts them)
        mentored = [g for g in groups if g["regency_code"] in regencies]
        n_filed = sum(filed[t]["filed"] for t in ids if t in filed)
        on_time = sum(filed[t]["on_time"] for t in ids if t in filed)
        n_overdue = sum(overdue.get(t, 0) for t in ids)
        rows.append({
            "stage": stage, "tks": len(ids), "regencies": len(regencies),
            "groups_mentored": len(mentored),
            "people_reached": sum(g["member_count"] for g in mentored),
            "rupiah_disbursed": sum(g["funded_total"] for g in mentored),
            "rupiah_accounted": sum(g["accounted_total"] for g in mentored),
            "reports_filed": n_filed, "reports_overdue": n_overdue,
            "compliance": on_time / (n_filed + n_overdue) if n_filed + n_overdue else None,
            "continued": sum(decision.get(t) == "continue" for t in ids),
            "replaced": sum(decision.get(t) == "replace" for t in ids),
            "resigned": sum(t["status"] == "resigned" for t in tks if t["tks_id"] in ids),
        })
    return rows


async def by_province(conn, year: int, province: str | None = None) -> list[dict[str, Any]]:
    tks = Counter(t["province_code"] for t in await roster(conn, year, province))
    money = {r["province_code"]: r for r in await conn.fetch(
        "SELECT province_code, count(DISTINCT group_id) FILTER (WHERE tranche = 1) AS groups, "
        "sum(amount)::bigint AS disbursed FROM fundings WHERE budget_year = $1 "
        "AND ($2::text IS NULL OR province_code = $2) GROUP BY province_code", year, province)}
    groups = {r["province_code"]: r for r in await conn.fetch(
        "SELECT province_code, sum(member_count) FILTER (WHERE funded_total > 0)::bigint AS "
        "people, sum(accounted_total) FILTER (WHERE last_budget_year = $1)::bigint AS accounted "
        "FROM tkm_groups WHERE year = $1 AND ($2::text IS NULL OR province_code = $2) "
        "GROUP BY province_code", year, province)}
    compliance = await _compliance_by_province(conn, year, province)
    decisions: dict[str, Counter] = defaultdict(Counter)
    for r in await conn.fetch("SELECT province_code, decision FROM tks_evaluations "
                              "WHERE year = $1", year):
        decisions[r["province_code"]][r["decision"]] += 1
    codes = sorted((set(tks) | set(money) | set(groups)) - {None})
    return [{
        "province_code": code, "province": province_name(code), "tks": tks[code],
        "groups_funded": (money.get(code) or {}).get("groups") or 0,
        "people_reached": (groups.get(code) or {}).get("people") or 0,
        "rupiah_disbursed": (money.get(code) or {}).get("disbursed") or 0,
        "rupiah_accounted": (groups.get(code) or {}).get("accounted") or 0,
        "compliance": compliance.get(code),
        "continued": decisions[code]["continue"], "replaced": decisions[code]["replace"],
    } for code in codes]


async def _compliance_by_province(conn, year: int, province: str | None) -> dict[str, float]:
    """Over the year's closed months: on-time reports / (reports filed + flagged overdue)."""
    rows = await conn.fetch("""
        WITH closed AS (SELECT period FROM closed_periods WHERE period LIKE $1),
        f AS (SELECT g.province_code, count(*) AS filed, count(*) FILTER (WHERE r.on_time) AS ok
              FROM monthly_reports r JOIN closed USING (period) JOIN tkm_groups g USING (group_id)
              GROUP BY g.province_code),
        o AS (SELECT g.province_code, count(*) AS overdue
              FROM overdue_reports r JOIN closed USING (period) JOIN tkm_groups g USING (group_id)
              GROUP BY g.province_code)
        SELECT coalesce(f.province_code, o.province_code) AS province_code,
               coalesce(f.filed, 0) AS filed, coalesce(f.ok, 0) AS ok,
               coalesce(o.overdue, 0) AS overdue
        FROM f FULL JOIN o USING (province_code)""", f"{year:04d}-%")
    return {r["province_code"]: r["ok"] / (r["filed"] + r["overdue"]) for r in rows
            if r["filed"] + r["overdue"] and (province is None or r["province_code"] == province)}


def totals(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, int]:
    return {k: sum(r[k] or 0 for r in rows) for k in keys}


async def regencies(conn, year: int, province: str) -> list[dict[str, Any]]:
    rows = await conn.fetch("""
        SELECT regency_code, sum(tks)::int AS tks, sum(groups)::int AS groups,
               sum(people)::bigint AS people, sum(disbursed)::bigint AS disbursed
        FROM (SELECT regency_code, 1 AS tks, 0 AS groups, 0 AS people, 0 AS disbursed
              FROM tks_years WHERE year = $1 AND province_code = $2
              UNION ALL
              SELECT regency_code, 0, 1, member_count, funded_total FROM tkm_groups
              WHERE year = $1 AND province_code = $2 AND funded_total > 0) x
        GROUP BY regency_code ORDER BY regency_code""", year, province)
    return [dict(r) for r in rows]


async def groups_list(conn, province: str | None, *, status: str | None = None,
                      year: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT g.*, a.tks_id FROM tkm_groups g LEFT JOIN mentor_assignments a "
        "ON a.group_id = g.group_id AND a.unassigned_on IS NULL "
        "WHERE ($1::text IS NULL OR g.province_code = $1) AND ($2::text IS NULL OR g.status = $2) "
        "AND ($3::int IS NULL OR g.year = $3) AND g.year IS NOT NULL "
        "ORDER BY g.registered_at DESC NULLS LAST, g.group_id LIMIT $4",
        province, status, year, limit)
    return [dict(r) for r in rows]


async def queues(conn, province: str | None, limit: int = 100) -> dict[str, list[dict]]:
    lpj = await conn.fetch(
        "SELECT l.*, g.province_code, g.regency_code, g.funded_total FROM lpj_reports l "
        "JOIN tkm_groups g USING (group_id) WHERE l.status = 'submitted' "
        "AND ($1::text IS NULL OR g.province_code = $1) ORDER BY l.submitted_at LIMIT $2",
        province, limit)
    overdue = await conn.fetch(
        "SELECT o.*, g.province_code, g.regency_code FROM overdue_reports o "
        "JOIN tkm_groups g USING (group_id) WHERE NOT EXISTS (SELECT 1 FROM monthly_reports r "
        "WHERE r.group_id = o.group_id AND r.period = o.period) "
        "AND ($1::text IS NULL OR g.province_code = $1) "
        "ORDER BY o.period DESC, o.group_id LIMIT $2", province, limit)
    unassigned = await conn.fetch(
        "SELECT g.* FROM tkm_groups g WHERE g.status = 'funded' AND NOT EXISTS ("
        "SELECT 1 FROM mentor_assignments a WHERE a.group_id = g.group_id "
        "AND a.unassigned_on IS NULL) AND ($1::text IS NULL OR g.province_code = $1) "
        "ORDER BY g.regency_code, g.group_id LIMIT $2", province, limit)
    return {
        "to_approve": await groups_list(conn, province, status="registered", limit=limit),
        "to_fund": await groups_list(conn, province, status="approved", limit=limit),
        "lpj_to_review": [dict(r) for r in lpj],
        "overdue_reports": [dict(r) for r in overdue],
        "unassigned": [dict(r) for r in unassigned],
    }


async def queue_counts(conn, province: str | None) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'registered') AS to_approve, "
        "count(*) FILTER (WHERE status = 'approved') AS to_fund FROM tkm_groups "
        "WHERE ($1::text IS NULL OR province_code = $1)", province)
    return dict(row)


async def group(conn, group_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM tkm_groups WHERE group_id = $1", group_id)
    if row is None or row["province_code"] is None:
        return None
    return {
        **dict(row),
        "fundings": [dict(r) for r in await conn.fetch(
            "SELECT * FROM fundings WHERE group_id = $1 ORDER BY tranche", group_id)],
        "lpj": [dict(r) for r in await conn.fetch(
            "SELECT * FROM lpj_reports WHERE group_id = $1 ORDER BY submitted_at", group_id)],
        "reports": [dict(r) for r in await conn.fetch(
            "SELECT * FROM monthly_reports WHERE group_id = $1 ORDER BY period DESC", group_id)],
        "overdue": [dict(r) for r in await conn.fetch(
            "SELECT * FROM overdue_reports WHERE group_id = $1 ORDER BY period DESC", group_id)],
        "activities": [dict(r) for r in await conn.fetch(
            "SELECT * FROM group_activities WHERE group_id = $1 ORDER BY occurred_at",
            group_id)],
        "mentors": [dict(r) for r in await conn.fetch(
            "SELECT * FROM mentor_assignments WHERE group_id = $1 ORDER BY assigned_on",
            group_id)],
    }


async def tks(conn, tks_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM tks WHERE tks_id = $1", tks_id)
    if row is None:
        return None
    caseload = await conn.fetch(
        "SELECT g.*, a.assigned_on FROM mentor_assignments a JOIN tkm_groups g USING (group_id) "
        "WHERE a.tks_id = $1 AND a.unassigned_on IS NULL ORDER BY g.group_id", tks_id)
    months = await conn.fetch("""
        SELECT period, sum(filed)::int AS filed, sum(on_time)::int AS on_time,
               sum(overdue)::int AS overdue
        FROM (SELECT period, 1 AS filed, on_time::int AS on_time, 0 AS overdue
              FROM monthly_reports WHERE tks_id = $1
              UNION ALL SELECT period, 0, 0, 1 FROM overdue_reports WHERE tks_id = $1) x
        GROUP BY period ORDER BY period DESC""", tks_id)
    evaluations = []
    for r in await conn.fetch("SELECT * FROM tks_evaluations WHERE tks_id = $1 "
                              "ORDER BY year DESC", tks_id):
        evaluations.append({**dict(r), "indicators": json.loads(r["indicators"])})
    return {**dict(row), "caseload": [dict(r) for r in caseload],
            "years": [dict(r) for r in await conn.fetch(
                "SELECT * FROM tks_years WHERE tks_id = $1 ORDER BY year DESC", tks_id)],
            "months": [dict(r) for r in months], "evaluations": evaluations}


async def due_this_month(conn, tks_id: str, now: datetime) -> tuple[str, list[dict[str, Any]]]:
    """The month whose reports are due now (the last month that has ended in the TKS's
    regency's time zone: mentoring takes no report on a month still running) and the TKS's
    groups with no report on it yet."""
    regency = await conn.fetchval(
        "SELECT g.regency_code FROM mentor_assignments a JOIN tkm_groups g USING (group_id) "
        "WHERE a.tks_id = $1 AND a.unassigned_on IS NULL LIMIT 1", tks_id)
    today = local_today(regency, now) if regency else now.date()
    ended = today.replace(day=1) - timedelta(days=1)
    period = f"{ended.year:04d}-{ended.month:02d}"
    rows = await conn.fetch(
        "SELECT g.group_id, g.regency_code, g.business_type, g.member_count FROM "
        "mentor_assignments a JOIN tkm_groups g USING (group_id) WHERE a.tks_id = $1 "
        "AND a.unassigned_on IS NULL AND g.status = 'funded' AND NOT EXISTS ("
        "SELECT 1 FROM monthly_reports r WHERE r.group_id = g.group_id AND r.period = $2) "
        "ORDER BY g.group_id", tks_id, period)
    return period, [dict(r) for r in rows]


async def evaluation_cycles(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        "SELECT * FROM evaluation_cycles ORDER BY year DESC")]


async def reader_status(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM applied_events")
