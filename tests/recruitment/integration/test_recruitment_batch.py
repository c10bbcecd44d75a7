"""The bulk paths: applicants by the list, and register+screen+brief+recruit in one call."""

import pytest

from tests.recruitment.recruitment_helpers import ADMIN, applicant

pytestmark = pytest.mark.integration


async def test_a_batch_of_applicants_gets_a_result_per_item_and_refused_items_leave_nothing(
        recruitment):
    client = recruitment.client
    good = [applicant(2031, "3578") for _ in range(3)]
    duplicate = {**good[0], "full_name": "Twin"}
    too_old = applicant(2031, "3578", age=50)
    bad_nik = {**applicant(2031, "3578"), "nik": "3578000000000000"}
    r = await client.post("/applicants:batch", headers=ADMIN,
                          json={"items": [*good, duplicate, too_old, bad_nik]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["done"], body["failed"]) == (3, 3)
    results = body["results"]
    assert [x["status"] for x in results] == [201, 201, 201, 409, 422, 400]
    assert results[3]["error"]["applicant_id"] == results[0]["applicant_id"]
    assert results[4]["error"]["rule"] == "age_range"
    assert results[5]["error"]["field"] == "nik"
    assert all(x["nik"] not in r.text for x in good)

    funnel = await client.get("/funnel", headers=ADMIN,
                              params={"year": 2031, "province_code": "35"})
    assert funnel.json()["registered"] == 3

    # the refused items claimed no NIK: corrected, they register
    retry = await client.post("/applicants:batch", headers=ADMIN,
                              json={"items": [{**too_old, **applicant(2031, "3578")}]})
    assert retry.json()["done"] == 1


async def test_intake_recruits_new_and_existing_applicants_in_one_call(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round(
        [{"province_code": "35", "regency_code": "3579", "places": 2},
         {"province_code": "94", "places": 10}], year=2032, stage=2)
    briefing = {"city": "Surabaya", "briefed_on": "2032-06-12"}
    existing = await recruitment.briefed(2032, "3579", stage=2)
    screened_only = await client.post("/applicants", headers=ADMIN,
                                      json=applicant(2032, "9404"))
    screened_id = screened_only.json()["applicant_id"]
    await client.post(f"/applicants/{screened_id}/screening", headers=ADMIN,
                      json={"passed": True})
    items = [
        {"applicant": applicant(2032, "3579"), "briefing": briefing, "regency_code": "3579"},
        {"applicant_id": existing, "regency_code": "3579"},
        {"applicant_id": screened_id, "briefing": briefing, "regency_code": "9404"},
        # Papua province created in 2022: its NIKs are real and its regencies take TKS
        *({"applicant": applicant(2032, "9401"), "briefing": briefing, "regency_code": "9401"}
          for _ in range(2)),
        {"applicant": applicant(2032, "3579"), "briefing": briefing, "regency_code": "3579"},
        {"applicant": applicant(2032, "3579", education="SMP"), "briefing": briefing,
         "regency_code": "9401"},
    ]
    r = await client.post(f"/rounds/{round_id}/recruitments:batch", headers=ADMIN,
                          json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 201, 201, 201, 422, 422]
    assert results[5]["error"]["remaining_quota"] == 0
    assert results[6]["error"]["rule"] == "minimum_education"
    assert results[1]["tks_id"] == existing
    assert results[0]["contract_start"] == "2032-06-12"

    fill = (await client.get(f"/rounds/{round_id}", headers=ADMIN)).json()
    assert [(q["province_code"], q["regency_code"], q["recruited"]) for q in fill["quotas"]] \
        == [("35", "3579", 2), ("94", None, 3)]
    roster = await client.get("/tks", headers=ADMIN, params={"year": 2032, "stage": 2})
    assert roster.json()["total"] == 5
    funnel = (await client.get("/funnel", headers=ADMIN, params={"year": 2032})).json()
    assert {k: funnel[k] for k in ("registered", "screened", "briefed", "recruited")} == {
        "registered": 5, "screened": 5, "briefed": 5, "recruited": 5}


async def test_the_funnel_counts_each_step_and_groups_rejections(recruitment):
    client = recruitment.client
    ids = []
    for _ in range(4):
        r = await client.post("/applicants", headers=ADMIN, json=applicant(2033, "1371"))
        ids.append(r.json()["applicant_id"])
    await client.post(f"/applicants/{ids[0]}/screening", headers=ADMIN, json={"passed": True})
    await client.post(f"/applicants/{ids[1]}/screening", headers=ADMIN, json={"passed": True})
    await client.post(f"/applicants/{ids[1]}/briefing", headers=ADMIN,
                      json={"stage": 3, "city": "Padang", "briefed_on": "2033-09-01"})
    unknown = await client.post(f"/applicants/{ids[2]}/screening", headers=ADMIN,
                                json={"passed": False, "reason": "looked tired"})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (400, "reason")
    for applicant_id in ids[2:]:
        r = await client.post(f"/applicants/{applicant_id}/screening", headers=ADMIN,
                              json={"passed": False, "reason": "failed_interview"})
        assert r.status_code == 200, r.text
    again = await client.post(f"/applicants/{ids[0]}/screening", headers=ADMIN,
                              json={"passed": True})
    assert again.status_code == 422
    assert again.json()["error"]["current_status"] == "screened"
    funnel = (await client.get("/funnel", headers=ADMIN,
                               params={"year": 2033, "province_code": "13"})).json()
    assert {k: funnel[k] for k in ("registered", "screened", "briefed", "recruited",
                                   "rejected")} == {
        "registered": 4, "screened": 2, "briefed": 1, "recruited": 0, "rejected": 2}
    assert funnel["rejections"] == [{"reason": "failed_interview", "count": 2}]
