"""The audit trail on the real groups service (real Kafka and Postgres): an inspector asks for one
province's funding decisions in a time window and gets them with their actors (the maker who
asked, the checker who granted: four eyes) and correlation id, as JSON or CSV, with no personal
data; an auditor changes nothing; only a ministry admin resolves a pseudonym, and the lookup is
itself in the trail."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.auth import Role, mint_token, pseudonym
from shared.settings import DEV_SIGNING_KEY
from tests.groups.groups_support import RunningGroups, registration, running_groups

pytestmark = pytest.mark.integration


def bearer(subject: str, role: Role, **scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, subject, role, **scope)}"}


ADMIN_A = bearer("admin.a@kemnaker.go.id", Role.ADMIN)
ADMIN_B = bearer("admin.b@kemnaker.go.id", Role.ADMIN)
CHECKER = bearer("direktur@kemnaker.go.id", Role.ADMIN)  # grants every funding here
AUDITOR = bearer("inspektur@bpk.go.id", Role.AUDITOR)
OFFICER_94 = bearer("officer@papuatengah.go.id", Role.PROVINCE, province_code="94")
ALIAS_A = pseudonym(DEV_SIGNING_KEY, "admin.a@kemnaker.go.id")
ALIAS_B = pseudonym(DEV_SIGNING_KEY, "admin.b@kemnaker.go.id")
ALIAS_CHECKER = pseudonym(DEV_SIGNING_KEY, "direktur@kemnaker.go.id")


@pytest.fixture(scope="module")
async def groups(infra) -> AsyncIterator[RunningGroups]:
    async with running_groups(infra) as service:
        yield service


async def funded_group(groups: RunningGroups, regency: str, admin: dict[str, str],
                       correlation_id: str) -> tuple[str, dict]:
    """A group registered and approved by `admin`, its funding asked for by `admin` and granted
    by CHECKER, the grant under `correlation_id`. Returns the group id and its registration
    (with the members' personal data)."""
    body = registration(regency)
    created = await groups.client.post("/groups", json=body, headers=admin)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    approved = await groups.client.post(f"/groups/{group_id}/approval", headers=admin)
    assert approved.status_code == 200, approved.text
    asked = await groups.client.post(
        f"/groups/{group_id}/funding", headers=admin,
        json={"tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-03-15",
              "budget_year": 2023})
    assert asked.status_code == 202, asked.text
    granted = await groups.client.post(f"/approvals/{asked.json()['request_id']}/grant",
                                       headers={**CHECKER, "X-Correlation-ID": correlation_id})
    assert granted.status_code == 200, granted.text
    return group_id, body


async def test_one_province_s_funding_decisions_with_actor_and_correlation_id(groups):
    began = datetime.now(UTC)
    west_java_cid, papua_cid = str(uuid.uuid4()), str(uuid.uuid4())
    west_java, _ = await funded_group(groups, "3201", ADMIN_A, west_java_cid)
    papua, _ = await funded_group(groups, "9401", ADMIN_B, papua_cid)
    ended = datetime.now(UTC) + timedelta(seconds=1)
    window = {"from": began.isoformat(), "to": ended.isoformat()}

    answer = await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "type": "GroupFunded", **window})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert (page["total"], page["limit"], page["offset"]) == (1, 100, 0)
    [row] = page["items"]
    assert row["stream_id"] == f"group-{papua}"
    assert (row["actor"], row["actor_role"]) == (ALIAS_CHECKER, "ministry_admin")
    assert row["correlation_id"] == papua_cid
    assert (row["province_code"], row["service"], row["event_type"]) == (
        "94", "groups", "GroupFunded")
    assert "amount=20000000" in row["summary"] and "tranche=1" in row["summary"]
    # who asked for it: the request the grant carried out, in the same province and window
    asked = (await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "type": "approvals.ApprovalRequested", **window})).json()
    [request] = [r for r in asked["items"] if f"target=group-{papua}" in r["summary"]]
    assert (request["actor"], request["province_code"]) == (ALIAS_B, "94")
    assert f"maker={ALIAS_B}" in request["summary"] and "command_type=fund" in request["summary"]

    # the whole story of the grant, by its correlation id: the decision and the funding
    by_request = (await groups.client.get("/audit", headers=AUDITOR, params={
        "correlation_id": west_java_cid})).json()
    assert [r["event_type"] for r in by_request["items"]] == [
        "approvals.ApprovalGranted", "GroupFunded", "approvals.ApprovalCarriedOut"]
    assert by_request["items"][1]["stream_id"] == f"group-{west_java}"
    assert {r["actor"] for r in by_request["items"]} == {ALIAS_CHECKER}
    # an approval names no province: it is its group's (the registration's)
    approvals = (await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "type": "GroupApproved", **window})).json()
    assert [r["stream_id"] for r in approvals["items"]] == [f"group-{papua}"]
    assert approvals["items"][0]["province_code"] == "94"
    # by actor (bare pseudonym or role:pseudonym) and by group id
    mine = (await groups.client.get("/audit", headers=AUDITOR, params={
        "actor": f"ministry_admin:{ALIAS_B}", **window})).json()
    assert {r["stream_id"] for r in mine["items"]} == {f"group-{papua}", request["stream_id"]}
    assert mine["total"] >= 4  # registered (with its internal roster), approved, asked
    by_group = (await groups.client.get("/audit", headers=AUDITOR, params={
        "stream": west_java, "actor": ALIAS_A})).json()
    assert {r["event_type"] for r in by_group["items"]} >= {"GroupRegistered", "GroupApproved"}
    whole = (await groups.client.get("/audit", headers=AUDITOR, params={
        "stream": west_java})).json()
    assert {r["event_type"] for r in whole["items"]} >= {
        "GroupRegistered", "GroupApproved", "GroupFunded"}
    # a window before the decisions holds none of them
    before = (await groups.client.get("/audit", headers=AUDITOR, params={
        "province": "94", "type": "GroupFunded", "from": (began - timedelta(days=1)).isoformat(),
        "to": began.isoformat()})).json()
    assert all(r["stream_id"] != f"group-{papua}" for r in before["items"])
    # paging: one row a page, in order
    both = {"type": "GroupFunded", **window, "limit": 1}
    first = (await groups.client.get("/audit", headers=AUDITOR, params=both)).json()
    second = (await groups.client.get("/audit", headers=AUDITOR,
                                      params={**both, "offset": 1})).json()
    assert (first["total"], second["total"]) == (2, 2)
    assert [first["items"][0]["stream_id"], second["items"][0]["stream_id"]] == [
        f"group-{west_java}", f"group-{papua}"]


async def test_the_csv_export_parses_and_matches_the_json_page(groups):
    began = datetime.now(UTC)
    cid = str(uuid.uuid4())
    group_id, _ = await funded_group(groups, "9402", ADMIN_B, cid)
    params = {"province": "94", "from": began.isoformat()}
    page = (await groups.client.get("/audit", headers=AUDITOR, params=params)).json()
    by_header = await groups.client.get("/audit", params=params,
                                        headers={**AUDITOR, "Accept": "text/csv"})
    by_param = await groups.client.get("/audit", headers=AUDITOR,
                                       params={**params, "format": "csv"})
    assert by_header.status_code == 200, by_header.text
    assert by_header.headers["content-type"].startswith("text/csv")
    assert by_header.text == by_param.text
    rows = list(csv.DictReader(io.StringIO(by_header.text)))
    assert len(rows) == page["total"] >= 3
    assert [r["event_id"] for r in rows] == [r["event_id"] for r in page["items"]]
    funded = next(r for r in rows if r["event_type"] == "GroupFunded")
    assert (funded["stream_id"], funded["actor"], funded["actor_role"],
            funded["correlation_id"], funded["province_code"]) == (
        f"group-{group_id}", ALIAS_CHECKER, "ministry_admin", cid, "94")
    assert datetime.fromisoformat(funded["recorded_at"]) >= began
    # an explicit page is a page
    one = await groups.client.get("/audit", headers=AUDITOR,
                                  params={**params, "format": "csv", "limit": 1, "offset": 1})
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(one.text))] == [
        page["items"][1]["event_id"]]


async def test_the_trail_carries_no_personal_data(groups):
    began = datetime.now(UTC)
    group_id, body = await funded_group(groups, "3201", ADMIN_A, str(uuid.uuid4()))
    params = {"stream": group_id, "from": began.isoformat()}
    as_json = await groups.client.get("/audit", headers=AUDITOR, params=params)
    as_csv = await groups.client.get("/audit", headers=AUDITOR, params={**params,
                                                                        "format": "csv"})
    types = {r["event_type"] for r in as_json.json()["items"]}
    # the internal roster event, which holds the members' NIKs, names and phones, is listed...
    assert "groups.RosterRecorded" in types, types
    # ...but none of them, nor the group's name, nor the admin's e-mail appear
    secrets = [body["name"], "admin.a@kemnaker.go.id"]
    for member in body["members"]:
        secrets += [member["nik"], member["name"], member["phone"]]
    for text in (as_json.text, as_csv.text):
        leaked = [s for s in secrets if s in text]
        assert not leaked, leaked


async def test_an_auditor_reads_the_trail_and_changes_nothing(groups):
    refused = await groups.client.post("/groups", json=registration("3201"), headers=AUDITOR)
    assert refused.status_code == 403, refused.text
    listing = await groups.client.get("/groups", headers=AUDITOR)
    assert listing.status_code == 403  # the programme's own readings are not the auditor's
    nobody = await groups.client.get("/audit")
    assert nobody.status_code == 401
    agency = await groups.client.get("/audit", headers=bearer("bps", Role.AGENCY))
    assert agency.status_code == 403


async def test_a_provincial_officer_reads_its_own_province_and_resolves_no_one(groups):
    began = datetime.now(UTC)
    await funded_group(groups, "3201", ADMIN_A, str(uuid.uuid4()))
    papua, _ = await funded_group(groups, "9401", ADMIN_B, str(uuid.uuid4()))
    own = (await groups.client.get("/audit", headers=OFFICER_94,
                                   params={"from": began.isoformat()})).json()
    assert {r["province_code"] for r in own["items"]} == {"94"}
    groups_seen = {r["stream_id"] for r in own["items"] if r["stream_id"].startswith("group-")}
    assert groups_seen == {f"group-{papua}"}
    # and the four-eyes request of its funding (stream approval-<id>), of the same province
    assert {r["stream_id"].split("-")[0] for r in own["items"]} == {"group", "approval"}
    other = await groups.client.get("/audit", headers=OFFICER_94, params={"province": "32"})
    assert (other.status_code, other.json()["error"]["field"]) == (403, "province")
    for who in (OFFICER_94, AUDITOR):
        lookup = await groups.client.get(f"/audit/actors/{ALIAS_A}", headers=who,
                                         params={"reason": "BPK letter 12/2026"})
        assert lookup.status_code == 403, lookup.text


async def test_an_admin_lookup_of_a_pseudonym_is_recorded_and_listed(groups):
    await funded_group(groups, "9401", ADMIN_B, str(uuid.uuid4()))
    began = datetime.now(UTC)
    cid = str(uuid.uuid4())
    missing_reason = await groups.client.get(f"/audit/actors/{ALIAS_B}", headers=ADMIN_A)
    assert missing_reason.status_code == 422
    assert missing_reason.json()["error"]["field"].endswith("reason")
    found = await groups.client.get(f"/audit/actors/ministry_admin:{ALIAS_B}",
                                    headers={**ADMIN_A, "X-Correlation-ID": cid},
                                    params={"reason": "Inspektorat case 2026/041"})
    assert found.status_code == 200, found.text
    person = found.json()
    assert (person["pseudonym"], person["subject"]) == (ALIAS_B, "admin.b@kemnaker.go.id")
    assert [r["role"] for r in person["roles"]] == ["ministry_admin"]
    unknown = await groups.client.get(f"/audit/actors/{'0' * 20}", headers=ADMIN_A,
                                      params={"reason": "Inspektorat case 2026/042"})
    assert unknown.status_code == 404

    trail = (await groups.client.get("/audit", headers=AUDITOR, params={
        "type": "audit.PseudonymResolved", "from": began.isoformat()})).json()
    assert trail["total"] == 2  # the refused call (no reason) looked nothing up
    looked, not_found = trail["items"]
    assert (looked["actor"], looked["actor_role"], looked["correlation_id"]) == (
        ALIAS_A, "ministry_admin", cid)
    assert looked["stream_id"] == f"audit-actor-{ALIAS_B}"
    assert "found=true" in looked["summary"]
    assert "reason=Inspektorat case 2026/041" in looked["summary"]
    assert "found=false" in not_found["summary"]
    # the person's subject is in the lookup's answer only, never in the trail
    assert "admin.b@kemnaker.go.id" not in str(trail)


async def test_bad_filters_are_refused_with_the_field(groups):
    cases = [({"from": "2026-03-01T00:00:00"}, "from"),
             ({"province": "9"}, "province"),
             ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
             ({"correlation_id": "nope"}, "correlation_id"),
             ({"limit": 0}, "limit")]
    for params, field in cases:
        answer = await groups.client.get("/audit", headers=AUDITOR, params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["error"]["field"].endswith(field), answer.text
