"""Read queries over the groups read models (SELECT only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from services.groups import privacy
from shared.localtime import ZONES, local_today
from shared.pii import Keyring
from shared.paging import PageParams

_LISTED = ("group_id, name, external_ref, year, stage, province_code, regency_code, "
           "business_type, status, status_reason_code, member_count, tranches, funded_total, "
           "accounted_total, funded_total - accounted_total AS remaining_balance, "
           "last_budget_year, last_disbursed_on, lpj_status, lpj_due_on, bimtek_count, "
           "product_evidence_count, expo_count, registered_on, registration_backdated, "
           "registered_at, registered_at AS recorded_at, updated_at")
# officers' own words, which may name members: for the ministry and provincial officers only
_NOTES = ", status_note"


@dataclass(frozen=True)
class GroupFilter:
    year: int | None = None
    stage: str | None = None
    province_code: str | None = None
    regency_code: str | None = None
    business_type: str | None = None
    status: str | None = None

    def where(self, args: list[Any]) -> list[str]:
        conditions = []
        for column in ("year", "stage", "province_code", "regency_code", "business_type",
                       "status"):
            value = getattr(self, column)
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        return conditions


@dataclass(frozen=True)
class Page(PageParams):
    """shared.paging's limit/offset; `deprecated`: the page/page_size a client still sent
    (answered back as given, for one release)."""

    deprecated: tuple[int, int] | None = None

    @classmethod
    def of(cls, params: PageParams, page: int | None, page_size: int | None) -> Page:
        if page is None and page_size is None:
            return cls(params.limit, params.offset)
        size = page_size or params.limit
        number = page or 1
        return cls(size, (number - 1) * size, (number, size))

    def out(self, items: list[Any], total: int) -> dict[str, Any]:
        answer = super().out(items, total)
        if self.deprecated is not None:
            answer["page"], answer["page_size"] = self.deprecated
        return answer


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in record.items()}


async def _paged(pool: asyncpg.Pool, conditions: list[str], args: list[Any], page: Page,
                 order: str, with_notes: bool = False) -> dict[str, Any]:
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    columns = _LISTED + (_NOTES if with_notes else "")
    total = await pool.fetchval(f"SELECT count(*) FROM group_registry {where}", *args)
    rows = await pool.fetch(f"SELECT {columns} FROM group_registry {where} ORDER BY {order} "
                            f"{page.window(args)}", *args)
    return page.out([_row(r) for r in rows], total)


async def existing_group_ids(pool: asyncpg.Pool, group_ids: list[str]) -> set[str]:
    rows = await pool.fetch("SELECT group_id FROM group_registry WHERE group_id = ANY($1)",
                            group_ids)
    return {r["group_id"] for r in rows}


async def list_groups(pool: asyncpg.Pool, where: GroupFilter, page: Page, *,
                      with_notes: bool = False) -> dict[str, Any]:
    """`with_notes` only for readers allowed officers' notes (ministry, provincial officer)."""
    args: list[Any] = []
    return await _paged(pool, where.where(args), args, page,
                        "year, province_code, regency_code, name, group_id", with_notes)


async def group_detail(pool: asyncpg.Pool, group_id: str, for_officers: bool,
                       reveal_nik: bool = False, *,
                       keyring: Keyring | None = None) -> dict[str, Any] | None:
    """`for_officers`: with members (NIK masked to the region) and officers' notes, for the
    ministry and the group's provincial officer only; `reveal_nik`: members' full NIKs (the
    ministry's audited read). Members' fields are opened with the page's keys (one statement);
    an erased member reads as ERASED in each of them. `keyring`: the process's (needed with
    `for_officers`)."""
    notes = _NOTES if for_officers else ""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {_LISTED}{notes} FROM group_registry "
                                  "WHERE group_id = $1", group_id)
        if row is None:
            return None
        group = _row(row)
        report_note = ", note" if for_officers else ""
        reports = await conn.fetch(
            "SELECT report_id, tools, materials, other, remaining_balance, evidence_count, "
            f"status, reason_code{report_note}, submitted_at, reviewed_at FROM lpj_reports "
            "WHERE group_id = $1 ORDER BY submitted_at", group_id)
        activities = await conn.fetch(
            "SELECT kind, title, place, held_on, evidence_count FROM group_activities "
            "WHERE group_id = $1 ORDER BY stream_version", group_id)
        group["lpj_reports"] = [_row(r) for r in reports]
        group["activities"] = [_row(r) for r in activities]
        if for_officers:
            rows = await conn.fetch("SELECT nik, name, phone, birth_date, nik_hash "
                                    "FROM group_members WHERE group_id = $1", group_id)
            opened = await privacy.reader(conn, keyring, [r["nik_hash"] for r in rows])
            members = sorted((opened.member(r) for r in rows),
                             key=lambda m: (m["name"], m["nik"]))
            group["members"] = [{"nik": privacy.shown_nik(m["nik"], reveal_nik),
                                 "name": m["name"], "phone": m["phone"]} for m in members]
    return group


async def people_reached(pool: asyncpg.Pool, year: int | None,
                         province_code: str | None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT year, province_code, groups_registered, members_registered, groups_funded, "
        "members_funded FROM people_reached WHERE ($1::int IS NULL OR year = $1) "
        "AND ($2::text IS NULL OR province_code = $2) ORDER BY year, province_code",
        year, province_code)
    return [dict(r) for r in rows]


async def funding_by_province(pool: asyncpg.Pool, budget_year: int | None,
                              province_code: str | None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT budget_year, province_code, groups_funded, tranches, amount_disbursed, "
        "amount_accounted FROM funding_by_province "
        "WHERE ($1::int IS NULL OR budget_year = $1) "
        "AND ($2::text IS NULL OR province_code = $2) ORDER BY budget_year, province_code",
        budget_year, province_code)
    return [dict(r) for r in rows]


async def lpj_outstanding(pool: asyncpg.Pool, where: GroupFilter, page: Page,
                          overdue_on: date | dict[str, date] | None) -> dict[str, Any]:
    """Funded groups whose funds are not yet accounted for by an accepted LPJ. With
    `overdue_on`, only those past their due date and not awaiting review of a report:
    `overdue_on` one date for every group, or today by province code (each group's own
    time zone, `local_days`)."""
    args: list[Any] = []
    conditions = where.where(args)
    if overdue_on is None:
        conditions.append("lpj_status IN ('due', 'submitted', 'returned')")
    elif isinstance(overdue_on, dict):
        args.extend([list(overdue_on), list(overdue_on.values())])
        conditions.append(
            f"lpj_status IN ('due', 'returned') AND lpj_due_on < (SELECT d FROM unnest("
            f"${len(args) - 1}::text[], ${len(args)}::date[]) AS z(p, d) "
            f"WHERE z.p = province_code)")
    else:
        args.append(overdue_on)
        conditions.append(f"lpj_status IN ('due', 'returned') AND lpj_due_on < ${len(args)}")
    return await _paged(pool, conditions, args, page, "lpj_due_on, group_id")


def local_days(now: datetime | None = None) -> dict[str, date]:
    """Today in every province's own time zone (shared.localtime), by province code."""
    instant = now or datetime.now(UTC)
    return {province: local_today(province, instant) for province in sorted(ZONES)}
