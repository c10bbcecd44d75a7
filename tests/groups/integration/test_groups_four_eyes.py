"""Four eyes on money in the groups service (issue 18, item 1), on the real service through HTTP
(real Kafka and Postgres): a maker cannot fund alone, cannot check their own request, and the
checker's grant funds exactly once (a second grant, two racing grants, a retried grant under
one Idempotency-Key); rejections carry a reason code; undecided requests expire; a bulk funding
is one batch granted item by item; LPJ acceptances go through another officer of the province;
the audit trail names the maker and the checker of one province's fundings in a month; and the
rebuilt read models, approval requests included, equal the live ones."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from services.groups.config import rule_book
from services.groups.handlers import four_eyes_of
from services.groups.projections import REBUILD
from shared.auth import Role, pseudonym
from shared.projections import rebuild_plan
from shared.settings import DEV_SIGNING_KEY
from shared.topics import GROUPS
from tests.groups.groups_support import (
    ADMIN,
    AGENCY,
    CHECKER,
    ask,
    bearer,
    fund,
    registration,
)
from tests.shared.integration.rebuild_support import table_rows, table_shapes
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

MAKER_SUBJECT = "officer@papuatengah.go.id"
MAKER = bearer(MAKER_SUBJECT, Role.PROVINCE, "94")  # a provincial officer of Papua Tengah
MAKER_AS_ADMIN = bearer(MAKER_SUBJECT, Role.ADMIN)  # the same person under another role
OFFICER_94 = bearer("officer2@papuatengah.go.id", Role.PROVINCE, "94")  # a colleague
OFFICER_11 = bearer("officer@acehprov.go.id", Role.PROVINCE, "11")
CHECKER_2 = bearer("second.checker@kemnaker.go.id", Role.ADMIN)
AUDITOR = bearer("inspektur@itjen.kemnaker.go.id", Role.AUDITOR)
MAKER_ALIAS = pseudonym(DEV_SIGNING_KEY, MAKER_SUBJECT)
CHECKER_ALIAS = pseudonym(DEV_SIGNING_KEY, "checker@kemnaker.go.id")
WIT = timezone(timedelta(hours=9))


def funding(tranche: int = 1, amount: int = 20_000_000) -> dict:
    return {"tranche": tranche, "amount": amount, "disbursed_on": "2023-06-01",
            "budget_year": 2023}


async def approved_group(groups, regency_code: str = "9401") -> str:
    created = await groups.client.post("/groups", json=registration(regency_code), headers=ADMIN)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    approved = await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    assert approved.status_code == 200, approved.text
    return group_id


async def store(groups, sql: str, *args):
    conn = await asyncpg.connect(groups.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def fundings_of(groups, group_id: str) -> list[asyncpg.Record]:
    return await store(groups, "SELECT actor, causation_id, correlation_id, payload FROM events "
                       "WHERE stream_id = $1 AND event_type = 'GroupFunded' "
                       "ORDER BY stream_version", f"group-{group_id}")


async def approval_events(groups, request_id: str) -> list[tuple[str, str]]:
    rows = await store(groups, "SELECT event_type, actor FROM events WHERE stream_id = $1 "
                       "ORDER BY stream_version", f"approval-{request_id}")
    return [(r["event_type"].removeprefix("approvals."), r["actor"]) for r in rows]


def group_events(records: list, group_id: str) -> list[str]:
    key = f"group-{group_id}".encode()
    return [json.loads(r.value)["event_type"] for r in records if r.key == key]


async def test_a_maker_cannot_fund_alone_and_the_checker_funds_exactly_once(groups):
    group_id = await approved_group(groups)
    marker = await approved_group(groups, "9402")
    before = (await groups.client.get("/reports/funding", headers=AGENCY,
                                      params={"budget_year": 2023, "province_code": "94"})).json()
    pending = await ask(groups.client, f"/groups/{group_id}/funding", MAKER, json=funding())
    assert (pending["command_type"], pending["target"], pending["group_id"]) == (
        "fund", f"group-{group_id}", group_id)
    assert pending["checker_roles"] == ["ministry_admin"]
    expires_at = datetime.fromisoformat(pending["expires_at"])
    assert timedelta(days=6, hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=7)

    # nothing moved: no event, the read models as they were, nothing on the topic
    assert await fundings_of(groups, group_id) == []
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["status"], detail["tranches"], detail["funded_total"]) == ("approved", 0, 0)
    after = (await groups.client.get("/reports/funding", headers=AGENCY,
                                     params={"budget_year": 2023, "province_code": "94"})).json()
    assert after == before
    # the marker's approval, committed after the request, is published after anything it wrote
    assert (await groups.client.post(f"/groups/{marker}/dissolution", headers=ADMIN,
                                     json={"reason_code": "other"})).status_code == 200
    records = await read_topic(groups.kafka_bootstrap, GROUPS, until=lambda recs: (
        "GroupDissolved" in group_events(recs, marker)))
    assert group_events(records, group_id) == ["GroupRegistered", "GroupApproved"]
    assert not [r for r in records if b"approvals." in r.value]

    # the maker, under any role, and a role that does not check fundings: 403
    request_id = pending["request_id"]
    for who in (MAKER, MAKER_AS_ADMIN):
        refused = await groups.client.post(f"/approvals/{request_id}/grant", headers=who)
        assert (refused.status_code, refused.json()["error"]["field"]) == (403, "checker")
        assert "cannot check their own request" in refused.json()["error"]["reason"]
    colleague = await groups.client.post(f"/approvals/{request_id}/grant", headers=OFFICER_94)
    assert (colleague.status_code, colleague.json()["error"]["field"]) == (403, "checker")
    agency = await groups.client.post(f"/approvals/{request_id}/grant", headers=AGENCY)
    assert agency.status_code == 403
    assert await fundings_of(groups, group_id) == []

    granted = await groups.client.post(f"/approvals/{request_id}/grant", headers=CHECKER)
    assert granted.status_code == 200, granted.text
    result = granted.json()["result"]
    assert (result["group_id"], result["status"], result["tranche"], result["amount"],
            result["funded_total"], result["planned_tools"]) == (
        group_id, "funded", 1, 20_000_000, 20_000_000, 12_000_000)
    again = await groups.client.post(f"/approvals/{request_id}/grant", headers=CHECKER_2)
    assert again.status_code == 409, again.text
    assert (again.json()["error"]["state"], again.json()["error"]["result"]) == (
        "granted", result)

    [funded] = await fundings_of(groups, group_id)
    assert funded["actor"] == f"ministry_admin:{CHECKER_ALIAS}"
    [requested] = await store(groups, "SELECT event_id FROM events WHERE stream_id = $1 AND "
                              "stream_version = 1", f"approval-{request_id}")
    assert funded["causation_id"] == requested["event_id"]  # back to who asked for it
    assert await approval_events(groups, request_id) == [
        ("ApprovalRequested", f"provincial_officer:{MAKER_ALIAS}"),
        ("ApprovalGranted", f"ministry_admin:{CHECKER_ALIAS}"),
        ("ApprovalCarriedOut", f"ministry_admin:{CHECKER_ALIAS}")]
    shown = (await groups.client.get(f"/approvals/{request_id}", headers=OFFICER_94)).json()
    assert (shown["state"], shown["maker"], shown["checker"], shown["amount"]) == (
        "granted", MAKER_ALIAS, CHECKER_ALIAS, 20_000_000)
    records = await read_topic(groups.kafka_bootstrap, GROUPS, until=lambda recs: (
        "GroupFunded" in group_events(recs, group_id)))
    assert group_events(records, group_id).count("GroupFunded") == 1


async def test_racing_grants_and_a_retried_grant_fund_once(groups):
    retried, raced = await approved_group(groups), await approved_group(groups)
    asked = await ask(groups.client, f"/groups/{retried}/funding", MAKER, json=funding())
    key = {"Idempotency-Key": f"grant-{uuid.uuid4()}"}
    first = await groups.client.post(f"/approvals/{asked['request_id']}/grant",
                                     headers={**CHECKER, **key})
    retry = await groups.client.post(f"/approvals/{asked['request_id']}/grant",
                                     headers={**CHECKER, **key})
    assert first.status_code == retry.status_code == 200, retry.text
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == first.json()
    assert len(await fundings_of(groups, retried)) == 1

    asked = await ask(groups.client, f"/groups/{raced}/funding", MAKER, json=funding())
    answers = await asyncio.gather(*(
        groups.client.post(f"/approvals/{asked['request_id']}/grant", headers=who)
        for who in (CHECKER, CHECKER_2, CHECKER, CHECKER_2)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert len(await fundings_of(groups, raced)) == 1


async def test_one_pending_request_per_tranche_and_a_later_tranche_is_a_tranche_change(groups):
    group_id = await approved_group(groups)
    answers = await asyncio.gather(*(
        groups.client.post(f"/groups/{group_id}/funding", json=funding(amount=8_000_000),
                           headers=MAKER) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [202, 409, 409, 409, 409]
    [first] = [a.json() for a in answers if a.status_code == 202]
    assert {a.json()["error"]["request_id"] for a in answers if a.status_code == 409} == {
        first["request_id"]}
    # tranche 2 waits for tranche 1 to be paid
    early = await groups.client.post(f"/groups/{group_id}/funding", headers=MAKER,
                                     json=funding(tranche=2, amount=5_000_000))
    assert (early.status_code, early.json()["error"]["field"]) == (422, "tranche")
    await groups.client.post(f"/approvals/{first['request_id']}/grant", headers=CHECKER)
    later = await ask(groups.client, f"/groups/{group_id}/funding", MAKER,
                      json=funding(tranche=2, amount=5_000_000))
    assert later["command_type"] == "change_tranche"
    # refused at the asking, nothing written: over the ceiling, another province, unknown group
    for body, who, status in ((funding(tranche=2, amount=12_000_001), MAKER, 422),
                              (funding(tranche=2, amount=1), OFFICER_11, 403)):
        refused = await groups.client.post(f"/groups/{group_id}/funding", headers=who, json=body)
        assert refused.status_code == status, refused.text
    assert (await groups.client.post("/groups/nope/funding", headers=MAKER,
                                     json=funding())).status_code == 404
    assert (await groups.client.post(f"/groups/{group_id}/funding", headers=AGENCY,
                                     json=funding(tranche=2))).status_code == 403
    granted = await groups.client.post(f"/approvals/{later['request_id']}/grant",
                                       headers=CHECKER)
    assert granted.json()["result"]["funded_total"] == 13_000_000
    rows = await store(groups, "SELECT count(*) AS n FROM approval_requests WHERE target = $1",
                       f"group-{group_id}")
    assert rows[0]["n"] == 2


async def test_a_rejection_needs_a_year_s_reason_code_and_is_never_granted(groups):
    group_id = await approved_group(groups)
    asked = await ask(groups.client, f"/groups/{group_id}/funding", MAKER,
                      json=funding(amount=25_000_000 // 2))
    url = f"/approvals/{asked['request_id']}"
    missing = await groups.client.post(f"{url}/reject", headers=CHECKER, json={})
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "reason_code")
    unknown = await groups.client.post(f"{url}/reject", headers=CHECKER,
                                       json={"reason_code": "too_expensive"})
    assert unknown.status_code == 422
    assert "wrong_amount" in unknown.json()["error"]["reason"]
    own = await groups.client.post(f"{url}/reject", headers=MAKER_AS_ADMIN,
                                   json={"reason_code": "duplicate"})
    assert own.status_code == 403
    rejected = await groups.client.post(f"{url}/reject", headers=CHECKER, json={
        "reason_code": "wrong_amount", "note": "tranche 1 of 2023 is Rp 20.000.000"})
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["state"], rejected.json()["reason_code"]) == (
        "rejected", "wrong_amount")
    granted = await groups.client.post(f"{url}/grant", headers=CHECKER_2)
    assert (granted.status_code, granted.json()["error"]["state"]) == (409, "rejected")
    assert await fundings_of(groups, group_id) == []
    assert await approval_events(groups, asked["request_id"]) == [
        ("ApprovalRequested", f"provincial_officer:{MAKER_ALIAS}"),
        ("ApprovalRejected", f"ministry_admin:{CHECKER_ALIAS}")]
    # the rejected request no longer holds the tranche: the right amount may be asked for
    await ask(groups.client, f"/groups/{group_id}/funding", MAKER, json=funding())


async def test_undecided_requests_expire_and_are_never_granted(groups):
    group_id = await approved_group(groups)
    asked = await ask(groups.client, f"/groups/{group_id}/funding", MAKER, json=funding())
    expires_at = datetime.fromisoformat(asked["expires_at"])
    ctx = groups.app.state.ctx
    sweeper = four_eyes_of(rule_book())  # expire_due reads no rules: any book will do
    assert await sweeper.expire_due(ctx.pool, ctx.store,
                                    now=expires_at - timedelta(seconds=1)) == 0
    assert await sweeper.expire_due(ctx.pool, ctx.store,
                                    now=expires_at + timedelta(seconds=1)) >= 1
    granted = await groups.client.post(f"/approvals/{asked['request_id']}/grant",
                                       headers=CHECKER)
    assert (granted.status_code, granted.json()["error"]["state"]) == (409, "expired")
    assert await approval_events(groups, asked["request_id"]) == [
        ("ApprovalRequested", f"provincial_officer:{MAKER_ALIAS}"), ("ApprovalExpired", "system")]
    assert await fundings_of(groups, group_id) == []
    expired = (await groups.client.get("/approvals", headers=CHECKER, params={
        "state": "expired", "limit": 1000})).json()
    assert asked["request_id"] in {i["request_id"] for i in expired["items"]}


async def test_a_bulk_funding_is_one_batch_granted_item_by_item(groups):
    ids = [await approved_group(groups) for _ in range(3)]
    unapproved = (await groups.client.post("/groups", json=registration("9401"),
                                           headers=ADMIN)).json()["group_id"]
    elsewhere = await approved_group(groups, "3201")
    made = await groups.client.post("/groups/fundings", headers=MAKER, json={"items": [
        {"group_id": g, **funding()} for g in (*ids, unapproved, elsewhere)]})
    assert made.status_code == 200, made.text
    body = made.json()
    batch_id = str(uuid.UUID(body["batch_id"]))
    results = body["results"]
    assert [(r["group_id"], r["status"]) for r in results] == [
        (ids[0], 202), (ids[1], 202), (ids[2], 202), (unapproved, 422), (elsewhere, 403)]
    assert all(r["result"]["state"] == "pending" for r in results[:3])
    assert results[3]["error"]["field"] == "group_id"
    request_ids = [r["result"]["request_id"] for r in results[:3]]
    listed = (await groups.client.get("/approvals", headers=CHECKER, params={
        "batch_id": batch_id, "checkable": "true"})).json()
    assert (listed["total"], [i["request_id"] for i in listed["items"]]) == (3, request_ids)
    assert {i["batch_id"] for i in listed["items"]} == {batch_id}
    assert (await groups.client.get("/approvals", headers=MAKER, params={
        "batch_id": batch_id, "checkable": "true"})).json()["total"] == 0
    for g in ids:
        assert await fundings_of(groups, g) == []

    self_check = await groups.client.post("/approvals/grant", headers=MAKER_AS_ADMIN,
                                          json={"request_ids": request_ids})
    assert [r["status"] for r in self_check.json()["results"]] == [403] * 3
    rejected = await groups.client.post(f"/approvals/{request_ids[1]}/reject",
                                        headers=CHECKER, json={"reason_code": "not_eligible"})
    assert rejected.status_code == 200
    granted = await groups.client.post("/approvals/grant", headers=CHECKER,
                                       json={"request_ids": request_ids})
    assert granted.status_code == 200, granted.text
    answer = granted.json()
    assert ([r["status"] for r in answer["results"]], answer["granted"]) == ([200, 409, 200], 2)
    assert answer["results"][0]["result"]["status"] == "funded"
    assert [len(await fundings_of(groups, g)) for g in ids] == [1, 0, 1]


async def test_a_granted_list_is_carried_out_together_each_funding_caused_by_its_request(groups):
    """A checker's list is granted set-based (a few statements for the chunk): each request's
    grant, funding and carried-out record are caused by that request's own ApprovalRequested,
    and a request whose command is refused at grant time (its group dissolved after the ask)
    writes nothing and stays pending, while the others of the list are carried out."""
    ids = [await approved_group(groups) for _ in range(3)]
    made = (await groups.client.post("/groups/fundings", headers=MAKER, json={
        "items": [{"group_id": g, **funding()} for g in ids]})).json()
    request_ids = [r["result"]["request_id"] for r in made["results"]]
    dissolved = await groups.client.post(f"/groups/{ids[1]}/dissolution", headers=ADMIN,
                                         json={"reason_code": "members_left"})
    assert dissolved.status_code == 200, dissolved.text
    granted = await groups.client.post("/approvals/grant", headers=CHECKER,
                                       json={"request_ids": request_ids})
    assert granted.status_code == 200, granted.text
    results = granted.json()["results"]
    assert [r["status"] for r in results][::2] == [200, 200] and results[1]["status"] >= 400
    assert results[1]["error"]["reason"], results[1]
    assert [len(await fundings_of(groups, g)) for g in ids] == [1, 0, 1]
    assert await approval_events(groups, request_ids[1]) == [
        ("ApprovalRequested", f"provincial_officer:{MAKER_ALIAS}")]
    correlations = set()
    for group_id, request_id in ((ids[0], request_ids[0]), (ids[2], request_ids[2])):
        rows = await store(groups, "SELECT event_id, event_type, causation_id, correlation_id "
                           "FROM events WHERE stream_id = $1 ORDER BY stream_version",
                           f"approval-{request_id}")
        assert [r["event_type"].removeprefix("approvals.") for r in rows] == [
            "ApprovalRequested", "ApprovalGranted", "ApprovalCarriedOut"]
        asked_for = rows[0]["event_id"]
        [funded] = await fundings_of(groups, group_id)
        assert funded["causation_id"] == asked_for
        assert [r["causation_id"] for r in rows[1:]] == [asked_for, asked_for]
        assert json.loads(funded["payload"])["amount"] == 20_000_000
        correlations |= {funded["correlation_id"], *(r["correlation_id"] for r in rows[1:])}
    assert len(correlations) == 1  # one grant call
    for state, expected in (("granted", {request_ids[0], request_ids[2]}),
                            ("pending", {request_ids[1]})):
        listed = (await groups.client.get("/approvals", headers=ADMIN, params={
            "batch_id": made["batch_id"], "state": state})).json()
        assert {i["request_id"] for i in listed["items"]} == expected


async def test_lpj_acceptance_goes_through_another_officer_of_the_province(groups):
    group_id = await approved_group(groups)
    await fund(groups.client, group_id, funding(), maker=MAKER)
    submitted = await groups.client.post(f"/groups/{group_id}/lpj", headers=MAKER, json={
        "tools": 12_000_000, "materials": 8_000_000, "evidence_count": 4})
    report_id = submitted.json()["report_id"]
    asked = await ask(groups.client, f"/groups/{group_id}/lpj/{report_id}/acceptance", MAKER)
    assert (asked["command_type"], asked["report_id"]) == ("accept_lpj", report_id)
    assert asked["checker_roles"] == ["provincial_officer", "ministry_admin"]
    again = await groups.client.post(f"/groups/{group_id}/lpj/{report_id}/acceptance",
                                     headers=OFFICER_94)
    assert (again.status_code, again.json()["error"]["field"]) == (409, "report_id")
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["lpj_status"], detail["accounted_total"]) != ("accepted", 20_000_000)

    url = f"/approvals/{asked['request_id']}"
    # a provincial officer cannot see nor check another province's request
    assert (await groups.client.get(url, headers=OFFICER_11)).status_code == 404
    outside = await groups.client.post(f"{url}/grant", headers=OFFICER_11)
    assert outside.status_code == 403, outside.text
    listed = (await groups.client.get("/approvals", headers=OFFICER_11,
                                      params={"limit": 1000})).json()
    assert asked["request_id"] not in {i["request_id"] for i in listed["items"]}
    assert (await groups.client.get("/approvals", headers=OFFICER_11,
                                    params={"province": "94"})).status_code == 403
    own = await groups.client.post(f"{url}/grant", headers=MAKER)
    assert own.status_code == 403
    checkable = (await groups.client.get("/approvals", headers=OFFICER_94, params={
        "checkable": "true", "command_type": "accept_lpj", "limit": 1000})).json()
    assert asked["request_id"] in {i["request_id"] for i in checkable["items"]}

    granted = await groups.client.post(f"{url}/grant", headers=OFFICER_94)
    assert granted.status_code == 200, granted.text
    assert granted.json()["result"] == {"group_id": group_id, "report_id": report_id,
                                        "status": "accepted"}
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["lpj_status"], detail["accounted_total"]) == ("accepted", 20_000_000)
    accepted = await store(groups, "SELECT actor FROM events WHERE stream_id = $1 AND "
                           "event_type = 'AccountabilityReportAccepted'", f"group-{group_id}")
    assert [r["actor"] for r in accepted] == [
        f"provincial_officer:{pseudonym(DEV_SIGNING_KEY, 'officer2@papuatengah.go.id')}"]


async def test_bulk_lpj_acceptances_are_a_batch_too(groups):
    ids = [await approved_group(groups) for _ in range(2)]
    reports = []
    for g in ids:
        await fund(groups.client, g, funding())
        reports.append((await groups.client.post(f"/groups/{g}/lpj", headers=ADMIN, json={
            "tools": 1_000_000, "materials": 500_000, "evidence_count": 1})).json()["report_id"])
    made = await groups.client.post("/lpj/acceptances", headers=MAKER, json={"items": [
        {"group_id": g, "report_id": r} for g, r in zip(ids, reports, strict=True)]
        + [{"group_id": ids[0], "report_id": str(uuid.uuid4())}]})
    body = made.json()
    assert [r["status"] for r in body["results"]] == [202, 202, 404], made.text
    granted = await groups.client.post("/approvals/grant", headers=OFFICER_94, json={
        "request_ids": [r["result"]["request_id"] for r in body["results"][:2]]})
    assert granted.json()["granted"] == 2, granted.text
    listed = (await groups.client.get("/approvals", headers=ADMIN, params={
        "batch_id": body["batch_id"], "state": "granted"})).json()
    assert listed["total"] == 2
    assert {i["checker"] for i in listed["items"]} == {
        pseudonym(DEV_SIGNING_KEY, "officer2@papuatengah.go.id")}


async def test_the_audit_trail_names_the_maker_and_the_checker_of_a_month_s_fundings(groups):
    papua, west_java = await approved_group(groups, "9403"), await approved_group(groups, "3202")
    grant_cid = str(uuid.uuid4())
    await fund(groups.client, papua, funding(), maker=MAKER,
               headers={"X-Correlation-ID": grant_cid})
    await fund(groups.client, west_java, funding())
    now = datetime.now(WIT)  # the month in Papua Tengah's own time
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (month + timedelta(days=32)).replace(day=1)
    answer = await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "from": month.isoformat(), "to": following.isoformat(),
        "type": ["approvals.ApprovalRequested", "approvals.ApprovalGranted", "GroupFunded"],
        "limit": 1000})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert {r["province_code"] for r in items} == {"94"}
    assert not [r for r in items if west_java in r["stream_id"] + r["summary"]]
    [asked] = [r for r in items if r["event_type"] == "approvals.ApprovalRequested"
               and f"target=group-{papua}" in r["summary"]]
    [granted] = [r for r in items if r["event_type"] == "approvals.ApprovalGranted"
                 and r["stream_id"] == asked["stream_id"]]
    [funded] = [r for r in items if r["event_type"] == "GroupFunded"
                and r["stream_id"] == f"group-{papua}"]
    assert (asked["actor"], asked["actor_role"]) == (MAKER_ALIAS, "provincial_officer")
    assert "command_type=fund" in asked["summary"] and "amount=20000000" in asked["summary"]
    assert f"maker={MAKER_ALIAS}" in asked["summary"]
    assert (granted["actor"], granted["actor_role"]) == (CHECKER_ALIAS, "ministry_admin")
    assert f"checker={CHECKER_ALIAS}" in granted["summary"]
    assert (funded["actor"], funded["correlation_id"]) == (CHECKER_ALIAS, grant_cid)
    assert granted["correlation_id"] == grant_cid
    as_csv = await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "from": month.isoformat(), "to": following.isoformat(),
        "type": "approvals.ApprovalGranted", "format": "csv"})
    assert granted["event_id"] in as_csv.text and MAKER_SUBJECT not in as_csv.text


async def test_the_rebuilt_read_models_and_approval_requests_equal_the_live_ones(groups):
    # requests granted, rejected and pending (and expired, by the test above)
    granted, rejected, pending = [await approved_group(groups) for _ in range(3)]
    await fund(groups.client, granted, funding())
    asked = await ask(groups.client, f"/groups/{rejected}/funding", MAKER, json=funding())
    await groups.client.post(f"/approvals/{asked['request_id']}/reject", headers=CHECKER,
                             json={"reason_code": "duplicate", "note": "asked twice"})
    await ask(groups.client, f"/groups/{pending}/funding", MAKER, json=funding())
    conn = await asyncpg.connect(groups.database_url)
    try:
        assert "approval_requests" in REBUILD.tables
        live = await table_rows(conn, REBUILD.tables)
        shapes = await table_shapes(conn, REBUILD.tables)
        states = {r["state"] for r in await conn.fetch("SELECT state FROM approval_requests")}
        assert {"granted", "rejected", "pending"} <= states, states
        await rebuild_plan(conn, REBUILD)
        assert await table_rows(conn, REBUILD.tables) == live
        assert await table_shapes(conn, REBUILD.tables) == shapes
    finally:
        await conn.close()
