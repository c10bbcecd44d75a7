"""The assignment policy is a rule of each programme year (issue 17, items 1 and 4): readable
and changeable through the API, applied to each group by its own year."""

from datetime import date

import pytest

from shared.auth import Role
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, headers

pytestmark = pytest.mark.integration


async def test_a_year_whose_groups_found_no_mentor_gets_them_under_a_same_province_policy(
        mentoring):
    client = mentoring.client
    tks = fresh("tks")  # serves 3201 (Kab. Bogor), 2021 to 2023
    await mentoring.recruit(tks, "3201", year=2021, contract=(date(2021, 1, 1),
                                                             date(2023, 12, 31)))
    old, new = fresh("grp-2021"), fresh("grp-2023")  # in regencies without a TKS
    await mentoring.fund(old, "3202", date(2021, 3, 1))
    await mentoring.fund(new, "3203", date(2023, 3, 1))
    await mentoring.known(tks=(tks,), groups=(old, new))

    shipped = (await client.get("/rules/2021", headers=ADMIN)).json()
    assert (shipped["version"], shipped["actor"], shipped["year_defined"]) == (1, "system", 2021)
    assert shipped["rules"]["assignment"] == {"caseload_cap": 25, "allow_same_province": False}
    body = {"province_code": "32", "on_funding_date": True}
    stock = (await client.post("/assignments/suggestions/apply", headers=ADMIN,
                               json=body)).json()
    assert stock["assigned"] == 0
    assert sorted(u["group_id"] for u in stock["unplaced"]) == sorted([old, new])

    lenient = {"assignment": {"caseload_cap": 25, "allow_same_province": True}}
    officer = headers(Role.PROVINCE, province_code="32")
    refused = await client.put("/rules/2021", headers=officer, json={"rules": lenient})
    assert refused.status_code == 403, refused.text
    invalid = await client.put("/rules/2021", headers=ADMIN, json={
        "rules": {"assignment": {"caseload_cap": 0, "allow_same_province": True}}})
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["error"]["field"] == "rules.assignment.caseload_cap"
    adopted = await client.put("/rules/2021", headers=ADMIN, json={
        "rules": lenient, "note": "2021: groups of regencies without a TKS go to the province"})
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["version"] == 2  # the refused ones adopted nothing
    assert (await client.get("/rules/2022", headers=ADMIN)).json()["rules"] == lenient

    applied = (await client.post("/assignments/suggestions/apply", headers=ADMIN,
                                 json=body)).json()
    assert applied["assigned"] == 1, applied
    # the 2021 group under 2021's new policy; the 2023 group keeps 2023's (same regency)
    assert [u["group_id"] for u in applied["unplaced"]] == [new]
    group = (await client.get(f"/groups/{old}", headers=ADMIN)).json()
    assert (group["tks_id"], group["assigned_on"]) == (tks, "2021-03-01")
    direct = await mentoring.assign(new, tks, date(2023, 3, 1))
    assert direct.status_code == 422, direct.text
    assert direct.json()["error"]["field"] == "tks_id"

    versions = (await client.get("/rules/2021/versions", headers=ADMIN)).json()
    assert [v["version"] for v in versions["items"]] == [1, 2]
    assert versions["items"][1]["actor"] != "system"


async def test_the_caseload_cap_of_the_groups_year_decides(mentoring):
    client = mentoring.client
    tks = fresh("tks")
    await mentoring.recruit(tks, "7371", year=2021, contract=(date(2021, 1, 1),
                                                             date(2023, 12, 31)))
    groups = [fresh("grp") for _ in range(3)]
    for g in groups:
        await mentoring.fund(g, "7371", date(2021, 4, 1))
    await mentoring.known(tks=(tks,), groups=tuple(groups))
    r = await client.put("/rules/2021", headers=ADMIN, json={
        "rules": {"assignment": {"caseload_cap": 2, "allow_same_province": False}}})
    assert r.status_code == 200, r.text
    for g in groups[:2]:
        assert (await mentoring.assign(g, tks, date(2021, 4, 1))).status_code == 201
    full = await mentoring.assign(groups[2], tks, date(2021, 4, 1))
    assert full.status_code == 422, full.text
    assert "cap" in full.json()["error"]["reason"]
    view = (await client.get(f"/tks/{tks}", headers=ADMIN)).json()
    assert (view["caseload"], view["caseload_cap"]) == (2, 2)
