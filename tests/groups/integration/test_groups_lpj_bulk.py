"""Bulk LPJ submit / return / accept: the single calls' rules and answers, one result per item,
refused items changing nothing and hiding nothing of the others, a group's items in order.
Fundings and acceptances go maker -> checker (four eyes: `through_checker`)."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from services.groups import bulk, handlers
from services.groups.projections import REBUILD
from shared.auth import Role
from shared.projections import rebuild_plan
from tests.groups.groups_support import (
    ADMIN,
    CHECKER,
    auth,
    csv_file,
    csv_rows,
    registration,
    through_checker,
)
from tests.groups.integration.test_groups_bulk import events_of, funding, requests_of
from tests.shared.integration.rebuild_support import table_rows

pytestmark = pytest.mark.integration

SPENT = {"tools": 11_000_000, "materials": 8_500_000, "other": 0}


async def funded(client: httpx.AsyncClient, n: int, regency_code: str = "3201") -> list[str]:
    ids = []
    for _ in range(n):
        answer = await client.post("/groups", json=registration(regency_code), headers=ADMIN)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["group_id"])
    assert (await client.post("/groups/approvals", json={"group_ids": ids},
                              headers=ADMIN)).status_code == 200
    results = await through_checker(client, "/groups/fundings", [funding(g) for g in ids], 201)
    assert [r["status"] for r in results] == [201] * n, results
    return ids


def lpj(group_id: str, **overrides: int) -> dict:
    return {"group_id": group_id, **SPENT, "evidence_count": 5, **overrides}


async def test_a_mixed_submission_applies_the_good_items_and_refuses_the_rest(groups):
    a, b, c = await funded(groups.client, 3)
    approved_only = (await groups.client.post("/groups", json=registration(),
                                              headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{approved_only}/approval", headers=ADMIN)
    unknown = str(uuid.uuid4())
    answer = await groups.client.post("/lpj/submissions", headers=ADMIN, json={"items": [
        lpj(a), lpj(b), lpj(c, tools=15_000_000, materials=5_000_001), lpj(approved_only),
        lpj(unknown), lpj(a, evidence_count=9)]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["group_id"], r["status"]) for r in results] == [
        (a, 201), (b, 201), (c, 422), (approved_only, 422), (unknown, 404), (a, 409)]
    # the single call's answer, per item
    assert results[0]["result"] == {"group_id": a, "report_id": results[0]["result"]["report_id"],
                                    "status": "submitted", "remaining_balance": 500_000}
    assert results[2]["error"]["field"] == "spending"
    assert "awaits review" in results[5]["error"]["reason"]
    assert await events_of(groups.database_url, "AccountabilityReportSubmitted",
                           [a, b, c, approved_only]) == {a: 1, b: 1, c: 0, approved_only: 0}
    detail = (await groups.client.get(f"/groups/{a}", headers=ADMIN)).json()
    assert [(r["report_id"], r["status"], r["evidence_count"]) for r in detail["lpj_reports"]] == [
        (results[0]["result"]["report_id"], "submitted", 5)]


async def test_returns_and_acceptances_follow_the_single_calls_rules(groups):
    a, b, c = await funded(groups.client, 3)
    submitted = (await groups.client.post("/lpj/submissions", headers=ADMIN, json={
        "items": [lpj(g) for g in (a, b, c)]})).json()["results"]
    report = {r["group_id"]: r["result"]["report_id"] for r in submitted}

    returned = await groups.client.post("/lpj/returns", headers=ADMIN, json={"items": [
        {"group_id": a, "report_id": report[a], "reason_code": "evidence_missing",
         "note": "receipts for materials are missing"},
        {"group_id": b, "report_id": report[b], "reason_code": "not_a_reason"},
        {"group_id": c, "report_id": str(uuid.uuid4()), "reason_code": "evidence_missing"}]})
    # a reason code outside the contract is refused by the request's own validation
    assert returned.status_code == 422, returned.text
    returned = await groups.client.post("/lpj/returns", headers=ADMIN, json={"items": [
        {"group_id": a, "report_id": report[a], "reason_code": "evidence_missing",
         "note": "receipts for materials are missing"},
        {"group_id": c, "report_id": str(uuid.uuid4()), "reason_code": "evidence_missing"}]})
    assert [(r["group_id"], r["status"]) for r in returned.json()["results"]] == [
        (a, 200), (c, 404)]
    assert returned.json()["results"][0]["result"] == {
        "group_id": a, "report_id": report[a], "status": "returned"}

    again = (await groups.client.post("/lpj/submissions", headers=ADMIN, json={
        "items": [lpj(a, evidence_count=20)]})).json()["results"][0]
    assert again["status"] == 201
    accepted = await through_checker(groups.client, "/lpj/acceptances", [
        {"group_id": a, "report_id": report[a]},  # returned: no longer to review
        {"group_id": a, "report_id": again["result"]["report_id"]},
        {"group_id": b, "report_id": report[b]},
        {"group_id": b, "report_id": report[b]}], 200)  # asked just before, in the same request
    assert [r["status"] for r in accepted] == [409, 200, 200, 409]
    assert accepted[3]["error"]["field"] == "report_id"
    assert await events_of(groups.database_url, "AccountabilityReportAccepted", [a, b, c]) == {
        a: 1, b: 1, c: 0}
    assert await events_of(groups.database_url, "AccountabilityReportReturned", [a, b, c]) == {
        a: 1, b: 0, c: 0}
    for g in (a, b):
        detail = (await groups.client.get(f"/groups/{g}", headers=ADMIN)).json()
        assert (detail["lpj_status"], detail["accounted_total"]) == ("accepted", 19_500_000)
    notes = (await groups.client.get(f"/groups/{a}", headers=ADMIN)).json()["lpj_reports"]
    assert [(r["status"], r["note"]) for r in notes] == [
        ("returned", "receipts for materials are missing"), ("accepted", None)]


async def test_a_provincial_officer_acts_only_in_its_own_province(groups):
    west_java, east_java = (await funded(groups.client, 1, "3201"))[0], \
        (await funded(groups.client, 1, "3578"))[0]
    answer = await groups.client.post("/lpj/submissions", headers=auth(Role.PROVINCE, "32"),
                                      json={"items": [lpj(west_java), lpj(east_java)]})
    assert [r["status"] for r in answer.json()["results"]] == [201, 403]
    assert await events_of(groups.database_url, "AccountabilityReportSubmitted",
                           [west_java, east_java]) == {west_java: 1, east_java: 0}


async def test_items_span_transactions_in_order(groups, monkeypatch):
    monkeypatch.setattr(bulk, "GROUPS_PER_TRANSACTION", 2)
    a, b, c = await funded(groups.client, 3)
    # batches [a, b] and [c, a]: a's second report comes after its first, across the cut
    answer = await groups.client.post("/lpj/submissions", headers=ADMIN, json={
        "items": [lpj(a), lpj(b), lpj(c), lpj(a)]})
    assert [r["status"] for r in answer.json()["results"]] == [201, 201, 201, 409]
    assert await events_of(groups.database_url, "AccountabilityReportSubmitted", [a, b, c]) == {
        a: 1, b: 1, c: 1}


async def test_a_fault_in_one_item_stays_with_that_item(groups, monkeypatch):
    a, b, c = await funded(groups.client, 3)
    reports = (await groups.client.post("/lpj/submissions", headers=ADMIN, json={
        "items": [lpj(g) for g in (a, b, c)]})).json()["results"]
    ensure_not_asked = handlers.ensure_not_asked

    def faulty(ask, pending):  # a bug of ours, for b only, after b's acceptance was decided
        if ask.group.group_id == b:  # on the loaded group: its transaction of many fails,
            raise RuntimeError("boom")  # then each item runs alone
        return ensure_not_asked(ask, pending)

    monkeypatch.setattr(handlers, "ensure_not_asked", faulty)
    monkeypatch.setattr(bulk, "ensure_not_asked", faulty)
    answer = await groups.client.post("/lpj/acceptances", headers=ADMIN, json={"items": [
        {"group_id": r["group_id"], "report_id": r["result"]["report_id"]} for r in reports]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["status"], r.get("written")) for r in results] == [
        (202, None), (500, "no"), (202, None)]
    assert await requests_of(groups.database_url, [a, b, c], "accept_lpj") == {
        a: 1, b: 0, c: 1}
    granted = await groups.client.post("/approvals/grant", headers=CHECKER, json={
        "request_ids": [r["result"]["request_id"] for r in results if r["status"] == 202]})
    assert granted.json()["granted"] == 2, granted.text
    assert await events_of(groups.database_url, "AccountabilityReportAccepted", [a, b, c]) == {
        a: 1, b: 0, c: 1}


async def test_more_items_than_the_limit_are_refused_whole(groups):
    a = (await funded(groups.client, 1))[0]
    answer = await groups.client.post("/lpj/submissions", headers=ADMIN, json={
        "items": [lpj(a)] * 5_001})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "items"
    assert await events_of(groups.database_url, "AccountabilityReportSubmitted", [a]) == {a: 0}


async def test_bulk_read_models_equal_an_event_by_event_rebuild(groups):
    """A bulk request's run of one event type is projected set-based; replaying the same events
    one by one (`tkm rebuild groups`) gives the same tables."""
    ids = []
    for _ in range(4):
        answer = await groups.client.post("/groups", json=registration("3201"), headers=ADMIN)
        ids.append(answer.json()["group_id"])
    a, b, c, d = ids
    assert (await groups.client.post("/groups/approvals", json={"group_ids": ids},
                                     headers=ADMIN)).status_code == 200
    tranche = {**funding(a), "amount": 12_000_000}
    funded = await through_checker(groups.client, "/groups/fundings", [
        {**tranche, "group_id": a}, {**tranche, "group_id": b}, funding(c)], 201)
    assert [r["status"] for r in funded] == [201, 201, 201]
    funded = await through_checker(groups.client, "/groups/fundings", [
        {**tranche, "group_id": a, "tranche": 2, "amount": 8_000_000}], 201)
    assert [r["status"] for r in funded] == [201]
    spent = {"tools": 6_000_000, "materials": 5_000_000, "evidence_count": 4}
    reports = (await groups.client.post("/lpj/submissions", headers=ADMIN, json={"items": [
        {**spent, "group_id": g} for g in (a, b, c)]})).json()["results"]
    # b's second tranche after its report: accepting that report leaves b's LPJ due
    assert [r["status"] for r in await through_checker(groups.client, "/groups/fundings", [
        {**tranche, "group_id": b, "tranche": 2, "amount": 5_000_000}], 201)] == [201]
    accepted = await through_checker(groups.client, "/lpj/acceptances", [
        {"group_id": r["group_id"], "report_id": r["result"]["report_id"]} for r in reports], 200)
    assert [r["status"] for r in accepted] == [200, 200, 200]
    lpj_status = {g: (await groups.client.get(f"/groups/{g}", headers=ADMIN)).json()
                  ["lpj_status"] for g in (a, b, c, d)}
    assert lpj_status == {a: "accepted", b: "due", c: "accepted", d: "none"}

    conn = await asyncpg.connect(groups.database_url)
    try:
        projected = await table_rows(conn, REBUILD.tables)
        await rebuild_plan(conn, REBUILD)
        assert await table_rows(conn, REBUILD.tables) == projected
    finally:
        await conn.close()


async def test_imported_groups_read_models_equal_an_event_by_event_rebuild(groups):
    """A CSV import's registrations are projected set-based (registry, members, people reached,
    the one-group-per-person rule); a person named by two groups of one file joins the first."""
    names = [f"Set {uuid.uuid4().hex[:8]}" for _ in range(4)]
    rows = [row for i, name in enumerate(names)
            for row in csv_rows(name, regency_code=("3201", "3578")[i % 2])]
    rows[35][6] = rows[2][6]  # the fourth group names a member of the first
    answer = await groups.client.post("/groups/imports", content=csv_file(rows),
                                      headers={**ADMIN, "Content-Type": "text/csv"})
    report = answer.json()
    assert [r["status"] for r in report["results"]] == [
        "registered", "registered", "registered", "refused"], answer.text
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(37, "member_nik")]
    clean = await groups.client.post("/groups/imports", headers={
        **ADMIN, "Content-Type": "text/csv"}, content=csv_file(
        [row for name in (f"Set {uuid.uuid4().hex[:8]}" for _ in range(3))
         for row in csv_rows(name, regency_code="3201")]))
    assert clean.json()["registered"] == 3, clean.text
    detail = (await groups.client.get(f"/groups/{report['results'][0]['group_id']}",
                                      headers=ADMIN)).json()
    assert (detail["name"], detail["member_count"], len(detail["members"])) == (names[0], 10, 10)

    conn = await asyncpg.connect(groups.database_url)
    try:
        tables = [*REBUILD.tables, "active_memberships"]
        projected = await table_rows(conn, tables)
        await rebuild_plan(conn, REBUILD)
        assert await table_rows(conn, tables) == projected
    finally:
        await conn.close()
