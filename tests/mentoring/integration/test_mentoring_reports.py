import asyncio
from datetime import date

import pytest

from shared.auth import Role
from tests.mentoring.integration.mentoring_helpers import (
    ADMIN,
    fresh,
    headers,
    report,
    tks_headers,
)

pytestmark = pytest.mark.integration


async def _mentored(mentoring, regency: str, funded_on: date, groups: int = 1,
                    assigned_on: date | None = None) -> tuple[str, list[str]]:
    tks, ids = fresh("tks"), [fresh("grp") for _ in range(groups)]
    await mentoring.recruit(tks, regency)
    for g in ids:
        await mentoring.fund(g, regency, funded_on)
    await mentoring.known(tks=(tks,), groups=tuple(ids))
    for g in ids:
        r = await mentoring.assign(g, tks, assigned_on or funded_on)
        assert r.status_code == 201, r.text
    return tks, ids


async def test_a_report_on_a_period_before_funding_is_refused_with_the_reason(mentoring):
    tks, (group,) = await _mentored(mentoring, "3201", date(2023, 4, 10))
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                    json=report("2023-03"))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "period"
    assert error["reason"] == "period 2023-03 ends before the group was funded on 2023-04-10"
    view = (await mentoring.client.get(f"/groups/{group}", headers=ADMIN)).json()
    assert view["reports"] == []
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                    json=report("2023-04"))
    assert r.status_code == 201, r.text
    assert r.json()["on_time"] is False  # filed today, years after the 2023-05-10 deadline


async def test_two_tks_filing_for_the_same_group_and_period_at_once_yield_one_report(mentoring):
    regency = "3273"
    first, groups = await _mentored(mentoring, regency, date(2023, 3, 1), groups=6)
    second = fresh("tks")
    await mentoring.recruit(second, regency)
    await mentoring.known(tks=(second,))
    for g in groups:  # both mentored the groups in May: the first until the 15th
        r = await mentoring.assign(g, second, date(2023, 5, 15))
        assert r.status_code == 201, r.text

    async def file(group: str, tks: str):
        return await mentoring.client.post(
            f"/groups/{group}/reports", headers=ADMIN,
            json=report("2023-05", tks_id=tks, filed_on="2023-06-05", revenue=1_000_000))

    answers = await asyncio.gather(*(file(g, t) for g in groups for t in (first, second)))
    for i in range(len(groups)):
        pair = sorted(a.status_code for a in answers[2 * i:2 * i + 2])
        assert pair == [201, 409], [a.text for a in answers[2 * i:2 * i + 2]]
    async with mentoring.db() as conn:
        reports = await conn.fetchval(
            "SELECT count(*) FROM monthly_reports WHERE group_id = ANY($1)", groups)
        filed_events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'ReportFiled'")
    assert (reports, filed_events) == (len(groups), len(groups))
    summary = (await mentoring.client.get(f"/regencies/{regency}/summary", headers=ADMIN,
                                          params={"period": "2023-05"})).json()
    assert (summary["filed"], summary["revenue"]) == (len(groups), len(groups) * 1_000_000)


async def test_a_tks_files_and_amends_its_own_reports_and_problems_stay_internal(mentoring):
    regency = "6501"
    tks, (group,) = await _mentored(mentoring, regency, date(2023, 3, 1))
    other = fresh("tks")
    secret = f"bendahara kelompok sakit {fresh('x')}"
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(other),
                                    json=report("2023-03", tks_id=tks))
    assert r.status_code == 403
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                    json=report("2023-03", filed_on="2023-04-02"))
    assert (r.status_code, r.json()["error"]["field"]) == (403, "filed_on")
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                    json=report("2023-03", problems=secret))
    assert r.status_code == 201, r.text
    r = await mentoring.client.put(f"/groups/{group}/reports/2023-03", headers=tks_headers(tks),
                                   json={k: v for k, v in report("2023-03", revenue=7_500_000,
                                                                 problems=secret).items()
                                         if k != "period"})
    assert (r.status_code, r.json()["amended"]) == (200, True)

    view = (await mentoring.client.get(f"/groups/{group}", headers=tks_headers(tks))).json()
    (march,) = view["reports"]
    assert (march["revenue"], march["problems"], march["amendments"]) == (7_500_000, secret, 1)
    assert (await mentoring.client.get(f"/groups/{group}",
                                       headers=tks_headers(other))).status_code == 403
    summary = (await mentoring.client.get("/provinces/65/summary", headers=headers(
        Role.AGENCY, "bps"), params={"year": 2023})).json()
    assert (summary["filed"], summary["revenue"]) == (1, 7_500_000)

    events = await mentoring.published(
        until=lambda seen: any(e["type"] == "ReportAmended" and e["key"] == f"group-{group}"
                               for e in seen))
    mine = [e for e in events if e["key"] == f"group-{group}"]
    assert [e["type"] for e in mine] == ["MentorAssigned", "ReportFiled", "ReportAmended"]
    assert all(secret.encode() not in e["raw"] and "problems" not in e["payload"] for e in mine)


async def test_a_batch_files_many_reports_and_answers_each_item(mentoring):
    regency = "5171"  # Kota Denpasar
    tks, groups = await _mentored(mentoring, regency, date(2023, 3, 1), groups=3)
    late_group = fresh("grp")
    await mentoring.fund(late_group, regency, date(2023, 5, 2))
    await mentoring.known(groups=(late_group,))
    assert (await mentoring.assign(late_group, tks, date(2023, 5, 2))).status_code == 201
    items = [report("2023-04", group_id=g, tks_id=tks, filed_on="2023-05-08", revenue=2_000_000)
             for g in groups]
    items += [report("2023-05", group_id=g, tks_id=tks, filed_on="2023-06-11") for g in groups]
    items += [report("2023-04", group_id=late_group, tks_id=tks, filed_on="2023-05-08"),
              report("2023-04", group_id=groups[0], tks_id=tks),
              report("2023-04", group_id=fresh("grp"), tks_id=tks)]
    r = await mentoring.client.post("/reports/batch", headers=ADMIN, json={"reports": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["filed"], body["refused"]) == (6, 3)
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    assert {x["on_time"] for x in results[:3]} == {True}
    assert {x["on_time"] for x in results[3:6]} == {False}
    assert {x["status"] for x in results[:6]} == {"filed"}
    errors = [(x["status"], x["error"]["status"], x["error"]["field"]) for x in results[6:]]
    assert errors == [("refused", 422, "period"), ("refused", 409, "period"),
                      ("refused", 404, "group_id")]
    assert "before the group was funded" in results[6]["error"]["reason"]
    assert "twice" in results[7]["error"]["reason"]

    r = await mentoring.client.post("/reports/batch", headers=tks_headers(tks),
                                    json={"reports": [report("2023-06", group_id=groups[0])]})
    assert (r.status_code, r.json()["filed"]) == (200, 1)
    view = (await mentoring.client.get(f"/tks/{tks}", headers=tks_headers(tks))).json()
    assert view["reports"]["filed"] == 7 and view["reports"]["on_time"] == 3
    assert view["caseload"] == 4


async def test_only_the_tks_who_filed_a_report_may_amend_it(mentoring):
    regency = "6502"
    first, (group,) = await _mentored(mentoring, regency, date(2023, 3, 1))
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(first),
                                    json=report("2023-04", revenue=2_000_000))
    assert r.status_code == 201, r.text
    second = fresh("tks")  # takes the group over on 15 April: both mentored it that month
    await mentoring.recruit(second, regency)
    await mentoring.known(tks=(second,))
    assert (await mentoring.assign(group, second, date(2023, 4, 15))).status_code == 201

    def amendment(**changes) -> dict:
        return {k: v for k, v in report("2023-04", **changes).items() if k != "period"}

    path = f"/groups/{group}/reports/2023-04"
    r = await mentoring.client.put(path, headers=tks_headers(second),
                                   json=amendment(revenue=1))
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert (error["field"], error["filed_by"]) == ("tks_id", first)
    assert "only that TKS may amend it" in error["reason"]
    r = await mentoring.client.put(path, headers=ADMIN, json=amendment(revenue=1, tks_id=second))
    assert r.status_code == 403, r.text

    r = await mentoring.client.put(path, headers=ADMIN, json=amendment(revenue=3_000_000))
    assert (r.status_code, r.json()["tks_id"]) == (200, first), r.text
    r = await mentoring.client.put(path, headers=tks_headers(first),
                                   json=amendment(revenue=4_000_000))
    assert (r.status_code, r.json()["tks_id"], r.json()["amended"]) == (200, first, True)
    (april,) = (await mentoring.client.get(f"/groups/{group}", headers=ADMIN)).json()["reports"]
    assert (april["tks_id"], april["revenue"], april["amendments"]) == (first, 4_000_000, 2)
    async with mentoring.db() as conn:
        authors = await conn.fetch(
            "SELECT payload->>'tks_id' AS tks_id FROM events WHERE stream_id = $1 "
            "AND event_type IN ('ReportFiled', 'ReportAmended')", f"group-{group}")
    assert {a["tks_id"] for a in authors} == {first}


async def test_figures_beyond_any_group_are_refused_with_the_field_not_a_server_error(
        mentoring):
    tks, (group,) = await _mentored(mentoring, "3204", date(2023, 3, 1))
    too_big = [("revenue", 10**16), ("production_units", 10**19), ("members_active", 2**31),
               ("new_workers", 2**31), ("members_active", 1_001)]
    for field, value in too_big:
        r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                        json=report("2023-04", **{field: value}))
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), r.text
        r = await mentoring.client.post("/reports/batch", headers=ADMIN, json={"reports": [
            {**report("2023-04", **{field: value}), "group_id": group, "tks_id": tks}]})
        assert (r.status_code, r.json()["error"]["field"]) == (422, f"reports.0.{field}"), r.text
    r = await mentoring.client.post(f"/groups/{group}/reports", headers=tks_headers(tks),
                                    json=report("2023-04", members_active=1_000))
    assert r.status_code == 201, r.text
    r = await mentoring.client.put(f"/groups/{group}/reports/2023-04", headers=tks_headers(tks),
                                   json=report("2023-04", revenue=2**63))
    assert (r.status_code, r.json()["error"]["field"]) == (422, "revenue"), r.text


async def test_a_huge_offset_is_refused_not_a_server_error(mentoring):
    for offset in ("99999999999999999999", "1000001"):
        r = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                       params={"offset": offset})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "query.offset"), r.text
    r = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                   params={"offset": 1_000_000})
    assert r.status_code == 200, r.text
