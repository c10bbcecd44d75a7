from datetime import date

import pytest

from shared.auth import Role
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, headers
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {"MentorAssigned": {"group_id", "tks_id", "province_code", "regency_code",
                                      "assigned_on"},
                   "MentorUnassigned": {"group_id", "tks_id", "reason", "unassigned_on"}}


async def test_a_released_tks_leaves_its_groups_unassigned_for_reassignment(mentoring):
    regency = "3201"
    a, b = fresh("tks"), fresh("tks")
    g1, g2, g3 = fresh("grp"), fresh("grp"), fresh("grp")
    for tks in (a, b):
        await mentoring.recruit(tks, regency)
    for g in (g1, g2, g3):
        await mentoring.fund(g, regency, date(2023, 2, 20))
    await mentoring.known(tks=(a, b), groups=(g1, g2, g3))
    for g, tks in ((g1, a), (g2, a), (g3, b)):
        r = await mentoring.assign(g, tks, date(2023, 3, 1))
        assert r.status_code == 201, r.text

    await mentoring.release(a, regency, date(2023, 6, 30))

    async def unassigned():
        r = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                       params={"regency_code": regency})
        mine = {g["group_id"]: g for g in r.json()["items"]}
        return mine if {g1, g2} <= set(mine) else None

    listed = await eventually(unassigned)
    assert g3 not in listed
    assert {(listed[g]["last_tks_id"], listed[g]["unassigned_reason"],
             listed[g]["unassigned_on"]) for g in (g1, g2)} == {(a, "tks_left", "2023-06-30")}
    view_a = (await mentoring.client.get(f"/tks/{a}", headers=ADMIN)).json()
    view_b = (await mentoring.client.get(f"/tks/{b}", headers=ADMIN)).json()
    assert (view_a["active"], view_a["caseload"], view_a["groups"]) == (False, 0, [])
    assert (view_b["active"], view_b["caseload"]) == (True, 1)

    events = await mentoring.published(
        until=lambda seen: sum(e["type"] == "MentorUnassigned" for e in seen) >= 2)
    unassigned_events = {e["key"]: e["payload"] for e in events
                         if e["type"] == "MentorUnassigned"}
    assert set(unassigned_events) == {f"group-{g1}", f"group-{g2}"}
    assert all(p["reason"] == "tks_left" and p["tks_id"] == a
               for p in unassigned_events.values())
    for e in events:
        assert set(e["payload"]) == CONTRACT_FIELDS[e["type"]]

    r = await mentoring.assign(g1, a, date(2023, 7, 1))
    assert r.status_code == 422 and "no longer active" in r.json()["error"]["reason"]
    r = await mentoring.assign(g1, b, date(2023, 7, 1))
    assert r.status_code == 201, r.text
    r = await mentoring.client.get("/groups/unassigned", headers=ADMIN,
                                   params={"regency_code": regency})
    assert [g["group_id"] for g in r.json()["items"]] == [g2]


async def test_a_departure_of_a_tks_never_seen_is_ignored_not_dead_lettered(mentoring):
    stranger, sentinel = fresh("tks"), fresh("tks")
    released = await mentoring.release(stranger, "3201", date(2023, 6, 30))
    await mentoring.recruit(sentinel, "3201")
    await mentoring.known(tks=(sentinel,))
    async with mentoring.db() as conn:
        outcome = await conn.fetchval("SELECT outcome FROM inbox WHERE event_id = $1",
                                      released.event_id)
        left = await conn.fetchval("SELECT count(*) FROM mentors WHERE tks_id = $1", stranger)
    assert (outcome, left) == ("applied", 0)


async def test_suggestions_balance_caseloads_and_are_applied_in_bulk(mentoring):
    regency = "6501"  # Malinau, North Kalimantan
    busy, idle = fresh("tks"), fresh("tks")
    old = [fresh("grp") for _ in range(2)]
    new = [fresh("grp") for _ in range(6)]
    for tks in (busy, idle):
        await mentoring.recruit(tks, regency)
    for g in old + new:
        await mentoring.fund(g, regency, date(2023, 3, 1))
    await mentoring.known(tks=(busy, idle), groups=(*old, *new))
    for g in old:
        assert (await mentoring.assign(g, busy, date(2023, 3, 2))).status_code == 201

    officer = headers(Role.PROVINCE, "kaltara", province_code="65")
    r = await mentoring.client.get("/assignments/suggestions", headers=officer,
                                   params={"regency_code": regency})
    assert r.status_code == 200, r.text
    plan = r.json()
    per_tks = {t: sum(s["tks_id"] == t for s in plan["suggestions"]) for t in (busy, idle)}
    assert per_tks == {busy: 2, idle: 4} and plan["unplaced"] == []

    outsider = headers(Role.PROVINCE, "jabar", province_code="32")
    r = await mentoring.client.post("/assignments/suggestions/apply", headers=outsider,
                                    json={"regency_code": regency})
    assert r.status_code == 403
    r = await mentoring.client.post("/assignments/suggestions/apply", headers=officer,
                                    json={"regency_code": regency, "on_funding_date": True})
    assert r.status_code == 200, r.text
    assert (r.json()["assigned"], r.json()["skipped"]) == (6, [])
    for tks in (busy, idle):
        view = (await mentoring.client.get(f"/tks/{tks}", headers=officer)).json()
        assert view["caseload"] == len(view["groups"]) == 4
    group = (await mentoring.client.get(f"/groups/{new[0]}", headers=ADMIN)).json()
    assert group["assignments"][0]["assigned_on"] == "2023-03-01"
    r = await mentoring.client.get("/groups/unassigned", headers=officer)
    assert r.json()["total"] == 0


async def test_assignment_refusals_name_the_field_and_reason(mentoring):
    tks, group = fresh("tks"), fresh("grp")
    await mentoring.recruit(tks, "3273")
    await mentoring.fund(group, "3201", date(2023, 3, 1))
    await mentoring.known(tks=(tks,), groups=(group,))
    r = await mentoring.assign(group, tks, date(2023, 3, 2))
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "tks_id"
    assert "outside the group's regency" in r.json()["error"]["reason"]
    r = await mentoring.assign(fresh("grp"), tks, date(2023, 3, 2))
    assert (r.status_code, r.json()["error"]["field"]) == (404, "group_id")
    r = await mentoring.assign(group, tks, date(2023, 3, 2),
                               who=headers(Role.PROVINCE, "bali", province_code="51"))
    assert r.status_code == 403
    r = await mentoring.assign(group, tks, date(2023, 3, 2), who=headers(Role.AGENCY, "bps"))
    assert r.status_code == 403
    async with mentoring.db() as conn:
        # nothing but the shipped rules adopted at start
        assert await conn.fetchval("SELECT count(*) FROM events "
                                   "WHERE stream_id NOT LIKE 'rules-%'") == 0


async def test_a_dissolved_group_loses_its_mentor_and_cannot_be_assigned_again(mentoring):
    tks, group = fresh("tks"), fresh("grp")
    await mentoring.recruit(tks, "1101")
    await mentoring.fund(group, "1101", date(2023, 3, 1))
    await mentoring.known(tks=(tks,), groups=(group,))
    assert (await mentoring.assign(group, tks, date(2023, 3, 1))).status_code == 201
    await mentoring.dissolve(group)
    await mentoring.dissolve(fresh("grp"))  # never funded: nothing to do

    async def dissolved():
        view = (await mentoring.client.get(f"/groups/{group}", headers=ADMIN)).json()
        return view if view["dissolved_on"] else None

    view = await eventually(dissolved)
    assert (view["tks_id"], view["unassigned_reason"]) == (None, "group_dissolved")
    assert (await mentoring.client.get(f"/tks/{tks}", headers=ADMIN)).json()["caseload"] == 0
    r = await mentoring.assign(group, tks, date(2023, 8, 1))
    assert r.status_code == 422 and "dissolved" in r.json()["error"]["reason"]
    r = await mentoring.client.get("/groups/unassigned", headers=ADMIN)
    assert group not in {g["group_id"] for g in r.json()["items"]}
