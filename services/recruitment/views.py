"""Read queries (SELECT only) on the read models."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.paging import PageParams

TKS_COLUMNS = ("r.tks_id, r.year, r.round_id, r.stage, r.recruited_year, r.province_code, "
               "r.regency_code, r.status, r.contract_start, r.contract_end, r.evaluation_score, "
               "r.ended_on, r.end_reason")
# never shown to agencies: even the masked NIK reveals the issuing region
# rows projected before the region-only mask kept 8 digits: re-masked on the way out
REGION_MASK = "rpad(left({}nik_masked, 6), 16, '*') AS nik_masked"
AGE = "extract(year FROM age(current_date, {}birth_date))::int AS age"
PERSONAL_COLUMNS = (f", {REGION_MASK.format('a.')}, a.full_name, a.sex, a.birth_date, "
                    f"{AGE.format('a.')}, a.education, a.phone, a.email")
APPLICANT_COLUMNS = (f"applicant_id, year, {REGION_MASK.format('')}, full_name, sex, birth_date, "
                     f"{AGE.format('')}, education, "
                     "province_code, regency_code, phone, email, status, passed_screening, "
                     "rejection_reason, rejection_note, briefing_stage, briefing_city, "
                     "briefed_on, registered_at")


def _where(alias: str = "", **filters: Any) -> tuple[str, list[Any]]:
    """`col = $n` for every filter given (None = not filtered); keys are trusted column names."""
    prefix = f"{alias}." if alias else ""
    parts, args = [], []
    for column, value in filters.items():
        if value is not None:
            args.append(value)
            parts.append(f"{prefix}{column} = ${len(args)}")
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


async def _page(pool: asyncpg.Pool, select: str, from_where: str, args: list[Any],
                order: str, page: PageParams) -> dict[str, Any]:
    total = await pool.fetchval(f"SELECT count(*) {from_where}", *args)
    window = page.window(paged := list(args))
    rows = await pool.fetch(f"SELECT {select} {from_where} ORDER BY {order} {window}", *paged)
    return page.out([dict(r) for r in rows], total)


async def roster(pool: asyncpg.Pool, *, personal: bool, page: PageParams,
                 **filters: Any) -> dict[str, Any]:
    where, args = _where("r", **filters)
    return await _page(
        pool, TKS_COLUMNS + (PERSONAL_COLUMNS if personal else ""),
        f"FROM tks_roster r LEFT JOIN applicants a ON a.applicant_id = r.tks_id{where}", args,
        "r.year, r.province_code, r.regency_code, r.tks_id", page)


async def tks_contracts(pool: asyncpg.Pool, tks_id: str, *, personal: bool) -> list[dict]:
    rows = await pool.fetch(
        f"SELECT {TKS_COLUMNS}{PERSONAL_COLUMNS if personal else ''} FROM tks_roster r "
        "LEFT JOIN applicants a ON a.applicant_id = r.tks_id WHERE r.tks_id = $1 "
        "ORDER BY r.year", tks_id)
    return [dict(r) for r in rows]


async def round_fill(pool: asyncpg.Pool, round_id: str,
                     province_code: str | None) -> dict[str, Any] | None:
    head = await pool.fetchrow("SELECT * FROM rounds WHERE round_id = $1", round_id)
    if head is None:
        return None
    where, args = _where(round_id=round_id, province_code=province_code)
    rows = await pool.fetch(
        "SELECT province_code, nullif(regency_code, '') AS regency_code, places, recruited, "
        f"places - recruited AS remaining FROM round_quotas{where} "
        "ORDER BY province_code, regency_code", *args)
    quotas = [dict(r) for r in rows]
    return {**dict(head), "places": sum(q["places"] for q in quotas),
            "filled": sum(q["recruited"] for q in quotas), "quotas": quotas}


async def rounds(pool: asyncpg.Pool, year: int | None, stage: int | None) -> list[dict]:
    where, args = _where(year=year, stage=stage)
    rows = await pool.fetch(f"SELECT * FROM rounds{where} ORDER BY year, stage, opened_at", *args)
    return [dict(r) for r in rows]


async def funnel(pool: asyncpg.Pool, year: int, province_code: str | None) -> dict[str, Any]:
    where, args = _where(year=year, province_code=province_code)
    counts = await pool.fetchrow(
        "SELECT count(*) AS registered, count(*) FILTER (WHERE passed_screening) AS screened, "
        "count(*) FILTER (WHERE briefed_on IS NOT NULL) AS briefed, "
        "count(*) FILTER (WHERE status = 'recruited') AS recruited, "
        f"count(*) FILTER (WHERE status = 'rejected') AS rejected FROM applicants{where}", *args)
    reasons = await pool.fetch(
        f"SELECT rejection_reason AS reason, count(*) AS count FROM applicants{where} "
        f"{'AND' if where else 'WHERE'} status = 'rejected' GROUP BY rejection_reason "
        "ORDER BY count DESC, reason", *args)
    return {"year": year, "province_code": province_code, **dict(counts),
            "rejections": [dict(r) for r in reasons]}


async def vacancies(pool: asyncpg.Pool, *, page: PageParams,
                    **filters: Any) -> dict[str, Any]:
    where, args = _where(**filters)
    return await _page(pool, "*", f"FROM vacancies{where}", args,
                       "year, province_code, regency_code, opened_at", page)


async def applicant(pool: asyncpg.Pool, applicant_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {APPLICANT_COLUMNS} FROM applicants "
                              "WHERE applicant_id = $1", applicant_id)
    return dict(row) if row else None


async def applicant_nik(pool: asyncpg.Pool, applicant_id: str) -> str | None:
    """The full NIK, for the ministry's audited reveal only."""
    return await pool.fetchval("SELECT nik FROM applicant_nik WHERE applicant_id = $1",
                               applicant_id)


async def applicants(pool: asyncpg.Pool, *, page: PageParams,
                     **filters: Any) -> dict[str, Any]:
    where, args = _where(**filters)
    return await _page(pool, APPLICANT_COLUMNS, f"FROM applicants{where}", args,
                       "registered_at, applicant_id", page)


_STATS = """
WITH a AS (
    SELECT province_code, count(*) AS registered,
           count(*) FILTER (WHERE passed_screening) AS screened,
           count(*) FILTER (WHERE briefed_on IS NOT NULL) AS briefed,
           count(*) FILTER (WHERE status = 'recruited') AS recruited,
           count(*) FILTER (WHERE status = 'rejected') AS rejected
    FROM applicants WHERE year = $1 AND ($2::text IS NULL OR province_code = $2)
    GROUP BY province_code),
t AS (
    SELECT province_code, count(*) AS tks,
           count(*) FILTER (WHERE status = 'active') AS tks_active,
           count(*) FILTER (WHERE status = 'renewed') AS tks_renewed,
           count(*) FILTER (WHERE status = 'released') AS tks_released,
           count(*) FILTER (WHERE status = 'resigned') AS tks_resigned
    FROM tks_roster WHERE year = $1 AND ($2::text IS NULL OR province_code = $2)
    GROUP BY province_code),
v AS (
    SELECT province_code, count(*) FILTER (WHERE status = 'open') AS vacancies_open,
           count(*) FILTER (WHERE status = 'filled') AS vacancies_filled
    FROM vacancies WHERE year = $1 AND ($2::text IS NULL OR province_code = $2)
    GROUP BY province_code)
SELECT * FROM a FULL JOIN t USING (province_code) FULL JOIN v USING (province_code)
ORDER BY province_code"""
STAT_FIELDS = ("registered", "screened", "briefed", "recruited", "rejected", "tks", "tks_active",
               "tks_renewed", "tks_released", "tks_resigned", "vacancies_open",
               "vacancies_filled")


async def stats(pool: asyncpg.Pool, year: int, province_code: str | None) -> dict[str, Any]:
    """National totals and one row per province (a province with nothing is left out)."""
    rows = [{"province_code": r["province_code"], **{k: r[k] or 0 for k in STAT_FIELDS}}
            for r in await pool.fetch(_STATS, year, province_code)]
    return {"year": year, "province_code": province_code,
            "national": {k: sum(r[k] for r in rows) for k in STAT_FIELDS}, "provinces": rows}
