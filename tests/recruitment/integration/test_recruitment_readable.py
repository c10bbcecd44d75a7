"""Readable results (issue 17): ids of everything created, contact fields optional, one paging
convention, national and per-province totals in one call."""

import pytest

from shared.auth import Role
from tests.recruitment.recruitment_helpers import ADMIN, applicant, auth

pytestmark = pytest.mark.integration

BRIEFING = {"city": "Kupang", "briefed_on": "2041-03-02"}


def _no_contact(year: int, regency: str) -> dict:
    body = applicant(year, regency)
    del body["phone"], body["email"]
    return body


async def test_intake_answers_the_id_of_each_new_applicant(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "53", "places": 5}], year=2041)
    existing = await recruitment.briefed(2041, "5371")
    items = [{"applicant": applicant(2041, "5371"), "briefing": BRIEFING, "regency_code": "5371"},
             {"applicant": _no_contact(2041, "5301"), "briefing": BRIEFING,
              "regency_code": "5301"},
             {"applicant_id": existing, "regency_code": "5371"}]
    r = await client.post(f"/rounds/{round_id}/recruitments:batch", headers=ADMIN,
                          json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 201]
    ids = [x["applicant_id"] for x in results]
    assert None not in ids and len(set(ids)) == 3
    assert ids[2] == existing
    for item, result in zip(items[:2], results[:2], strict=True):
        assert result["tks_id"] == result["applicant_id"]  # the TKS id is the applicant's
        found = await client.get(f"/applicants/{result['applicant_id']}", headers=ADMIN)
        assert found.status_code == 200, found.text
        assert found.json()["full_name"] == item["applicant"]["full_name"]
        assert found.json()["status"] == "recruited"
        assert result["nik_masked"] == found.json()["nik_masked"]
    no_contact = (await client.get(f"/applicants/{ids[1]}", headers=ADMIN)).json()
    assert (no_contact["phone"], no_contact["email"]) == (None, None)


async def test_contact_fields_are_optional_but_checked_when_given(recruitment):
    client = recruitment.client
    bare = await client.post("/applicants", headers=ADMIN, json=_no_contact(2042, "3273"))
    assert bare.status_code == 201, bare.text
    only_phone = {**_no_contact(2042, "3273"), "phone": "0812-3456-7890"}
    r = await client.post("/applicants", headers=ADMIN, json=only_phone)
    assert r.status_code == 201, r.text
    shown = (await client.get(f"/applicants/{r.json()['applicant_id']}", headers=ADMIN)).json()
    assert (shown["phone"], shown["email"]) == ("+6281234567890", None)

    bad_phone = {**_no_contact(2042, "3273"), "phone": "021-12"}
    bad_email = {**_no_contact(2042, "3273"), "email": "not-an-address"}
    for body, field in ((bad_phone, "phone"), (bad_email, "email")):
        refused = await client.post("/applicants", headers=ADMIN, json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["field"] == field
    funnel = (await client.get("/funnel", headers=ADMIN, params={"year": 2042})).json()
    assert funnel["registered"] == 2  # the refused ones left nothing


async def test_every_listing_pages_by_limit_and_offset_up_to_1000(recruitment):
    client = recruitment.client
    made = []
    for _ in range(5):
        r = await client.post("/applicants", headers=ADMIN, json=applicant(2043, "1101"))
        made.append(r.json()["applicant_id"])
    seen = []
    for offset in (0, 2, 4):
        page = await client.get("/applicants", headers=ADMIN,
                                params={"year": 2043, "limit": 2, "offset": offset})
        assert page.status_code == 200, page.text
        body = page.json()
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, offset)
        seen += [x["applicant_id"] for x in body["items"]]
    assert sorted(seen) == sorted(made)
    default = (await client.get("/tks", headers=ADMIN, params={"year": 2043})).json()
    assert (default["limit"], default["offset"]) == (100, 0)
    for path in ("/applicants", "/tks", "/vacancies"):
        top = await client.get(path, headers=ADMIN, params={"year": 2043, "limit": 1000})
        assert top.status_code == 200, top.text
        over = await client.get(path, headers=ADMIN, params={"year": 2043, "limit": 1001})
        assert over.status_code == 422, over.text


async def test_stats_give_national_and_per_province_totals_in_one_call(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "71", "places": 3},
                                             {"province_code": "72", "places": 3}], year=2044)
    briefing = {"city": "Manado", "briefed_on": "2044-02-01"}
    items = [{"applicant": applicant(2044, "7171"), "briefing": briefing, "regency_code": "7171"}
             for _ in range(2)]
    items.append({"applicant": applicant(2044, "7271"), "briefing": briefing,
                  "regency_code": "7271"})
    r = await client.post(f"/rounds/{round_id}/recruitments:batch", headers=ADMIN,
                          json={"items": items})
    assert r.json()["done"] == 3, r.text
    leaver = r.json()["results"][0]["tks_id"]
    resigned = await client.post(f"/tks/{leaver}/resignation", headers=ADMIN,
                                 json={"effective_date": "2044-05-31"})
    assert resigned.status_code == 200, resigned.text
    rejected = await client.post("/applicants", headers=ADMIN, json=applicant(2044, "7271"))
    await client.post(f"/applicants/{rejected.json()['applicant_id']}/screening", headers=ADMIN,
                      json={"passed": False, "reason": "withdrew"})

    stats = await client.get("/stats", headers=ADMIN, params={"year": 2044})
    assert stats.status_code == 200, stats.text
    body = stats.json()
    by = {p["province_code"]: p for p in body["provinces"]}
    assert set(by) == {"71", "72"}
    assert {k: by["71"][k] for k in ("registered", "recruited", "tks", "tks_active",
                                     "tks_resigned", "vacancies_open")} == {
        "registered": 2, "recruited": 2, "tks": 2, "tks_active": 1, "tks_resigned": 1,
        "vacancies_open": 1}
    assert {k: by["72"][k] for k in ("registered", "recruited", "rejected", "tks")} == {
        "registered": 2, "recruited": 1, "rejected": 1, "tks": 1}
    national = body["national"]
    assert national == {k: by["71"][k] + by["72"][k] for k in national}
    funnel = (await client.get("/funnel", headers=ADMIN, params={"year": 2044})).json()
    assert national["registered"] == funnel["registered"] == 4

    officer = await client.get("/stats", headers=auth(Role.PROVINCE, province="72"),
                               params={"year": 2044})
    assert [p["province_code"] for p in officer.json()["provinces"]] == ["72"]
    assert officer.json()["national"]["tks"] == 1
