"""Funding through the HTTP API, maker -> checker (four eyes): once per tranche under
concurrency, totals that match the topic."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import date, timedelta

import pytest

from shared.auth import Role
from shared.topics import GROUPS
from tests.groups.groups_support import (
    ADMIN,
    AGENCY,
    CHECKER,
    auth,
    fund,
    registration,
    running_groups,
    through_checker,
)
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


def funding(tranche: int = 1, amount: int = 20_000_000, budget_year: int = 2023) -> dict:
    return {"tranche": tranche, "amount": amount, "disbursed_on": f"{budget_year}-06-01",
            "budget_year": budget_year}


async def approved_group(groups, regency_code: str = "3201") -> str:
    created = await groups.client.post("/groups", json=registration(regency_code), headers=ADMIN)
    group_id = created.json()["group_id"]
    approved = await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    assert approved.status_code == 200, approved.text
    return group_id


def _events(records: list, group_ids: set[str], event_type: str) -> list[dict]:
    keys = {f"group-{g}".encode() for g in group_ids}
    return [envelope for envelope in (json.loads(r.value) for r in records if r.key in keys)
            if envelope["event_type"] == event_type]


async def test_ten_concurrent_fundings_of_one_tranche_fund_it_once(groups):
    group_id = await approved_group(groups)
    answers = await asyncio.gather(*(
        groups.client.post(f"/groups/{group_id}/funding", json=funding(), headers=ADMIN)
        for _ in range(10)))
    assert Counter(a.status_code for a in answers) == {202: 1, 409: 9}
    assert all(a.json()["error"]["field"] == "tranche" for a in answers if a.status_code == 409)
    [asked] = [a.json() for a in answers if a.status_code == 202]
    grants = await asyncio.gather(*(
        groups.client.post(f"/approvals/{asked['request_id']}/grant", headers=CHECKER)
        for _ in range(3)))
    assert sorted(g.status_code for g in grants) == [200, 409, 409]

    records = await read_topic(groups.kafka_bootstrap, GROUPS, until=lambda recs: _events(
        recs, {group_id}, "GroupFunded"))
    funded = _events(records, {group_id}, "GroupFunded")
    assert len(funded) == 1
    assert funded[0]["payload"]["amount"] == 20_000_000


async def test_funding_is_asked_in_the_province_and_needs_an_approved_group(groups):
    group_id = await approved_group(groups)
    for who in (auth(Role.PROVINCE, "11"), AGENCY, auth(Role.TKS)):
        refused = await groups.client.post(f"/groups/{group_id}/funding", json=funding(),
                                           headers=who)
        assert refused.status_code == 403, refused.text
    created = await groups.client.post("/groups", json=registration(), headers=ADMIN)
    unapproved = await groups.client.post(f"/groups/{created.json()['group_id']}/funding",
                                          json=funding(), headers=ADMIN)
    assert unapproved.status_code == 422
    too_much = await groups.client.post(f"/groups/{group_id}/funding",
                                        json=funding(amount=20_000_001), headers=ADMIN)
    assert (too_much.status_code, too_much.json()["error"]["field"]) == (422, "amount")
    nothing = await groups.client.post(f"/groups/{group_id}/funding", json=funding(amount=0),
                                       headers=ADMIN)
    assert nothing.status_code == 422 and nothing.json()["error"]["field"] == "amount"
    unknown = await groups.client.post("/groups/nope/funding", json=funding(), headers=ADMIN)
    assert unknown.status_code == 404


async def test_provincial_totals_equal_the_group_funded_events_on_the_topic(infra):
    # a database of its own, so the totals hold only this test's groups
    async with running_groups(infra) as groups:
        regencies = ["3201", "3273", "6501", "5171", "5171"]
        ids = [await approved_group(groups, r) for r in regencies]
        items = [{"group_id": g, **funding(amount=10_000_000 + i * 1_000_000)}
                 for i, g in enumerate(ids)]
        items.append({"group_id": ids[1], **funding(tranche=1)})  # a repeat: refused
        # a later tranche is asked for once the first is paid
        early = {"group_id": ids[0], **funding(tranche=2, amount=2_500_000)}
        items.insert(1, early)
        results = await through_checker(groups.client, "/groups/fundings", items, 201)
        assert [r["status"] for r in results] == [201, 422] + [201] * 4 + [409], results
        results = await through_checker(groups.client, "/groups/fundings", [early], 201)
        assert [r["status"] for r in results] == [201], results

        totals = (await groups.client.get("/reports/funding", params={"budget_year": 2023},
                                          headers=AGENCY)).json()
        records = await read_topic(groups.kafka_bootstrap, GROUPS, until=lambda recs: len(
            _events(recs, set(ids), "GroupFunded")) >= 6)
        from_topic: Counter = Counter()
        for event in _events(records, set(ids), "GroupFunded"):
            from_topic[event["payload"]["province_code"]] += event["payload"]["amount"]
        assert {t["province_code"]: t["amount_disbursed"] for t in totals} == dict(from_topic)
        assert from_topic == {"32": 10_000_000 + 11_000_000 + 2_500_000, "65": 12_000_000,
                              "51": 13_000_000 + 14_000_000}
        by_province = {t["province_code"]: t for t in totals}
        assert (by_province["51"]["groups_funded"], by_province["32"]["tranches"]) == (2, 3)

        reached = (await groups.client.get("/reports/people-reached", params={"year": 2023},
                                           headers=AGENCY)).json()
        assert {r["province_code"]: r["members_funded"] for r in reached} == {
            "32": 20, "65": 10, "51": 20}


async def test_bulk_approval_answers_per_item(groups):
    ids = [(await groups.client.post("/groups", json=registration(),
                                     headers=ADMIN)).json()["group_id"] for _ in range(3)]
    answer = await groups.client.post("/groups/approvals", headers=auth(Role.PROVINCE, "32"),
                                      json={"group_ids": [*ids, ids[0], "missing"]})
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 200, 409, 404]


async def test_no_tranche_beyond_the_configured_maximum(groups):
    group_id = await approved_group(groups)
    for tranche in (1, 2, 3):
        paid = await fund(groups.client, group_id, funding(tranche=tranche, amount=5_000_000))
        assert paid["tranche"] == tranche
    fourth = await groups.client.post(f"/groups/{group_id}/funding", headers=ADMIN,
                                      json=funding(tranche=4, amount=1_000_000))
    assert (fourth.status_code, fourth.json()["error"]["field"]) == (422, "tranche")
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["tranches"], detail["funded_total"]) == (3, 15_000_000)


@pytest.mark.parametrize("disbursed_on", ["9999-12-31", "1901-01-01", "2022-12-31",
                                          "2024-01-01"])
async def test_a_disbursement_date_outside_the_group_and_budget_years_is_a_422(groups,
                                                                                disbursed_on):
    group_id = await approved_group(groups)
    answer = await groups.client.post(f"/groups/{group_id}/funding", headers=ADMIN,
                                      json={**funding(), "disbursed_on": disbursed_on})
    assert (answer.status_code, answer.json()["error"]["field"]) == (422, "disbursed_on")
    bulk = await groups.client.post("/groups/fundings", headers=ADMIN, json={"items": [
        {"group_id": group_id, **funding(), "disbursed_on": disbursed_on}]})
    if disbursed_on[:4] in ("9999", "1901"):
        # outside the programme's years the request itself is malformed: refused whole
        assert (bulk.status_code, bulk.json()["error"]["field"]) == (422,
                                                                     "items.0.disbursed_on")
    else:  # in bulk too, answered per item
        assert bulk.json()["results"][0]["status"] == 422


async def test_a_disbursement_in_the_future_is_a_422(groups):
    group_id = await approved_group(groups)
    later = date.today() + timedelta(days=2)
    answer = await groups.client.post(f"/groups/{group_id}/funding", headers=ADMIN, json={
        **funding(budget_year=later.year), "disbursed_on": later.isoformat()})
    assert (answer.status_code, answer.json()["error"]["field"]) == (422, "disbursed_on")


async def test_huge_numbers_are_a_422_not_a_500(groups):
    group_id = await approved_group(groups)
    post, get = groups.client.post, groups.client.get
    for body, field in ((funding(amount=10**30), "amount"), (funding(tranche=2**40), "tranche")):
        answer = await post(f"/groups/{group_id}/funding", headers=ADMIN, json=body)
        assert (answer.status_code, answer.json()["error"]["field"]) == (422, field)
    assert (await fund(groups.client, group_id, funding()))["status"] == "funded"
    for change, field in (({"evidence_count": 2**31}, "evidence_count"),
                          ({"tools": 10**20}, "tools"), ({"other": 2**63}, "other")):
        lpj = await post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
            "tools": 1, "materials": 1, "other": 0, "evidence_count": 1, **change})
        assert (lpj.status_code, lpj.json()["error"]["field"]) == (422, field), lpj.text
    product = await post(f"/groups/{group_id}/product-evidence", headers=ADMIN, json={
        "product": "Kue", "evidence_count": 2**31, "recorded_on": "2023-10-02"})
    assert (product.status_code, product.json()["error"]["field"]) == (422, "evidence_count")
    for path in ("/groups", "/lpj/outstanding", "/lpj/overdue"):
        page = await get(path, params={"page": 10**19}, headers=AGENCY)
        assert (page.status_code, page.json()["error"]["field"]) == (422, "query.page"), path
    last = await get("/groups", params={"page": 100_000}, headers=AGENCY)
    assert last.status_code == 200 and last.json()["items"] == []
