"""Through the HTTP API against the real broker and database."""

import asyncio
import json
from datetime import date

import asyncpg
import pytest

from shared.auth import Role
from shared.topics import RECRUITMENT
from tests.recruitment.recruitment_helpers import ADMIN, applicant, auth
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


async def test_a_recruitment_appears_once_on_the_topic_with_its_contract(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "65", "regency_code": "6502",
                                              "places": 3}])
    registration = applicant(2023, "6502")
    r = await client.post("/applicants", headers=ADMIN, json=registration)
    assert r.status_code == 201, r.text
    applicant_id = r.json()["applicant_id"]
    nik = registration["nik"]
    assert r.json()["nik_masked"] == f"{nik[:6]}**********"
    for path, body in [("screening", {"passed": True}),
                       ("briefing", {"stage": 1, "city": "Tarakan", "briefed_on": "2023-03-06"})]:
        r = await client.post(f"/applicants/{applicant_id}/{path}", headers=ADMIN, json=body)
        assert r.status_code == 200, r.text

    r = await recruitment.recruit(round_id, applicant_id, "6502")
    assert r.status_code == 201, r.text
    tks = r.json()
    assert (tks["tks_id"], tks["contract_start"], tks["contract_end"], tks["remaining_quota"]) \
        == (applicant_id, "2023-03-06", "2023-12-31", 2)
    again = await recruitment.recruit(round_id, applicant_id, "6502")
    assert again.status_code == 409, again.text
    r = await client.post(f"/rounds/{round_id}/close", headers=ADMIN)
    assert r.json() == {"round_id": round_id, "status": "closed", "recruited": 1}

    def mine(records):
        return [json.loads(x.value) for x in records
                if json.loads(x.value)["payload"].get("tks_id") == applicant_id
                or json.loads(x.value)["payload"].get("round_id") == round_id]

    records = await read_topic(recruitment.kafka, RECRUITMENT, until=lambda recs: any(
        e["event_type"] == "RecruitmentRoundClosed" for e in mine(recs)) and any(
        e["event_type"] == "TksRecruited" for e in mine(recs)))
    recruited = [e for e in mine(records) if e["event_type"] == "TksRecruited"]
    assert len(recruited) == 1
    assert recruited[0]["stream_id"] == f"tks-{applicant_id}"
    assert recruited[0]["payload"] == {
        "tks_id": applicant_id, "round_id": round_id, "year": 2023, "stage": 1,
        "province_code": "65", "regency_code": "6502", "contract_start": "2023-03-06",
        "contract_end": "2023-12-31"}
    raw = b"".join(x.value for x in records)
    for personal in (nik, registration["full_name"], registration["birth_date"],
                     registration["phone"][1:]):
        assert personal.encode() not in raw

    roster = await client.get("/tks", headers=ADMIN,
                              params={"year": 2023, "regency_code": "6502", "status": "active"})
    [row] = [x for x in roster.json()["items"] if x["tks_id"] == applicant_id]
    assert row["full_name"] == registration["full_name"]
    assert row["nik_masked"] == tks_mask(nik) and nik not in roster.text


def tks_mask(nik: str) -> str:
    return f"{nik[:6]}**********"


async def test_the_same_nik_twice_in_a_year_is_a_conflict_naming_the_applicant(recruitment):
    client = recruitment.client
    registration = applicant(2024, "3273")
    first = await client.post("/applicants", headers=ADMIN, json=registration)
    assert first.status_code == 201, first.text
    second = await client.post("/applicants", headers=ADMIN,
                               json={**registration, "full_name": "Someone Else"})
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["field"] == "nik" and error["applicant_id"] == first.json()["applicant_id"]
    assert registration["nik"] not in second.text
    next_year = await client.post("/applicants", headers=ADMIN,
                                  json={**registration, "year": 2025})
    assert next_year.status_code == 201, next_year.text


async def test_concurrent_registrations_of_one_nik_register_it_once(recruitment):
    registration = applicant(2024, "6502")
    answers = await asyncio.gather(*(recruitment.client.post(
        "/applicants", headers=ADMIN, json={**registration, "full_name": f"Copy {i}"})
        for i in range(6)))
    [won] = [r for r in answers if r.status_code == 201]
    lost = [r for r in answers if r.status_code != 201]
    assert {r.status_code for r in lost} == {409}
    assert {r.json()["error"]["applicant_id"] for r in lost} == {won.json()["applicant_id"]}


async def test_registration_refusals_say_which_field_and_rule(recruitment):
    client = recruitment.client
    too_old = await client.post("/applicants", headers=ADMIN, json=applicant(2023, age=55))
    assert too_old.status_code == 422
    assert too_old.json()["error"]["rule"] == "age_range"
    low = await client.post("/applicants", headers=ADMIN,
                            json=applicant(2023, education="SMA"))
    assert low.status_code == 422 and low.json()["error"]["rule"] == "minimum_education"
    bad = applicant(2023)
    bad["nik"] = bad["nik"][:6] + "00" + bad["nik"][8:]
    wrong_nik = await client.post("/applicants", headers=ADMIN, json=bad)
    assert wrong_nik.status_code == 400 and wrong_nik.json()["error"]["field"] == "nik"
    phone = await client.post("/applicants", headers=ADMIN,
                              json={**applicant(2023), "phone": "12345"})
    assert phone.status_code == 400 and phone.json()["error"]["field"] == "phone"
    regency = await client.post("/applicants", headers=ADMIN,
                                json={**applicant(2023), "domicile_regency_code": "3298"})
    assert regency.status_code == 400
    assert regency.json()["error"]["field"] == "domicile_regency_code"
    conn = await asyncpg.connect(recruitment.database_url)
    try:
        claimed = await conn.fetchval("SELECT count(*) FROM applicant_nik WHERE nik = $1",
                                      bad["nik"])
        written = await conn.fetchval("SELECT count(*) FROM events WHERE payload->>'nik' = $1",
                                      bad["nik"])
    finally:
        await conn.close()
    assert (claimed, written) == (0, 0)


async def test_roles_scope_what_a_caller_may_do_and_see(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "65", "places": 5},
                                             {"province_code": "32", "places": 5}], year=2026)
    west_java = auth(Role.PROVINCE, province="32")
    r = await client.post("/applicants", headers=west_java, json=applicant(2026, "6502"))
    assert r.status_code == 403
    r = await client.post("/rounds", headers=west_java,
                          json={"year": 2026, "stage": 1, "quotas": [
                              {"province_code": "32", "places": 1}]})
    assert r.status_code == 403

    in_65 = await recruitment.briefed(2026, "6502")
    in_32 = await recruitment.briefed(2026, "3201")
    refused = await client.post(f"/rounds/{round_id}/recruitments", headers=west_java,
                                json={"applicant_id": in_65, "regency_code": "6502"})
    assert refused.status_code == 403
    done = await client.post(f"/rounds/{round_id}/recruitments", headers=west_java,
                             json={"applicant_id": in_32, "regency_code": "3201"})
    assert done.status_code == 201, done.text
    assert (await recruitment.recruit(round_id, in_65, "6502")).status_code == 201

    seen = await client.get("/tks", headers=west_java, params={"year": 2026})
    assert {x["province_code"] for x in seen.json()["items"]} == {"32"}
    assert (await client.get("/tks", headers=west_java,
                             params={"province_code": "65"})).status_code == 403
    assert (await client.get(f"/tks/{in_65}", headers=west_java)).status_code == 403
    fill = await client.get(f"/rounds/{round_id}", headers=west_java)
    assert [(q["province_code"], q["recruited"]) for q in fill.json()["quotas"]] == [("32", 1)]

    agency = await client.get("/tks", headers=auth(Role.AGENCY), params={"year": 2026})
    rows = agency.json()["items"]
    assert {x["tks_id"] for x in rows} >= {in_32, in_65}
    assert all("full_name" not in x and "phone" not in x and "birth_date" not in x
               for x in rows)
    assert (await client.post("/applicants", headers=auth(Role.AGENCY),
                              json=applicant(2026))).status_code == 403

    own = await client.get(f"/tks/{in_32}", headers=auth(Role.TKS, tks_id=in_32))
    assert own.status_code == 200 and own.json()["contracts"][0]["regency_code"] == "3201"
    other = await client.get(f"/tks/{in_65}", headers=auth(Role.TKS, tks_id=in_32))
    assert other.status_code == 403


async def test_resignation_ends_the_contract_and_opens_a_vacancy_that_a_recruit_fills(
        recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "63", "regency_code": "6301",
                                              "places": 2}], year=2027)
    leaver = await recruitment.briefed(2027, "6301")
    assert (await recruitment.recruit(round_id, leaver, "6301")).status_code == 201
    r = await client.post(f"/tks/{leaver}/resignation", headers=ADMIN,
                          json={"effective_date": "2027-07-31"})
    assert r.status_code == 200, r.text
    vacancy_id = r.json()["vacancy_id"]
    assert r.json()["status"] == "resigned"
    open_ = await client.get("/vacancies", headers=ADMIN,
                             params={"year": 2027, "regency_code": "6301"})
    assert [(v["vacancy_id"], v["reason"], v["replaces_tks_id"])
            for v in open_.json()["items"]] == [(vacancy_id, "resignation", leaver)]

    newcomer = await recruitment.briefed(2027, "6301", on=date(2027, 8, 5))
    r = await recruitment.recruit(round_id, newcomer, "6301", vacancy_id=vacancy_id,
                                  contract_start="2027-08-15")
    assert r.status_code == 201, r.text
    assert r.json()["contract_start"] == "2027-08-15"
    assert (await client.get("/vacancies", headers=ADMIN,
                             params={"year": 2027, "regency_code": "6301"})).json()["total"] == 0
    filled = await client.get("/vacancies", headers=ADMIN,
                              params={"year": 2027, "regency_code": "6301", "status": "filled"})
    assert filled.json()["items"][0]["filled_by_tks_id"] == newcomer
    record = await client.get(f"/tks/{leaver}", headers=ADMIN)
    assert [(c["status"], c["ended_on"]) for c in record.json()["contracts"]] == [
        ("resigned", "2027-07-31")]
