"""A month's close reads the month's reports once, however stale the tables' statistics: in the
demo year the close ran right after thousands of filings the statistics had not seen, and a
join planned on them (the month's reports estimated at one row) rescanned every report of the
month for each group, 0.9-6 s a close while the next month's filings waited. The plan is taken
with statistics of January to October and November's reports unseen, autovacuum kept away."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

import services.mentoring
from services.mentoring import views
from shared.eventstore import migrate

pytestmark = pytest.mark.integration

GROUPS = 2000
MIGRATIONS = Path(services.mentoring.__file__).parent / "migrations"


class _Explaining:
    """A connection that answers `fetch` with the statement's plan as it ran, kept in `plan`."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn, self.plan = conn, ""

    async def fetch(self, sql: str, *args) -> list:
        rows = await self.conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *args)
        self.plan = "\n".join(r[0] for r in rows)
        return []


async def test_the_due_groups_of_a_month_are_found_by_key_on_stale_statistics(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "mentoring", MIGRATIONS)
        for table in ("mentored_groups", "mentor_assignments", "monthly_reports"):
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        await conn.execute(
            "INSERT INTO mentored_groups (group_id, province_code, regency_code, year, "
            "funded_on, tks_id, assigned_on) SELECT 'g' || i, '32', '3201', 2023, "
            "date '2023-01-02', 't' || (i % 300), date '2023-01-05' "
            "FROM generate_series(1, $1) i", GROUPS)
        await conn.execute(
            "INSERT INTO mentor_assignments (group_id, stream_version, tks_id, assigned_on) "
            "SELECT group_id, 1, tks_id, assigned_on FROM mentored_groups")
        reports = ("INSERT INTO monthly_reports (group_id, period, tks_id, province_code, "
                   "regency_code, revenue, production_units, production_unit, members_active, "
                   "new_workers, partnership, capital_access, market_access, lpj_help, "
                   "on_time, filed_at, filed_on) SELECT group_id, $1, tks_id, '32', '3201', 1, "
                   "1, 'kg', 10, 0, false, false, false, false, true, now(), current_date "
                   "FROM mentored_groups")
        for month in range(1, 11):  # January to October, seen by the statistics
            await conn.execute(reports, f"2023-{month:02d}")
        await conn.execute("ANALYZE mentored_groups, mentor_assignments, monthly_reports")
        await conn.execute(reports, "2023-11")  # unseen: estimated at a row

        explaining = _Explaining(conn)
        await views.due_groups(explaining, "2023-11")  # type: ignore[arg-type]
        plan = explaining.plan
        # the month's reports read once (a hashed set) or looked up by key, never rescanned
        # for each group
        assert "Join Filter" not in plan and "Materialize" not in plan, plan
        reads = [line for line in plan.splitlines() if "on monthly_reports" in line]
        assert reads and all("loops=1)" in line or "monthly_reports_pkey" in line
                             for line in reads), plan
        due = await views.due_groups(conn, "2023-11")
        assert len(due) == GROUPS and all(d.filed for d in due)
        december = await views.due_groups(conn, "2023-12")  # every group due, none filed
        assert len(december) == GROUPS and not any(d.filed for d in december)
    finally:
        await conn.close()
