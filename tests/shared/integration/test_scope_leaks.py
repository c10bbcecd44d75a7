"""What a provincial officer can learn about another province: nothing beyond "taken". And what
anyone can learn of a NIK from an answer: its region, unless the ministry reveals it on the
record (audited)."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.auth import Role
from tests.groups.groups_support import registration
from tests.recruitment.recruitment_helpers import applicant
from tests.support.edge import bearer, running

pytestmark = pytest.mark.integration

ADMIN = bearer(Role.ADMIN)
WEST_JAVA = bearer(Role.PROVINCE, province_code="32")
CENTRAL_JAVA = bearer(Role.PROVINCE, province_code="33")


@pytest.fixture(scope="module")
async def recruitment(infra) -> AsyncIterator[httpx.AsyncClient]:
    async with running(infra, "recruitment") as (_, client):
        yield client


@pytest.fixture(scope="module")
async def groups(infra) -> AsyncIterator[httpx.AsyncClient]:
    async with running(infra, "groups") as (_, client):
        yield client


async def test_a_duplicate_nik_of_another_province_is_a_409_naming_nothing(recruitment):
    year = random.randint(2024, 2029)
    person = applicant(year, "3301")  # registered in Central Java
    first = await recruitment.post("/applicants", headers=CENTRAL_JAVA, json=person)
    assert first.status_code == 201, first.text
    theirs = first.json()["applicant_id"]

    again = await recruitment.post("/applicants", headers=WEST_JAVA,
                                   json={**person, "domicile_regency_code": "3201"})
    assert again.status_code == 409, again.text
    assert theirs not in again.text and "applicant_id" not in again.json()["error"]
    assert again.json()["error"]["field"] == "nik"

    own = await recruitment.post("/applicants", headers=CENTRAL_JAVA, json=person)
    assert own.status_code == 409 and own.json()["error"]["applicant_id"] == theirs
    by_ministry = await recruitment.post("/applicants", headers=ADMIN, json=person)
    assert by_ministry.json()["error"]["applicant_id"] == theirs


async def test_a_member_of_another_provinces_group_is_a_409_naming_no_group(groups):
    theirs = registration("3301", year=2023)
    first = await groups.post("/groups", headers=ADMIN, json=theirs)
    assert first.status_code == 201, first.text
    ours = registration("3201", year=2023)
    ours["members"][3] = {**theirs["members"][0], "name": "Someone"}

    refused = await groups.post("/groups", headers=WEST_JAVA, json=ours)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "members[3].nik"
    assert first.json()["group_id"] not in refused.text and theirs["name"] not in refused.text
    assert not {"other_group_id", "other_group_name"} & error.keys()

    named = await groups.post("/groups", headers=ADMIN, json=ours)
    assert named.status_code == 409
    assert named.json()["error"]["other_group_id"] == first.json()["group_id"]


async def test_an_officer_sees_region_masked_nik_and_age_not_the_birth_date(recruitment):
    year = random.randint(2024, 2029)
    person = applicant(year, "3201")
    created = await recruitment.post("/applicants", headers=WEST_JAVA, json=person)
    assert created.status_code == 201, created.text
    applicant_id = created.json()["applicant_id"]
    assert created.json()["nik_masked"] == person["nik"][:6] + "*" * 10

    officer = (await recruitment.get(f"/applicants/{applicant_id}", headers=WEST_JAVA)).json()
    assert officer["nik_masked"] == person["nik"][:6] + "*" * 10
    assert officer["birth_date"] is None and isinstance(officer["age"], int)
    assert officer["sex"] == person["sex"]
    assert person["nik"][6:] not in str(officer)
    listed = (await recruitment.get("/applicants", headers=WEST_JAVA,
                                    params={"year": year})).json()["items"]
    [row] = [r for r in listed if r["applicant_id"] == applicant_id]
    assert row["birth_date"] is None and row["nik"] is None

    ministry = (await recruitment.get(f"/applicants/{applicant_id}", headers=ADMIN)).json()
    assert ministry["birth_date"] == person["birth_date"] and ministry["nik"] is None


async def test_only_the_ministry_reveals_a_nik_and_every_reveal_is_audited(recruitment, groups,
                                                                          caplog):
    year = random.randint(2024, 2029)
    person = applicant(year, "3201")
    applicant_id = (await recruitment.post("/applicants", headers=ADMIN,
                                           json=person)).json()["applicant_id"]
    refused = await recruitment.get(f"/applicants/{applicant_id}", headers=WEST_JAVA,
                                    params={"reveal": "nik"})
    assert refused.status_code == 403 and person["nik"] not in refused.text

    with caplog.at_level(logging.INFO, logger="tkm.audit"):
        revealed = await recruitment.get(f"/applicants/{applicant_id}", headers=ADMIN,
                                         params={"reveal": "nik"})
    assert revealed.status_code == 200 and revealed.json()["nik"] == person["nik"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "tkm.audit"]
    assert applicant_id in line and "ministry_admin:" in line and person["nik"] not in line

    group = registration("3201", year=2023, name=f"KUB {uuid.uuid4().hex[:8]}")
    group_id = (await groups.post("/groups", headers=ADMIN, json=group)).json()["group_id"]
    masked = (await groups.get(f"/groups/{group_id}", headers=WEST_JAVA)).json()
    assert {m["nik"] for m in masked["members"]} == {m["nik"][:6] + "*" * 10
                                                     for m in group["members"]}
    assert (await groups.get(f"/groups/{group_id}", headers=WEST_JAVA,
                             params={"reveal": "nik"})).status_code == 403
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tkm.audit"):
        full = (await groups.get(f"/groups/{group_id}", headers=ADMIN,
                                 params={"reveal": "nik"})).json()
    assert {m["nik"] for m in full["members"]} == {m["nik"] for m in group["members"]}
    assert any(group_id in r.getMessage() for r in caplog.records if r.name == "tkm.audit")
