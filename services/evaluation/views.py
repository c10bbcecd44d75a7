"""Read queries, set-based: a year's facts for every TKS come from a handful of grouped queries,
whatever the number of TKS."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import asyncpg

from services.evaluation.config import Policy
from services.evaluation.scoring import TksFacts, months_served
from shared.errors import NotFoundError

Conn = asyncpg.Connection | asyncpg.Pool

_CONTRACTS = """
WITH c AS (
    SELECT tks_id,
           array_agg(contract_start ORDER BY contract_start) AS starts,
           array_agg(contract_end ORDER BY contract_start) AS ends,
           (array_agg(province_code ORDER BY contract_start DESC))[1] AS province_code,
           (array_agg(regency_code ORDER BY contract_start DESC))[1] AS regency_code,
           max(contract_start) AS last_start
    FROM tks_contracts
    WHERE contract_start <= make_date($1, 12, 31) AND contract_end >= make_date($1, 1, 1)
      AND ($2::text IS NULL OR tks_id = $2)
    GROUP BY tks_id)
SELECT c.*, EXISTS (
    SELECT 1 FROM tks_exits x
    WHERE x.tks_id = c.tks_id AND x.effective_date >= c.last_start
      AND x.effective_date <= make_date($1, 12, 31)) AS left_programme
FROM c"""

_REPORTS = """
SELECT tks_id,
       count(*) AS due,
       count(*) FILTER (WHERE status = 'filed' AND on_time) AS on_time,
       coalesce(sum(new_workers) FILTER (WHERE status = 'filed'), 0) AS new_workers,
       count(DISTINCT group_id) FILTER (WHERE status = 'filed') AS groups_reported
FROM report_facts
WHERE year = $1 AND ($2::text IS NULL OR tks_id = $2)
GROUP BY tks_id"""

_QUARTERS = """
WITH q AS (
    SELECT tks_id, (substr(period, 6, 2)::int + 2) / 3 AS quarter,
           avg(revenue)::float8 AS revenue
    FROM report_facts
    WHERE year = $1 AND status = 'filed' AND ($2::text IS NULL OR tks_id = $2)
    GROUP BY tks_id, quarter)
SELECT tks_id, count(*) AS quarters,
       (array_agg(revenue ORDER BY quarter))[1] AS first_revenue,
       (array_agg(revenue ORDER BY quarter DESC))[1] AS last_revenue
FROM q GROUP BY tks_id"""

# a group funded for the year counts for the TKS mentoring it on the day of the fact measured:
# the LPJ's acceptance (or the year's end) and the dissolution (or the year's end)
_GROUPS = """
WITH g AS (
    SELECT mentor_on(group_id, coalesce(lpj_accepted_on, make_date($1, 12, 31))) AS lpj_tks,
           lpj_accepted_on IS NOT NULL AS accepted,
           mentor_on(group_id, least(coalesce(dissolved_on, make_date($1, 12, 31)),
                                     make_date($1, 12, 31))) AS year_end_tks,
           dissolved_on IS NULL OR dissolved_on > make_date($1, 12, 31) AS active
    FROM group_facts WHERE funded_year = $1),
lpj AS (SELECT lpj_tks AS tks_id, count(*) AS funded, count(*) FILTER (WHERE accepted) AS accepted
        FROM g WHERE lpj_tks IS NOT NULL GROUP BY lpj_tks),
act AS (SELECT year_end_tks AS tks_id, count(*) AS groups, count(*) FILTER (WHERE active) AS active
        FROM g WHERE year_end_tks IS NOT NULL GROUP BY year_end_tks)
SELECT tks_id, coalesce(lpj.funded, 0) AS funded, coalesce(lpj.accepted, 0) AS accepted,
       coalesce(act.groups, 0) AS groups, coalesce(act.active, 0) AS active
FROM lpj FULL JOIN act USING (tks_id)
WHERE $2::text IS NULL OR tks_id = $2"""


async def tks_facts(conn: Conn, year: int, tks_id: str | None = None) -> list[TksFacts]:
    """The year's facts for every TKS with a contract in it (or for one TKS)."""
    facts: dict[str, TksFacts] = {}
    for row in await conn.fetch(_CONTRACTS, year, tks_id):
        facts[row["tks_id"]] = TksFacts(
            tks_id=row["tks_id"], province_code=row["province_code"],
            regency_code=row["regency_code"],
            months_served=months_served(list(zip(row["starts"], row["ends"], strict=True)), year),
            left_programme=row["left_programme"])
    if tks_id is not None and tks_id not in facts:
        facts[tks_id] = TksFacts(tks_id=tks_id)
    for row in await conn.fetch(_REPORTS, year, tks_id):
        if row["tks_id"] in facts:
            facts[row["tks_id"]] = replace(
                facts[row["tks_id"]], reports_due=row["due"], reports_on_time=row["on_time"],
                new_workers=row["new_workers"], groups_reported=row["groups_reported"])
    for row in await conn.fetch(_QUARTERS, year, tks_id):
        if row["tks_id"] in facts:
            facts[row["tks_id"]] = replace(
                facts[row["tks_id"]], quarters_filed=row["quarters"],
                first_quarter_revenue=row["first_revenue"],
                last_quarter_revenue=row["last_revenue"])
    for row in await conn.fetch(_GROUPS, year, tks_id):
        if row["tks_id"] in facts:
            facts[row["tks_id"]] = replace(
                facts[row["tks_id"]], funded_groups=row["funded"], lpj_accepted=row["accepted"],
                year_end_groups=row["groups"], active_groups=row["active"])
    return list(facts.values())


async def periods_closed(conn: Conn, year: int) -> int:
    return await conn.fetchval("SELECT count(*) FROM periods_closed WHERE year = $1", year)


async def cycle(conn: Conn, year: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM evaluation_cycles WHERE year = $1", year)


def _filters(year: int, province_code: str | None, regency_code: str | None,
             decision: str | None = None) -> tuple[str, list[Any]]:
    where, args = ["year = $1"], [year]
    for column, value in (("province_code", province_code), ("regency_code", regency_code),
                          ("decision", decision)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    return " AND ".join(where), args


def _result(row: asyncpg.Record) -> dict[str, Any]:
    return {"tks_id": row["tks_id"], "province_code": row["province_code"],
            "regency_code": row["regency_code"], "score": row["score"],
            "decision": row["decision"], "policy_version": row["policy_version"],
            "indicators": json.loads(row["indicators"])}


async def results(conn: Conn, year: int, *, province_code: str | None = None,
                  regency_code: str | None = None, decision: str | None = None,
                  limit: int | None = None, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    where, args = _filters(year, province_code, regency_code, decision)
    total = await conn.fetchval(f"SELECT count(*) FROM evaluation_results WHERE {where}", *args)
    page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
    rows = await conn.fetch(f"SELECT * FROM evaluation_results WHERE {where} "
                            f"ORDER BY score DESC, tks_id{page}", *args)
    return total, [_result(r) for r in rows]


async def result(conn: Conn, year: int, tks_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM evaluation_results WHERE year = $1 AND tks_id = $2",
                              year, tks_id)
    return _result(row) if row else None


async def exclusions(conn: Conn, year: int, *, province_code: str | None = None,
                     tks_id: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT tks_id, reason, months_served, province_code, regency_code "
        "FROM evaluation_exclusions WHERE year = $1 AND ($2::text IS NULL OR province_code = $2) "
        "AND ($3::text IS NULL OR tks_id = $3) ORDER BY tks_id", year, province_code, tks_id)
    return [dict(r) for r in rows]


async def scores(conn: Conn, year: int, province_code: str | None,
                 regency_code: str | None) -> list[float]:
    where, args = _filters(year, province_code, regency_code)
    return [r["score"] for r in
            await conn.fetch(f"SELECT score FROM evaluation_results WHERE {where}", *args)]


async def late_events(conn: Conn, year: int, limit: int,
                      offset: int) -> tuple[int, list[dict[str, Any]]]:
    total = await conn.fetchval("SELECT count(*) FROM late_events WHERE year = $1", year)
    rows = await conn.fetch(
        "SELECT event_id, topic, event_type, tks_id, group_id, occurred_at, received_at "
        "FROM late_events WHERE year = $1 ORDER BY received_at, event_id LIMIT $2 OFFSET $3",
        year, limit, offset)
    return total, [dict(r) for r in rows]


async def cycle_summary(conn: Conn, year: int) -> dict[str, Any]:
    row = await cycle(conn, year)
    if row is None:
        raise NotFoundError(f"no evaluation has been opened for {year}", field="year")
    not_evaluated = {r["reason"]: r["n"] for r in await conn.fetch(
        "SELECT reason, count(*) AS n FROM evaluation_exclusions WHERE year = $1 GROUP BY reason",
        year)}
    policy = Policy.model_validate_json(row["policy"]) if row["policy"] else None
    return {"year": year, "status": row["status"], "policy_version": row["policy_version"],
            "policy": policy, "opened_at": row["opened_at"], "closed_at": row["closed_at"],
            "evaluated": row["evaluated"], "continued": row["continued"],
            "replaced": row["replaced"], "not_evaluated": not_evaluated}


async def close_result(conn: Conn, year: int) -> dict[str, Any]:
    summary = await cycle_summary(conn, year)
    _, outcomes = await results(conn, year)
    excluded = await exclusions(conn, year)
    return {"summary": summary, "outcomes": outcomes, "not_evaluated": excluded}


_STATS = """
WITH r AS (
    SELECT province_code, count(*) AS evaluated,
           count(*) FILTER (WHERE decision = 'continue') AS continued,
           count(*) FILTER (WHERE decision = 'replace') AS replaced, sum(score) AS score_sum
    FROM evaluation_results WHERE year = $1 AND ($2::text IS NULL OR province_code = $2)
    GROUP BY province_code),
x AS (
    SELECT coalesce(province_code, '') AS province_code, count(*) AS not_evaluated
    FROM evaluation_exclusions WHERE year = $1 AND ($2::text IS NULL OR province_code = $2)
    GROUP BY 1)
SELECT province_code, coalesce(evaluated, 0) AS evaluated, coalesce(continued, 0) AS continued,
       coalesce(replaced, 0) AS replaced, coalesce(not_evaluated, 0) AS not_evaluated,
       coalesce(score_sum, 0) AS score_sum
FROM r FULL JOIN x USING (province_code) ORDER BY province_code"""


async def stats(conn: Conn, year: int, province_code: str | None) -> list[dict[str, Any]]:
    """A closed year's outcomes per province (a TKS nothing is known of: province "")."""
    return [dict(r) for r in await conn.fetch(_STATS, year, province_code)]
