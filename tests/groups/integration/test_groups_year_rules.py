"""The groups service applies the rules of each group's programme year, adopted through the API,
and the ministry registers a past year's groups as they happened (issue 17, items 1-2)."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import asyncpg
import pytest

from shared.auth import Role
from shared.localtime import local_today
from shared.nik import random_valid_nik
from tests.groups.groups_support import (
    ADMIN,
    CSV_HEADER,
    auth,
    csv_file,
    csv_rows,
    fund,
    registration,
    rng,
)

pytestmark = pytest.mark.integration
PROVINCE_32 = auth(Role.PROVINCE, "32")


def person(born: date) -> dict:
    return {"nik": random_valid_nik(rng(), regency_code="3201", birth_date=born),
            "name": f"Anggota {uuid.uuid4().hex[:6]}"}


async def test_the_shipped_rules_are_listed_and_a_year_follows_the_last_defined(groups):
    listed = (await groups.client.get("/rules", headers=auth(Role.AGENCY))).json()
    shipped = {i["year"]: i for i in listed["items"]}
    assert {2021, 2023} <= set(shipped)
    assert shipped[2021]["actor"] == "system" and shipped[2021]["version"] == 1
    y2022 = (await groups.client.get("/rules/2022", headers=ADMIN)).json()
    assert (y2022["year"], y2022["year_defined"]) == (2022, 2021)
    assert y2022["rules"]["members"]["max_count"] == 16
    y2030 = (await groups.client.get("/rules/2030", headers=ADMIN)).json()
    assert y2030["year_defined"] == 2023 and y2030["rules"]["members"]["max_count"] == 10


async def test_a_group_of_16_is_registered_in_2021_and_refused_in_2023(groups):
    old = registration(members=16, year=2021)
    created = await groups.client.post("/groups", json=old, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["member_count"] == 16
    refused = await groups.client.post("/groups", json=registration(members=16, year=2023),
                                       headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "members"
    assert "a 2023 group has 10 members, not 16" in refused.json()["error"]["reason"]


async def test_adopted_rules_decide_for_their_year_and_the_later_ones(groups):
    base = (await groups.client.get("/rules/2023", headers=ADMIN)).json()["rules"]
    rules = {**base, "members": {**base["members"], "min_count": 12, "max_count": 12},
             "funding": {**base["funding"], "ceiling_per_group": 15_000_000,
                         "tools_percent": 70, "materials_percent": 30}}
    # only the ministry adopts rules, and only valid ones
    body = {"rules": rules, "note": "Kepmen uji 2090"}
    assert (await groups.client.put("/rules/2090", json=body,
                                    headers=PROVINCE_32)).status_code == 403
    bad = {**rules, "members": {**rules["members"], "max_count": 0}}
    refused = await groups.client.put("/rules/2090", json={"rules": bad}, headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "rules.members.max_count"
    assert (await groups.client.get("/rules/2090/versions", headers=ADMIN)).status_code == 404

    adopted = await groups.client.put("/rules/2090", json=body, headers=ADMIN)
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["version"] == 1
    assert adopted.json()["actor"].startswith("ministry_admin:")
    assert adopted.json()["note"] == "Kepmen uji 2090"

    # 2091 follows 2090's rules; 2089 still follows 2023's
    later = registration(members=12, year=2091)
    created = await groups.client.post("/groups", json=later, headers=ADMIN)
    assert created.status_code == 201, created.text
    before = await groups.client.post("/groups", json=registration(members=12, year=2089),
                                      headers=ADMIN)
    assert before.status_code == 422 and "a 2089 group has 10 members" in before.text

    # a new version of 2090: the next command decides with it
    again = await groups.client.put("/rules/2090", headers=ADMIN, json={"rules": {
        **rules, "members": {**rules["members"], "min_count": 10, "max_count": 16}}})
    assert again.json()["version"] == 2
    versions = (await groups.client.get("/rules/2090/versions", headers=ADMIN)).json()
    assert [v["version"] for v in versions["items"]] == [1, 2]
    assert (await groups.client.post("/groups", json=registration(members=16, year=2095),
                                     headers=ADMIN)).status_code == 201


async def test_funding_takes_the_ceiling_split_and_four_eyes_of_the_group_year(groups):
    base = (await groups.client.get("/rules/2021", headers=ADMIN)).json()["rules"]
    assert set(base["four_eyes"]["commands"]) == {"fund", "change_tranche", "accept_lpj"}
    # a year whose rules want four eyes only from Rp 16,000,000 on
    four_eyes = {**base["four_eyes"], "commands": {"fund": {
        "makers": ["ministry_admin"], "checkers": ["ministry_admin"], "threshold": 16_000_000}}}
    rules = {**base, "funding": {**base["funding"], "ceiling_per_group": 15_000_000,
                                 "tools_percent": 70, "materials_percent": 30},
             "lpj": {"due_days": 30}, "four_eyes": four_eyes}
    assert (await groups.client.put("/rules/2019", json={"rules": rules},
                                    headers=ADMIN)).status_code == 200
    body = registration(members=16, year=2019)
    group_id = (await groups.client.post("/groups", json=body, headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    fund_2019 = {"tranche": 1, "amount": 20_000_000, "disbursed_on": "2019-06-01",
                 "budget_year": 2019}
    over = await groups.client.post(f"/groups/{group_id}/funding", json=fund_2019,
                                    headers=ADMIN)
    assert over.status_code == 422 and over.json()["error"]["ceiling"] == 15_000_000
    # under the year's threshold: the ministry funds at once, a provincial officer may not
    officer = await groups.client.post(f"/groups/{group_id}/funding", headers=PROVINCE_32,
                                       json={**fund_2019, "amount": 15_000_000})
    assert (officer.status_code, officer.json()["error"]["field"]) == (403, "Authorization")
    ok = await groups.client.post(f"/groups/{group_id}/funding", headers=ADMIN,
                                  json={**fund_2019, "amount": 15_000_000})
    assert ok.status_code == 201, ok.text
    assert (ok.json()["planned_tools"], ok.json()["planned_materials"]) == (10_500_000,
                                                                            4_500_000)
    assert ok.json()["lpj_due_on"] == "2019-07-01"
    # a 2023 group keeps 2023's ceiling and split, and its four eyes on every amount
    body = registration(members=10, year=2023)
    other = (await groups.client.post("/groups", json=body, headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{other}/approval", headers=ADMIN)
    paid = await fund(groups.client, other, {
        "tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01", "budget_year": 2023})
    assert (paid["planned_tools"], paid["planned_materials"]) == (12_000_000, 8_000_000)
    assert paid["lpj_due_on"] == "2023-08-30"


async def test_four_eyes_rules_admit_only_deciding_roles_and_known_commands(groups):
    base = (await groups.client.get("/rules/2023", headers=ADMIN)).json()["rules"]
    fund_rule = base["four_eyes"]["commands"]["fund"]
    for commands, field in (
            ({"fund": {**fund_rule, "checkers": ["tks"]}}, "checkers"),
            ({"fund": {**fund_rule, "makers": ["auditor"]}}, "makers"),
            ({"pay_bonus": fund_rule}, "four_eyes")):
        refused = await groups.client.put("/rules/2087", headers=ADMIN, json={"rules": {
            **base, "four_eyes": {**base["four_eyes"], "commands": commands}}})
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["error"]["field"] + refused.json()["error"]["reason"]


async def test_the_ministry_registers_a_2021_group_as_it_happened(groups):
    on = date(2021, 3, 10)
    # 56 on the registration day, over 60 today: 2021's 18-60 measured on that day
    members = [person(date(1990, 1, 1)) for _ in range(15)] + [person(date(1964, 6, 1))]
    body = {**registration(year=2021), "members": members}
    today_refused = await groups.client.post("/groups", json=body, headers=ADMIN)
    assert today_refused.status_code == 422
    assert today_refused.json()["error"]["field"] == "members[15].nik"

    officer = await groups.client.post("/groups", json={**body, "registered_on": on.isoformat()},
                                       headers=PROVINCE_32)
    assert officer.status_code == 403 and officer.json()["error"]["field"] == "registered_on"
    future = local_today("3201") + timedelta(days=1)
    ahead = await groups.client.post("/groups", headers=ADMIN,
                                     json={**body, "registered_on": future.isoformat()})
    assert ahead.status_code == 422 and ahead.json()["error"]["field"] == "registered_on"

    created = await groups.client.post("/groups", headers=ADMIN,
                                       json={**body, "registered_on": on.isoformat()})
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert detail["registered_on"] == "2021-03-10"
    assert detail["registration_backdated"] is True
    assert detail["recorded_at"][:4] == str(date.today().year)
    listed = (await groups.client.get("/groups", headers=ADMIN,
                                      params={"year": 2021, "limit": 1000})).json()
    row = next(g for g in listed["items"] if g["group_id"] == group_id)
    assert (row["registered_on"], row["registration_backdated"]) == ("2021-03-10", True)

    # audited: the internal event keeps the date given, its envelope the admin who gave it
    conn = await asyncpg.connect(groups.database_url)
    try:
        event = await conn.fetchrow(
            "SELECT actor, payload FROM events WHERE stream_id = $1 "
            "AND event_type = 'groups.RosterRecorded'", f"group-{group_id}")
    finally:
        await conn.close()
    payload = json.loads(event["payload"])
    assert (payload["registered_on"], payload["backdated"]) == ("2021-03-10", True)
    assert event["actor"].startswith("ministry_admin:")


async def test_a_csv_file_carries_registration_dates_for_the_ministry_only(groups):
    header = [*CSV_HEADER, "registered_on"]

    def rows_of(name: str, registered_on: str) -> list[list[str]]:
        # members 31 in 2021: within 2021's 18-60 on any registration day
        return [["", "2021", "pemula", "3201", "poultry", name, m["nik"], m["name"], "",
                 registered_on] for m in (person(date(1990, 1, 1)) for _ in range(16))]

    rows = rows_of(f"KUB Lama {uuid.uuid4().hex[:6]}", "2021-05-03")
    late = rows_of(f"KUB Nanti {uuid.uuid4().hex[:6]}",
                   (local_today("3201") + timedelta(days=2)).isoformat())
    officer = await groups.client.post("/groups/imports", content=csv_file(rows, header),
                                       headers={**PROVINCE_32, "Content-Type": "text/csv"})
    assert officer.status_code == 403
    assert officer.json()["error"]["field"] == "registered_on"
    report = await groups.client.post("/groups/imports", content=csv_file(rows + late, header),
                                      headers={**ADMIN, "Content-Type": "text/csv"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["registered"], body["refused"]) == (1, 1)
    assert body["errors"][0]["field"] == "registered_on"
    group_id = next(r["group_id"] for r in body["results"] if r["status"] == "registered")
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["registered_on"], detail["registration_backdated"]) == ("2021-05-03", True)
    # without the column a province's file registers on today in the regency
    plain = csv_rows(f"KUB Kini {uuid.uuid4().hex[:6]}", members=10, year=2023)
    now = await groups.client.post("/groups/imports", content=csv_file(plain),
                                   headers={**PROVINCE_32, "Content-Type": "text/csv"})
    assert now.json()["registered"] == 1
    new_id = now.json()["results"][0]["group_id"]
    detail = (await groups.client.get(f"/groups/{new_id}", headers=ADMIN)).json()
    assert detail["registered_on"] == local_today("3201").isoformat()
    assert detail["registration_backdated"] is False


async def test_listings_page_by_limit_and_offset_and_still_take_page(groups):
    for _ in range(3):
        await groups.client.post("/groups", json=registration(year=2077,
                                                              regency_code="3201"),
                                 headers=ADMIN)
    first = (await groups.client.get("/groups", headers=ADMIN,
                                     params={"year": 2077, "limit": 2})).json()
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (3, 2, 0, 2)
    assert "page" not in first
    rest = (await groups.client.get("/groups", headers=ADMIN,
                                    params={"year": 2077, "limit": 2, "offset": 2})).json()
    ids = [g["group_id"] for g in first["items"] + rest["items"]]
    assert len(set(ids)) == 3
    old = (await groups.client.get("/groups", headers=ADMIN,
                                   params={"year": 2077, "page": 2, "page_size": 2})).json()
    assert (old["page"], old["page_size"], old["offset"]) == (2, 2, 2)
    assert [g["group_id"] for g in old["items"]] == [g["group_id"] for g in rest["items"]]
    too_many = await groups.client.get("/groups", headers=ADMIN, params={"limit": 1001})
    assert too_many.status_code == 422
    outstanding = (await groups.client.get("/lpj/outstanding", headers=ADMIN,
                                           params={"limit": 5})).json()
    assert (outstanding["limit"], outstanding["offset"]) == (5, 0)


