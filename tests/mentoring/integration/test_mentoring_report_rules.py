"""What mentoring checks before it accepts a monthly report: the month has ended and the filing
date is today, both in the group's time zone (shared.localtime), and the author's contract
covers the month."""

from datetime import UTC, date, datetime

import pytest

from services.mentoring import handlers
from tests.mentoring.integration.mentoring_helpers import (
    ADMIN,
    fresh,
    report,
    tks_headers,
)
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


async def _mentored(mentoring, regency: str, funded_on: date, *, groups: int = 1,
                    contract: tuple[date, date] | None = None) -> tuple[str, list[str]]:
    tks, ids = fresh("tks"), [fresh("grp") for _ in range(groups)]
    await mentoring.recruit(tks, regency, year=funded_on.year, contract=contract)
    for g in ids:
        await mentoring.fund(g, regency, funded_on)
    await mentoring.known(tks=(tks,), groups=tuple(ids))
    for g in ids:
        r = await mentoring.assign(g, tks, funded_on)
        assert r.status_code == 201, r.text
    return tks, ids


def _clock(monkeypatch, instant: str) -> None:
    at = datetime.fromisoformat(instant).replace(tzinfo=UTC)
    monkeypatch.setattr(handlers, "now", lambda: at)


async def _file(mentoring, group: str, tks: str, period: str, **changes):
    return await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                       json=report(period, **changes))


async def test_a_report_on_the_current_unfinished_month_is_refused(mentoring, monkeypatch):
    tks, (group,) = await _mentored(mentoring, "3201", date(2023, 4, 3))
    _clock(monkeypatch, "2023-06-15T03:00:00")
    r = await _file(mentoring, group, tks, "2023-06")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "period"
    assert error["reason"] == ("period 2023-06 has not ended: it can be reported from "
                               "2023-07-01 (filed on 2023-06-15, the date in the group's "
                               "time zone)")
    assert (await _file(mentoring, group, tks, "2023-05")).status_code == 201
    view = (await mentoring.client.get(f"/groups/{group}", headers=ADMIN)).json()
    assert [r["period"] for r in view["reports"]] == ["2023-05"]


async def test_a_month_has_ended_in_papua_hours_before_it_has_in_java(mentoring, monkeypatch):
    papua_tks, (papua,) = await _mentored(mentoring, "9471", date(2023, 4, 3))
    java_tks, (java,) = await _mentored(mentoring, "3201", date(2023, 4, 3))
    _clock(monkeypatch, "2023-06-30T16:30:00")  # 01:30 on 1 July WIT, 23:30 on 30 June WIB
    r = await _file(mentoring, papua, papua_tks, "2023-06")
    assert r.status_code == 201, r.text
    assert r.json()["on_time"] is True
    r = await _file(mentoring, java, java_tks, "2023-06")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "period"
    assert "has not ended" in r.json()["error"]["reason"]


async def test_a_tks_whose_contract_ended_may_not_report_on_later_months(mentoring,
                                                                         monkeypatch):
    tks, (group,) = await _mentored(mentoring, "3273", date(2021, 3, 1),
                                    contract=(date(2021, 1, 4), date(2021, 12, 31)))
    _clock(monkeypatch, "2022-08-15T03:00:00")
    r = await _file(mentoring, group, tks, "2022-06")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "tks_id"
    assert error["reason"] == (f"TKS {tks} has no contract covering period 2022-06: its "
                               "contract runs from 2021-01-04 to 2021-12-31")
    assert (error["contract_start"], error["contract_end"]) == ("2021-01-04", "2021-12-31")
    # the administrator loading history is held to the same contract
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=ADMIN, json=report(
        "2022-01", tks_id=tks, filed_on="2022-02-05"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "tks_id", r.text
    # a month the contract covered is still accepted, late
    r = await _file(mentoring, group, tks, "2021-12")
    assert r.status_code == 201, r.text
    assert r.json()["on_time"] is False


async def test_a_renewal_extends_the_contract_a_tks_reports_under(mentoring, monkeypatch):
    tks, (group,) = await _mentored(mentoring, "3578", date(2023, 2, 1))
    await mentoring.recruit(tks, "3578", year=2024)  # the next year, following on

    async def renewed():
        async with mentoring.db() as conn:
            return await conn.fetchrow("SELECT contract_start, contract_end FROM mentors "
                                       "WHERE tks_id = $1 AND contract_end > '2024-01-01'", tks)

    assert tuple(await eventually(renewed)) == (date(2023, 1, 1), date(2024, 12, 31))
    _clock(monkeypatch, "2024-03-02T03:00:00")
    for period in ("2023-12", "2024-02"):
        r = await _file(mentoring, group, tks, period)
        assert r.status_code == 201, r.text


async def test_a_report_filed_at_0830_wit_is_dated_in_wit(mentoring, monkeypatch):
    tks, (on_deadline, after) = await _mentored(mentoring, "9171", date(2023, 4, 3), groups=2)
    _clock(monkeypatch, "2023-06-09T23:30:00")  # 08:30 WIT on the deadline day, 10 June
    r = await _file(mentoring, on_deadline, tks, "2023-05")
    assert r.status_code == 201, r.text
    assert (r.json()["on_time"], r.json()["deadline"]) == (True, "2023-06-10")
    _clock(monkeypatch, "2023-06-10T23:30:00")  # 08:30 WIT on 11 June: UTC still says the 10th
    r = await _file(mentoring, after, tks, "2023-05")
    assert r.status_code == 201, r.text
    assert r.json()["on_time"] is False
    # the date a TKS app sends is checked against the same local day
    r = await _file(mentoring, after, tks, "2023-04", filed_on="2023-06-10")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["reason"] == ("only ministry_admin may record another filing date "
                                           "than today (2023-06-11 in the group's time zone)")


async def test_a_tks_app_sending_its_local_date_before_seven_wib_is_accepted(mentoring,
                                                                            monkeypatch):
    tks, (single, batched) = await _mentored(mentoring, "3171", date(2023, 4, 3), groups=2)
    _clock(monkeypatch, "2023-06-04T23:00:00")  # 06:00 WIB on 5 June
    r = await _file(mentoring, single, tks, "2023-05", filed_on="2023-06-05")
    assert r.status_code == 201, r.text
    assert r.json()["on_time"] is True
    r = await mentoring.client.post("/reports/batch", headers=tks_headers(tks), json={
        "reports": [report("2023-05", group_id=batched, filed_on="2023-06-05"),
                    report("2023-04", group_id=batched, filed_on="2023-06-04")]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["filed", "refused"]
    assert results[1]["error"]["field"] == "filed_on"
    # the UTC date is yesterday in Jakarta: a TKS may not send it
    r = await _file(mentoring, single, tks, "2023-04", filed_on="2023-06-04")
    assert r.status_code == 403, r.text
