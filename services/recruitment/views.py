"""Read queries (SELECT only) on the read models. Personal fields are stored as tokens
(shared.pii): each page's persons' keys are read in one statement and the fields decrypted
here; an erased person's fields read as `pii.ERASED`, and its age as null."""

from __future__ import annotations

from datetime import UTC, date, datetime
from collections.abc import Mapping
from typing import Any

import asyncpg

from services.recruitment.domain import age_on
from shared import pii
from shared.paging import PageParams
from shared.privacy import reveal

Db = asyncpg.Pool | asyncpg.Connection
# the personal fields a row may carry, decrypted with the applicant's key
SEALED = ("nik", "full_name", "birth_date", "phone", "email", "rejection_note")

TKS_COLUMNS = ("r.tks_id, r.year, r.round_id, r.stage, r.recruited_year, r.province_code, "
               "r.regency_code, r.status, r.contract_start, r.contract_end, r.evaluation_score, "
               "r.ended_on, r.end_reason")
# never shown to agencies: even the masked NIK reveals the issuing region
# rows projected before the region-only mask kept 8 digits: re-masked on the way out
REGION_MASK = "rpad(left({}nik_masked, 6), 16, '*') AS nik_masked"
# the age is computed once the birth date is decrypted (`readable`)
PERSONAL_COLUMNS = (f", {REGION_MASK.format('a.')}, a.full_name, a.sex, a.birth_date, "
                    "a.education, a.phone, a.email")
APPLICANT_COLUMNS = (f"applicant_id, year, {REGION_MASK.format('')}, full_name, sex, birth_date, "
                     "education, province_code, regency_code, phone, email, status, "
                     "passed_screening, rejection_reason, rejection_note, briefing_stage, "
                     "briefing_city, briefed_on, registered_at")


def person_ref(applicant_id: str) -> str:
    """The applicant's person_ref (shared.pii): its stream id."""
    return f"applicant-{applicant_id}"


async def readable(db: Db, keyring: pii.Keyring, rows: list[dict[str, Any]],
                   id_key: str = "applicant_id") -> list[dict[str, Any]]:
    """`rows` with their personal fields decrypted (the keys of all their persons in one
    statement), the birth date as a date and the age beside it (null once erased)."""
    refs = [person_ref(r[id_key]) for r in rows
            if any(pii.is_token(r.get(f)) for f in SEALED)]
    return decrypted(await pii.load_keys(db, keyring, refs) if refs else {}, rows, id_key)


def decrypted(keys: Mapping[str, pii.PersonKey], rows: list[dict[str, Any]],
              id_key: str = "applicant_id") -> list[dict[str, Any]]:
    """`readable` with the keys already loaded."""
    today = datetime.now(UTC).date()
    for row in rows:
        ref = person_ref(row[id_key])
        for field in SEALED:
            if field in row:
                row[field] = reveal(keys, ref, field, row[field])
        if "birth_date" in row:
            born = row["birth_date"]
            if isinstance(born, str) and not isinstance(born, pii.Erased):
                born = row["birth_date"] = date.fromisoformat(born)
            row["age"] = age_on(born, today) if isinstance(born, date) else None
    return rows


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


async def roster(pool: asyncpg.Pool, keyring: pii.Keyring, *, personal: bool,
                 page: PageParams, **filters: Any) -> dict[str, Any]:
    where, args = _where("r", **filters)
    found = await _page(
        pool, TKS_COLUMNS + (PERSONAL_COLUMNS if personal else ""),
        f"FROM tks_roster r LEFT JOIN applicants a ON a.applicant_id = r.tks_id{where}", args,
        "r.year, r.province_code, r.regency_code, r.tks_id", page)
    if personal:
        found["items"] = await readable(pool, keyring, found["items"], "tks_id")
    return found


async def tks_contracts(pool: asyncpg.Pool, keyring: pii.Keyring, tks_id: str, *,
                        personal: bool) -> list[dict]:
    rows = await pool.fetch(
        f"SELECT {TKS_COLUMNS}{PERSONAL_COLUMNS if personal else ''} FROM tks_roster r "
        "LEFT JOIN applicants a ON a.applicant_id = r.tks_id WHERE r.tks_id = $1 "
        "ORDER BY r.year", tks_id)
    contracts = [dict(r) for r in rows]
    return await readable(pool, keyring, contracts, "tks_id") if personal else contracts


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


async def applicant(pool: asyncpg.Pool, keyring: pii.Keyring,
                    applicant_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {APPLICANT_COLUMNS} FROM applicants "
                              "WHERE applicant_id = $1", applicant_id)
    return (await readable(pool, keyring, [dict(row)]))[0] if row else None


async def applicant_nik(pool: asyncpg.Pool, keyring: pii.Keyring, applicant_id: str) -> str | None:
    """The full NIK (ERASED once erased), for the ministry's audited reveal only."""
    row = await pool.fetchrow("SELECT applicant_id, nik FROM applicants WHERE applicant_id = $1",
                              applicant_id)
    if row is None:
        return None
    return (await readable(pool, keyring, [dict(row)]))[0]["nik"]


async def applicants(pool: asyncpg.Pool, keyring: pii.Keyring, *, page: PageParams,
                     **filters: Any) -> dict[str, Any]:
    where, args = _where(**filters)
    found = await _page(pool, APPLICANT_COLUMNS, f"FROM applicants{where}", args,
                        "registered_at, applicant_id", page)
    found["items"] = await readable(pool, keyring, found["items"])
    return found


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
