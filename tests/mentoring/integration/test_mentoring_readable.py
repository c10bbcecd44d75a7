"""Readable results (issue 17): the filing date shown is the one sent, one paging convention,
national and per-province totals in one call."""

from datetime import date

import pytest

from shared.auth import Role
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, headers, report

pytestmark = pytest.mark.integration


async def _mentored(mentoring, regency: str, groups: int, funded_on: date = date(2023, 3, 1),
                    assign: bool = True) -> tuple[str, list[str]]:
    tks, ids = fresh("tks"), [fresh("grp") for _ in range(groups)]
    await mentoring.recruit(tks, regency)
    for g in ids:
        await mentoring.fund(g, regency, funded_on)
    await mentoring.known(tks=(tks,), groups=tuple(ids))
    for g in ids if assign else ():
        r = await mentoring.assign(g, tks, funded_on)
        assert r.status_code == 201, r.text
    return tks, ids


async def _file(mentoring, group: str, tks: str, period: str, filed_on: str):
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=ADMIN,
                                    json={**report(period), "tks_id": tks, "filed_on": filed_on})
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_report_shows_the_filing_date_sent_and_the_time_recorded_apart(mentoring):
    tks, (g1, g2) = await _mentored(mentoring, "3201", 2)
    filed = await _file(mentoring, g1, tks, "2023-05", "2023-06-14")
    assert (filed["filed_on"], filed["on_time"], filed["deadline"]) == (
        "2023-06-14", False, "2023-06-10")
    batch = await mentoring.client.post("/reports/batch", headers=ADMIN, json={"reports": [
        {**report("2023-05"), "group_id": g2, "tks_id": tks, "filed_on": "2023-06-02"}]})
    assert batch.json()["results"][0]["filed_on"] == "2023-06-02", batch.text

    for group, sent in ((g1, "2023-06-14"), (g2, "2023-06-02")):
        view = (await mentoring.client.get(f"/groups/{group}", headers=ADMIN)).json()
        (shown,) = view["reports"]
        assert shown["filed_on"] == sent
        assert shown["recorded_at"][:4] != "2023"  # the server's clock, kept apart
        assert "filed_at" not in shown
    seen = await mentoring.published(
        lambda s: sum(e["type"] == "ReportFiled" for e in s) >= 2)
    assert {e["payload"]["group_id"]: e["payload"]["filed_on"] for e in seen
            if e["type"] == "ReportFiled"} == {g1: "2023-06-14", g2: "2023-06-02"}


async def test_unassigned_groups_page_by_limit_and_offset_up_to_1000(mentoring):
    _, groups = await _mentored(mentoring, "1271", 5, assign=False)
    seen, params = [], {"regency_code": "1271"}
    for offset in (0, 2, 4):
        r = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                       params={**params, "limit": 2, "offset": offset})
        assert r.status_code == 200, r.text
        page = r.json()
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, offset)
        seen += [g["group_id"] for g in page["items"]]
    assert sorted(seen) == sorted(groups)
    default = (await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                          params=params)).json()
    assert (default["limit"], len(default["items"])) == (100, 5)
    over = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                      params={**params, "limit": 1001})
    assert over.status_code == 422, over.text


async def test_stats_give_national_and_per_province_totals_in_one_call(mentoring):
    west_java, (g1, g2, g3) = await _mentored(mentoring, "3201", 3)
    _, (waiting,) = await _mentored(mentoring, "3201", 1, assign=False)
    makassar, (g4,) = await _mentored(mentoring, "7371", 1)
    await _file(mentoring, g1, west_java, "2023-04", "2023-05-05")
    await _file(mentoring, g2, west_java, "2023-04", "2023-05-20")  # late
    await _file(mentoring, g3, west_java, "2023-04", "2023-05-10")
    await _file(mentoring, g4, makassar, "2023-04", "2023-05-02")
    await _file(mentoring, g1, west_java, "2023-05", "2023-06-03")
    for period in ("2023-04", "2023-05"):  # 2023-05: g2, g3 and g4 overdue
        closed = await mentoring.client.post(f"/periods/{period}/close", headers=ADMIN)
        assert closed.status_code == 200, closed.text

    r = await mentoring.client.get("/stats", headers=ADMIN, params={"year": 2023})
    assert r.status_code == 200, r.text
    body = r.json()
    by = {p["province_code"]: p for p in body["provinces"]}
    assert set(by) == {"32", "73"}
    assert by["32"] == {
        "province_code": "32", "groups_funded": 4, "groups_mentored": 3, "groups_unassigned": 1,
        "tks_active": 2, "tks_mentoring": 1, "filed": 4, "on_time": 3, "late": 1,
        "overdue": 2, "due_closed": 6, "compliance_rate": 0.5, "filing_rate": 0.6667}
    assert by["73"] == {
        "province_code": "73", "groups_funded": 1, "groups_mentored": 1, "groups_unassigned": 0,
        "tks_active": 1, "tks_mentoring": 1, "filed": 1, "on_time": 1, "late": 0,
        "overdue": 1, "due_closed": 2, "compliance_rate": 0.5, "filing_rate": 0.5}
    national = body["national"]
    for key in ("groups_funded", "groups_mentored", "tks_active", "filed", "on_time", "late",
                "overdue", "due_closed"):
        assert national[key] == by["32"][key] + by["73"][key]
    assert (national["compliance_rate"], national["filing_rate"]) == (0.5, 0.625)

    month = (await mentoring.client.get("/stats", headers=ADMIN,
                                        params={"year": 2023, "period": "2023-05"})).json()
    assert (month["national"]["filed"], month["national"]["overdue"]) == (1, 3)
    assert month["national"]["compliance_rate"] == 0.25
    other_year = await mentoring.client.get("/stats", headers=ADMIN,
                                            params={"year": 2024, "period": "2023-05"})
    assert (other_year.status_code, other_year.json()["error"]["field"]) == (400, "period")
    officer = await mentoring.client.get("/stats", params={"year": 2023},
                                         headers=headers(Role.PROVINCE, province_code="73"))
    assert [p["province_code"] for p in officer.json()["provinces"]] == ["73"]
    assert officer.json()["national"]["filed"] == 1
    unassigned = (await mentoring.client.get("/groups/unassigned", headers=ADMIN)).json()
    assert [g["group_id"] for g in unassigned["items"]] == [waiting]


async def test_the_tks_listing_counts_each_tks_s_reports_as_its_own_page_does(mentoring):
    west_java, (g1, g2) = await _mentored(mentoring, "3204", 2)
    idle, _ = await _mentored(mentoring, "3204", 0)
    papua, (g3,) = await _mentored(mentoring, "9401", 1)
    await _file(mentoring, g1, west_java, "2023-04", "2023-05-05")
    await _file(mentoring, g2, west_java, "2023-04", "2023-05-20")  # late
    await _file(mentoring, g3, papua, "2023-04", "2023-05-02")
    await _file(mentoring, g1, west_java, "2023-05", "2023-06-03")
    for period in ("2023-04", "2023-05"):  # 2023-05: g2 and g3 overdue
        closed = await mentoring.client.post(f"/periods/{period}/close", headers=ADMIN)
        assert closed.status_code == 200, closed.text

    listed = await mentoring.client.get("/tks", headers=ADMIN,
                                        params={"regency_code": "3204", "limit": 1000})
    assert listed.status_code == 200, listed.text
    page = {t["tks_id"]: t for t in listed.json()["items"]}
    assert {west_java, idle} <= set(page) and papua not in page
    for tks in (west_java, idle):
        own = (await mentoring.client.get(f"/tks/{tks}", headers=ADMIN)).json()
        counts = own["reports"]
        assert (page[tks]["filed"], page[tks]["on_time"], page[tks]["overdue"]) == (
            counts["filed"], counts["on_time"], counts["overdue"])
        assert page[tks]["caseload"] == len(own["groups"])
    assert (page[west_java]["filed"], page[west_java]["on_time"],
            page[west_java]["overdue"]) == (3, 2, 1)
    assert (page[idle]["filed"], page[idle]["overdue"]) == (0, 0)

    officer = headers(Role.PROVINCE, province_code="94")
    own_province = (await mentoring.client.get("/tks", headers=officer)).json()
    assert papua in {t["tks_id"] for t in own_province["items"]}
    assert {t["province_code"] for t in own_province["items"]} == {"94"}
    other = await mentoring.client.get("/tks", headers=officer, params={"province_code": "32"})
    assert other.status_code == 403, other.text
    first = (await mentoring.client.get("/tks", headers=ADMIN, params={"limit": 1})).json()
    assert (len(first["items"]), first["limit"], first["offset"]) == (1, 1, 0)
    assert first["total"] >= 3
