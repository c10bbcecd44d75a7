import asyncio
from datetime import date, timedelta

import pytest

from services.mentoring import handlers
from services.mentoring.config import PeriodCloseRules, load_config
from services.mentoring.domain import deadline_of, period_bounds, period_of
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, report
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


async def _setup(mentoring, regency: str, funded: dict[str, date],
                 assigned_on: date) -> str:
    tks = fresh("tks")
    await mentoring.recruit(tks, regency, year=assigned_on.year)
    for g, on in funded.items():
        await mentoring.fund(g, regency, on)
    await mentoring.known(tks=(tks,), groups=tuple(funded))
    for g, on in funded.items():
        r = await mentoring.assign(g, tks, max(on, assigned_on))
        assert r.status_code == 201, r.text
    return tks


async def test_after_close_the_overdue_list_equals_due_minus_filed(mentoring):
    period = "2024-02"
    due = [fresh("grp") for _ in range(5)]
    later = fresh("grp")  # funded after February: nothing due for it
    unmentored = fresh("grp")  # never assigned: nothing due either
    tks = await _setup(mentoring, "3201", {**{g: date(2024, 1, 2) for g in due},
                                           later: date(2024, 3, 5)}, date(2024, 1, 5))
    await mentoring.fund(unmentored, "3201", date(2024, 1, 2))
    await mentoring.known(groups=(unmentored,))
    filed = due[:2]
    r = await mentoring.client.post("/reports/batch", headers=ADMIN, json={"reports": [
        report(period, group_id=g, tks_id=tks, filed_on="2024-03-08") for g in filed]})
    assert r.json()["filed"] == 2, r.text

    r = await mentoring.client.post(f"/periods/{period}/close", headers=ADMIN)
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["due"], first["filed"], first["overdue"]) == (5, 2, 3)
    r = await mentoring.client.get(f"/periods/{period}/overdue", headers=ADMIN)
    overdue = {row["group_id"] for row in r.json()["overdue"]}
    assert overdue == set(due) - set(filed)
    assert {row["tks_id"] for row in r.json()["overdue"]} == {tks}

    again = await mentoring.client.post(f"/periods/{period}/close", headers=ADMIN)
    assert (again.status_code, again.json()) == (200, first)
    async with mentoring.db() as conn:
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE event_type = 'ReportOverdue') AS overdue, "
            "count(*) FILTER (WHERE event_type = 'PeriodClosed') AS closed FROM events")
    assert (counts["overdue"], counts["closed"]) == (3, 1)

    events = await mentoring.published(
        until=lambda seen: any(e["type"] == "PeriodClosed" for e in seen))
    flagged = {e["key"] for e in events if e["type"] == "ReportOverdue"}
    assert flagged == {f"group-{g}" for g in overdue}
    (closed,) = [e for e in events if e["type"] == "PeriodClosed"]
    assert closed["key"] == f"period-{period}"
    assert closed["payload"] == {"period": period, "due": 5, "filed": 2, "overdue": 3}

    r = await mentoring.client.post(f"/groups/{due[4]}/reports", headers=ADMIN,
                                    json=report(period, tks_id=tks))
    assert r.status_code == 422 and "closed" in r.json()["error"]["reason"]
    view = (await mentoring.client.get(f"/tks/{tks}", headers=ADMIN)).json()
    assert (view["reports"]["filed"], view["reports"]["overdue"]) == (2, 3)
    summary = (await mentoring.client.get("/regencies/3201/summary", headers=ADMIN,
                                          params={"period": period})).json()
    assert (summary["compliance_rate"], summary["filing_rate"]) == (0.4, 0.4)


async def _blocked(mentoring, query_part: str, wait_events: tuple[str, ...]) -> bool:
    async with mentoring.db() as conn:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = ANY($1) AND query LIKE $2",
            list(wait_events), f"%{query_part}%"))


async def test_a_close_waits_for_a_filing_in_flight_and_counts_it(mentoring):
    period, regency = "2024-05", "3578"
    first, in_flight = fresh("grp"), fresh("grp")
    tks = await _setup(mentoring, regency, {first: date(2024, 4, 1), in_flight: date(2024, 4, 1)},
                       date(2024, 4, 1))

    async def file(group: str):
        return await mentoring.client.post(f"/groups/{group}/reports", headers=ADMIN,
                                           json=report(period, tks_id=tks))

    assert (await file(first)).status_code == 201
    async with mentoring.db() as blocker:
        # hold the filing of `in_flight` after its checks, just before it commits: its update
        # of the regency's totals waits for this row lock
        held = blocker.transaction()
        await held.start()
        await blocker.execute("SELECT 1 FROM report_totals WHERE regency_code = $1 "
                              "AND period = $2 FOR UPDATE", regency, period)
        filing = asyncio.create_task(file(in_flight))
        await eventually(lambda: _blocked(mentoring, "report_totals",
                                          ("tuple", "transactionid")), timeout=20)
        closing = asyncio.create_task(
            mentoring.client.post(f"/periods/{period}/close", headers=ADMIN))
        await eventually(lambda: _blocked(mentoring, "pg_advisory_xact_lock", ("advisory",)),
                         timeout=20)
        await held.rollback()
        filed, closed = await filing, await closing
    assert filed.status_code == 201, filed.text
    assert (closed.json()["due"], closed.json()["filed"], closed.json()["overdue"]) == (2, 2, 0)
    r = await mentoring.client.get(f"/periods/{period}/overdue", headers=ADMIN)
    assert r.json()["overdue"] == []


async def test_a_month_closes_only_after_its_deadline_unless_an_administrator_forces_it(
        mentoring):
    this_month = period_of(handlers.today())
    r = await mentoring.client.post(f"/periods/{this_month}/close", headers=ADMIN)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "period" and "deadline" in r.json()["error"]["reason"]
    r = await mentoring.client.get(f"/periods/{this_month}", headers=ADMIN)
    assert r.json()["closed"] is False
    r = await mentoring.client.post(f"/periods/{this_month}/close", headers=ADMIN,
                                    params={"force": "true"})
    assert r.status_code == 200, r.text
    assert (await mentoring.client.get(f"/periods/{this_month}", headers=ADMIN)).json()["closed"]


async def test_months_whose_deadline_just_passed_close_by_themselves(mentoring):
    today = handlers.today()
    month = period_of(today)
    while deadline_of(month, 10) >= today:  # the latest month past its deadline
        month = period_of(period_bounds(month)[0] - timedelta(days=1))
    first, _ = period_bounds(month)
    group = fresh("grp")
    await _setup(mentoring, "3201", {group: first - timedelta(days=20)},
                 first - timedelta(days=10))
    automatic = load_config().model_copy(update={"period_close": PeriodCloseRules(
        automatic=True, check_interval_seconds=1, window_days=45)})
    closed = await handlers.close_due_periods(mentoring.app.state.ctx, automatic, today)
    assert month in {c["period"] for c in closed}
    r = await mentoring.client.get(f"/periods/{month}/overdue", headers=ADMIN)
    assert [row["group_id"] for row in r.json()["overdue"]] == [group]
    # history outside the window is left for an explicit close
    r = await mentoring.client.get("/periods/2023-01", headers=ADMIN)
    assert r.json()["closed"] is False
    assert await handlers.close_due_periods(mentoring.app.state.ctx, automatic, today) == []
