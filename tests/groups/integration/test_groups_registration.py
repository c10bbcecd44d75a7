"""Registering groups and their members through the HTTP API."""

from __future__ import annotations

import asyncpg
import pytest

from shared.auth import Role
from tests.groups.groups_support import ADMIN, AGENCY, auth, fund, member_inputs, registration

pytestmark = pytest.mark.integration


async def test_a_registered_group_is_listed_and_shows_masked_members_to_officers(groups):
    body = registration("3201")
    created = await groups.client.post("/groups", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    assert created.json()["member_count"] == 10

    detail = (await groups.client.get(f"/groups/{group_id}",
                                      headers=auth(Role.PROVINCE, "32"))).json()
    niks = {m["nik"] for m in detail["members"]}
    assert niks == {m["nik"][:6] + "*" * 10 for m in body["members"]}
    assert (detail["status"], detail["province_code"], detail["name"]) == (
        "registered", "32", body["name"])

    for reader in (AGENCY, auth(Role.TKS)):
        seen = await groups.client.get(f"/groups/{group_id}", headers=reader)
        assert seen.status_code == 200 and "members" not in seen.json()
    other = await groups.client.get(f"/groups/{group_id}", headers=auth(Role.PROVINCE, "31"))
    assert other.status_code == 403

    listed = await groups.client.get("/groups", params={
        "year": 2023, "regency_code": "3201", "business_type": "tailoring", "page_size": 500},
        headers=AGENCY)
    assert group_id in {g["group_id"] for g in listed.json()["items"]}


async def test_a_second_active_membership_in_a_year_is_a_409_naming_the_other_group(groups):
    first = registration("3201")
    first_id = (await groups.client.post("/groups", json=first, headers=ADMIN)).json()["group_id"]
    second = registration("3273")
    second["members"][4] = {**first["members"][2], "name": "Same Person"}
    refused = await groups.client.post("/groups", json=second, headers=ADMIN)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["other_group_id"] == first_id
    assert error["other_group_name"] == first["name"]
    assert error["field"] == "members[4].nik"
    assert first["members"][2]["nik"] not in refused.text  # personal data stays out
    missing = await groups.client.get("/groups", params={"regency_code": "3273",
                                                         "page_size": 500}, headers=ADMIN)
    assert second["name"] not in {g["name"] for g in missing.json()["items"]}

    # another year is another membership
    next_year = registration("3273", year=2024)
    next_year["members"][0] = first["members"][2]
    assert (await groups.client.post("/groups", json=next_year, headers=ADMIN)).status_code == 201


async def test_members_released_by_rejection_may_join_another_group(groups):
    first = registration("3201")
    first_id = (await groups.client.post("/groups", json=first, headers=ADMIN)).json()["group_id"]
    rejected = await groups.client.post(f"/groups/{first_id}/rejection",
                                        json={"reason_code": "business_not_viable"}, headers=ADMIN)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    again = registration("3201")
    again["members"] = first["members"]
    assert (await groups.client.post("/groups", json=again, headers=ADMIN)).status_code == 201


async def test_the_same_group_twice_is_a_409_and_bad_input_writes_nothing(groups):
    body = registration("6501")
    assert (await groups.client.post("/groups", json=body, headers=ADMIN)).status_code == 201
    body_again = {**body, "name": body["name"].upper(), "members": member_inputs(10, "6501")}
    twice = await groups.client.post("/groups", json=body_again, headers=ADMIN)
    assert twice.status_code == 409 and twice.json()["error"]["field"] == "name"

    before = await _event_count(groups.database_url)
    for change, status, field in (
            ({"regency_code": "9999"}, 400, "regency_code"),
            ({"business_type": "spaceships"}, 400, "business_type"),
            ({"members": member_inputs(9, "6501")}, 422, "members"),
            ({"members": [{**m, "nik": "3201"} for m in member_inputs(10)]}, 400,
             "members[0].nik")):
        bad = await groups.client.post("/groups", json={**registration("6501"), **change},
                                       headers=ADMIN)
        assert (bad.status_code, bad.json()["error"]["field"]) == (status, field), bad.text
    assert await _event_count(groups.database_url) == before


async def test_roles_decide_who_registers_where(groups):
    body = registration("3201")
    assert (await groups.client.post("/groups", json=body,
                                     headers=auth(Role.PROVINCE, "33"))).status_code == 403
    for role in (AGENCY, auth(Role.TKS)):
        assert (await groups.client.post("/groups", json=body, headers=role)).status_code == 403
    assert (await groups.client.post("/groups", json=body)).status_code == 401
    ok = await groups.client.post("/groups", json=body, headers=auth(Role.PROVINCE, "32"))
    assert ok.status_code == 201
    own = await groups.client.get("/groups", params={"province_code": "33"},
                                  headers=auth(Role.PROVINCE, "32"))
    assert own.status_code == 403


async def test_members_change_until_funding(groups):
    # a 2021 group: the rules of 2021 take 10 to 16 members (2023's exactly 10)
    body = registration("3201", members=10, year=2021)
    group_id = (await groups.client.post("/groups", json=body, headers=ADMIN)).json()["group_id"]
    newcomers = member_inputs(2)
    changed = await groups.client.put(f"/groups/{group_id}/members", headers=ADMIN,
                                      json={"members": body["members"][1:] + newcomers})
    assert changed.status_code == 200 and changed.json()["member_count"] == 11
    # the member who left is free to join another group
    other = registration("3201", year=2021)
    other["members"][0] = body["members"][0]
    assert (await groups.client.post("/groups", json=other, headers=ADMIN)).status_code == 201

    await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    funded = await fund(groups.client, group_id, {
        "tranche": 1, "amount": 20_000_000, "disbursed_on": "2021-06-01", "budget_year": 2021})
    assert funded["status"] == "funded", funded
    late = await groups.client.put(f"/groups/{group_id}/members", headers=ADMIN,
                                   json={"members": body["members"]})
    assert late.status_code == 422


async def _event_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
