"""Who may see and do what: agencies see no personal data (not even the masked NIK), a
provincial officer touches only its own province's applicants, and paging stays bounded."""

import pytest

from shared.auth import Role
from tests.recruitment.recruitment_helpers import ADMIN, applicant, auth

pytestmark = pytest.mark.integration

PERSONAL_KEYS = {"nik_masked", "full_name", "sex", "birth_date", "education", "phone", "email"}


async def test_an_agency_sees_no_personal_data_not_even_the_masked_nik(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "65", "places": 2}], year=2027)
    tks_id = await recruitment.briefed(2027, "6502")
    assert (await recruitment.recruit(round_id, tks_id, "6502")).status_code == 201

    agency = auth(Role.AGENCY)
    roster = await client.get("/tks", headers=agency, params={"year": 2027})
    assert roster.status_code == 200, roster.text
    [row] = [x for x in roster.json()["items"] if x["tks_id"] == tks_id]
    assert row["regency_code"] == "6502"
    assert not PERSONAL_KEYS & row.keys(), row
    record = await client.get(f"/tks/{tks_id}", headers=agency)
    assert record.status_code == 200, record.text
    [contract] = record.json()["contracts"]
    assert contract["tks_id"] == tks_id and not PERSONAL_KEYS & contract.keys(), contract

    # whoever may see personal data still sees the masked NIK
    admin = await client.get(f"/tks/{tks_id}", headers=ADMIN)
    assert admin.json()["contracts"][0]["nik_masked"].count("*") == 10
    own = await client.get(f"/tks/{tks_id}", headers=auth(Role.TKS, tks_id=tks_id))
    assert own.json()["contracts"][0]["nik_masked"] == admin.json()["contracts"][0]["nik_masked"]
    officer = await client.get("/tks", headers=auth(Role.PROVINCE, province="65"),
                               params={"year": 2027})
    [row] = [x for x in officer.json()["items"] if x["tks_id"] == tks_id]
    assert row["nik_masked"] and row["full_name"]


async def test_an_officer_cannot_recruit_or_brief_another_provinces_applicant(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "31", "places": 5},
                                             {"province_code": "32", "places": 5}], year=2028)
    west_java, jakarta = auth(Role.PROVINCE, province="32"), auth(Role.PROVINCE, province="31")

    # a briefed Jakarta applicant, recruited by West Java's officer into a West Java regency
    of_31 = await recruitment.briefed(2028, "3171")
    refused = await client.post(f"/rounds/{round_id}/recruitments", headers=west_java,
                                json={"applicant_id": of_31, "regency_code": "3201"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["field"] == "province_code"
    assert (await client.get("/tks", headers=west_java,
                             params={"year": 2028})).json()["items"] == []
    assert (await client.get(f"/tks/{of_31}", headers=west_java)).status_code == 404

    # the same through the batch, and a screened Jakarta applicant briefed there
    r = await client.post("/applicants", headers=ADMIN, json=applicant(2028, "3171"))
    screened = r.json()["applicant_id"]
    r = await client.post(f"/applicants/{screened}/screening", headers=ADMIN,
                          json={"passed": True})
    assert r.status_code == 200, r.text
    batch = await client.post(
        f"/rounds/{round_id}/recruitments:batch", headers=west_java,
        json={"items": [
            {"applicant_id": of_31, "regency_code": "3201"},
            {"applicant_id": screened, "regency_code": "3201",
             "briefing": {"city": "Bandung", "briefed_on": "2028-03-06"}}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["done"] == 0
    assert [(x["status"], x["error"]["field"]) for x in batch.json()["results"]] \
        == [(403, "province_code"), (403, "province_code")]
    untouched = (await client.get(f"/applicants/{screened}", headers=ADMIN)).json()
    assert (untouched["status"], untouched["briefed_on"]) == ("screened", None)
    fill = (await client.get(f"/rounds/{round_id}", headers=ADMIN)).json()
    assert fill["filled"] == 0

    # its own officer may
    done = await client.post(f"/rounds/{round_id}/recruitments", headers=jakarta,
                             json={"applicant_id": of_31, "regency_code": "3171"})
    assert done.status_code == 201, done.text
    batch = await client.post(
        f"/rounds/{round_id}/recruitments:batch", headers=jakarta,
        json={"items": [{"applicant_id": screened, "regency_code": "3171",
                         "briefing": {"city": "Jakarta", "briefed_on": "2028-03-06"}}]})
    assert batch.json()["done"] == 1, batch.text


@pytest.mark.parametrize("path", ["/tks", "/vacancies", "/applicants"])
async def test_a_huge_offset_is_refused_not_a_server_error(recruitment, path):
    params = {"year": 2023, "offset": "99999999999999999999"}
    r = await recruitment.client.get(path, headers=ADMIN, params=params)
    assert r.status_code == 422, r.text
    assert (await recruitment.client.get(path, headers=ADMIN, params={
        "year": 2023, "offset": 1_000_001})).status_code == 422
    assert (await recruitment.client.get(path, headers=ADMIN, params={
        "year": 2023, "offset": 1_000_000})).status_code == 200
