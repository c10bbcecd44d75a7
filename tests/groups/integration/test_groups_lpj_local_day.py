"""The LPJ overdue list decides "today" in each group's own time zone (issue 17, item 5): at
16:30 UTC it is already tomorrow in Bali (WITA) but still today in West Java (WIB)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from services.groups import views
from tests.groups.groups_support import ADMIN, fund, registration

pytestmark = pytest.mark.integration
DUE = date(2026, 12, 1)
INSTANT = datetime(2026, 12, 1, 16, 30, tzinfo=UTC)  # 23:30 WIB, 00:30 WITA (2 December)


def test_today_by_province_at_the_day_boundary():
    days = views.local_days(INSTANT)
    assert (days["32"], days["51"], days["94"]) == (DUE, DUE + timedelta(days=1),
                                                    DUE + timedelta(days=1))


async def _funded(groups, regency: str) -> str:
    body = registration(regency, year=2026)
    group_id = (await groups.client.post("/groups", json=body, headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    paid = await fund(groups.client, group_id, {
        "tranche": 1, "amount": 20_000_000, "budget_year": 2026,
        "disbursed_on": (DUE - timedelta(days=90)).isoformat()})
    assert paid["lpj_due_on"] == DUE.isoformat()
    return group_id


async def test_an_lpj_due_today_is_overdue_where_today_has_ended(groups):
    java, bali = await _funded(groups, "3201"), await _funded(groups, "5171")
    pool = await asyncpg.create_pool(groups.database_url, min_size=1, max_size=2)
    try:
        listed = await views.lpj_outstanding(pool, views.GroupFilter(year=2026),
                                             views.Page(1000, 0), views.local_days(INSTANT))
        ids = {g["group_id"] for g in listed["items"]}
        assert bali in ids and java not in ids
        # one date for every group, as `as_of` gives
        same = await views.lpj_outstanding(pool, views.GroupFilter(year=2026),
                                           views.Page(1000, 0), DUE + timedelta(days=1))
        assert {java, bali} <= {g["group_id"] for g in same["items"]}
    finally:
        await pool.close()
