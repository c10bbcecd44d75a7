"""Junk input is a 422 with its field, never a 500, in the real services (in process with their
lifespans, real Kafka and Postgres): the one text type, strict numbers, plausible dates."""

from __future__ import annotations

import uuid

import pytest

from shared.auth import Role
from tests.groups.groups_support import registration
from tests.recruitment.recruitment_helpers import applicant
from tests.support.edge import bearer, running

pytestmark = pytest.mark.integration
ADMIN = bearer(Role.ADMIN)


def refused(response, field: str) -> None:
    assert response.status_code == 422, response.text[:300]
    fields = [response.json()["error"]["field"],
              *(e["field"] for e in response.json().get("errors", []))]
    assert any(f and f.endswith(field) for f in fields), fields


@pytest.fixture(scope="module")
async def groups(infra):
    async with running(infra, "groups") as (_, client):
        yield client


@pytest.fixture(scope="module")
async def mentoring(infra):
    async with running(infra, "mentoring") as (_, client):
        yield client


@pytest.fixture(scope="module")
async def recruitment(infra):
    async with running(infra, "recruitment") as (_, client):
        yield client


async def test_nul_in_a_name_a_path_or_a_query_is_a_422(groups, recruitment, mentoring):
    body = registration()
    body["members"][0]["name"] = "Siti\x00Aminah"
    refused(await groups.post("/groups", json=body, headers=ADMIN), "members.0.name")
    refused(await recruitment.post("/applicants", headers=ADMIN,
                                   json={**applicant(), "full_name": "Budi\x00"}), "full_name")
    for client, path in ((groups, "/groups/abc%00def"), (mentoring, "/tks/tks%00x"),
                         (groups, "/groups?business_type=tailoring%00x"),
                         (recruitment, "/applicants?year=2023&name=%00")):
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 422, (path, response.text)
        assert "NUL" in response.json()["error"]["reason"]


async def test_a_name_of_zero_width_characters_only_is_a_422(groups):
    refused(await groups.post("/groups", headers=ADMIN,
                              json={**registration(), "name": "\u200b\u200c\u2060\u200f"}),
            "name")


async def test_names_differing_only_by_invisible_characters_are_one_group(groups):
    name = f"KUB Kembar {uuid.uuid4().hex[:8]}"
    first = await groups.post("/groups", headers=ADMIN, json=registration(name=name))
    assert first.status_code == 201, first.text
    twin = await groups.post("/groups", headers=ADMIN,
                             json=registration(name=f"\u200eKUB Kem\u200bbar{name[10:]}\u202c"))
    assert twin.status_code == 409, twin.text
    assert twin.json()["error"]["group_id"] == first.json()["group_id"]


async def test_rupiah_and_years_must_be_json_integers(groups):
    group_id = str(uuid.uuid4())
    funding = {"tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-03-01",
               "budget_year": 2023}
    for amount in ("20000000", 20000000.0, True):
        refused(await groups.post(f"/groups/{group_id}/funding", headers=ADMIN,
                                  json={**funding, "amount": amount}), "amount")
    refused(await groups.post(f"/groups/{group_id}/funding", headers=ADMIN,
                              json={**funding, "budget_year": "2023"}), "budget_year")
    refused(await groups.post("/groups", headers=ADMIN, json={**registration(), "year": "2023"}),
            "year")


async def test_periods_and_dates_outside_the_programme_are_a_422(mentoring, groups):
    for period in ("0000-01", "9999-12"):
        refused(await mentoring.get(f"/periods/{period}", headers=ADMIN), "period")
        refused(await mentoring.get(f"/periods/{period}/overdue", headers=ADMIN), "period")
    refused(await mentoring.post(f"/groups/{uuid.uuid4()}/mentor", headers=ADMIN,
                                 json={"tks_id": "tks-1", "assigned_on": "0001-01-01"}),
            "assigned_on")
    refused(await groups.post(f"/groups/{uuid.uuid4()}/bimtek", headers=ADMIN,
                              json={"subject": "Bimtek", "held_on": "0001-01-01"}), "held_on")
