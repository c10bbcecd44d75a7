"""After funding: LPJ, overdue list, Bimtek, product evidence, expo, advancement, dissolution."""

from __future__ import annotations

import json
from datetime import date, timedelta

import asyncpg
import pytest

from services.groups.projections import READ_MODELS, project_read_models
from shared.auth import Role
from shared.projections import rebuild
from shared.topics import GROUPS
from tests.groups.groups_support import ADMIN, AGENCY, accept_lpj, auth, fund, registration
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


async def funded_group(groups, disbursed_on: date, regency_code: str = "5171") -> tuple[str, dict]:
    body = registration(regency_code)
    group_id = (await groups.client.post("/groups", json=body, headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{group_id}/approval", headers=ADMIN)
    funded = await fund(groups.client, group_id, {
        "tranche": 1, "amount": 20_000_000, "disbursed_on": disbursed_on.isoformat(),
        "budget_year": disbursed_on.year})
    assert funded["status"] == "funded", funded
    return group_id, body


async def test_a_group_accounts_for_its_funds_and_advances(groups):
    group_id, body = await funded_group(groups, date(2023, 6, 1))
    post = groups.client.post
    too_much = await post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
        "tools": 15_000_000, "materials": 6_000_000, "other": 0, "evidence_count": 4})
    assert (too_much.status_code, too_much.json()["error"]["field"]) == (422, "spending")

    first = await post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
        "tools": 12_000_000, "materials": 7_500_000, "other": 0, "evidence_count": 4})
    assert first.status_code == 201 and first.json()["remaining_balance"] == 500_000
    returned = await post(f"/groups/{group_id}/lpj/{first.json()['report_id']}/return",
                          headers=ADMIN, json={"reason_code": "evidence_missing",
                                               "note": "receipts unreadable"})
    assert returned.status_code == 200
    second = (await post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
        "tools": 12_000_000, "materials": 8_000_000, "other": 0, "evidence_count": 21})).json()
    accepted = await accept_lpj(groups.client, group_id, second["report_id"])
    assert accepted["status"] == "accepted"

    early = await post(f"/groups/{group_id}/advancement", headers=ADMIN)
    assert early.status_code == 422 and len(early.json()["error"]["missing"]) == 2
    assert (await post(f"/groups/{group_id}/bimtek", headers=ADMIN, json={
        "subject": "Bimtek kelembagaan", "held_on": "2023-09-12"})).status_code == 201
    assert (await post(f"/groups/{group_id}/product-evidence", headers=ADMIN, json={
        "product": "Kue tradisional", "evidence_count": 3,
        "recorded_on": "2023-10-02"})).status_code == 201
    assert (await post(f"/groups/{group_id}/expos", headers=ADMIN, json={
        "expo_code": "gelar_produk_tkm_bali", "held_on": "2023-11-20"})).status_code == 201
    advanced = await post(f"/groups/{group_id}/advancement", headers=ADMIN)
    assert advanced.status_code == 200 and advanced.json()["stage"] == "lanjutan"
    dissolved = await post(f"/groups/{group_id}/dissolution", headers=ADMIN,
                           json={"reason_code": "members_left"})
    assert dissolved.json()["status"] == "dissolved"

    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert (detail["lpj_status"], detail["accounted_total"], detail["remaining_balance"]) == (
        "accepted", 20_000_000, 0)
    assert [(r["status"], r["reason_code"], r["note"]) for r in detail["lpj_reports"]] == [
        ("returned", "evidence_missing", "receipts unreadable"), ("accepted", None, None)]
    assert (detail["status_reason_code"], detail["status_note"]) == ("members_left", None)
    assert [a["kind"] for a in detail["activities"]] == ["bimtek", "product", "expo"]
    # the expo's place defaults to the catalogue's (Denpasar)
    assert (detail["activities"][2]["title"], detail["activities"][2]["place"]) == (
        "gelar_produk_tkm_bali", "5171")
    totals = (await groups.client.get("/reports/funding", params={
        "budget_year": 2023, "province_code": "51"}, headers=AGENCY)).json()
    assert totals[0]["amount_accounted"] >= 20_000_000

    wanted = ["GroupRegistered", "GroupApproved", "GroupFunded", "AccountabilityReportSubmitted",
              "AccountabilityReportReturned", "AccountabilityReportSubmitted",
              "AccountabilityReportAccepted", "GroupShowcasedAtExpo", "GroupAdvanced",
              "GroupDissolved"]
    key = f"group-{group_id}".encode()
    records = await read_topic(groups.kafka_bootstrap, GROUPS, until=lambda recs: len(
        [r for r in recs if r.key == key]) >= len(wanted))
    mine = [r.value.decode() for r in records if r.key == key]
    assert [json.loads(v)["event_type"] for v in mine] == wanted
    for member in body["members"]:  # no member data on the topic
        assert not any(member["nik"] in v or member["name"] in v for v in mine)
    assert not any(body["name"] in v for v in mine)


async def test_overdue_lpjs_are_listed_after_their_due_date(groups):
    disbursed = date.today() - timedelta(days=200)
    late_id, _ = await funded_group(groups, disbursed, regency_code="6501")
    on_time_id, _ = await funded_group(groups, date.today(), regency_code="6501")
    reviewing_id, _ = await funded_group(groups, disbursed, regency_code="6501")
    await groups.client.post(f"/groups/{reviewing_id}/lpj", headers=ADMIN, json={
        "tools": 1_000_000, "materials": 0, "other": 0, "evidence_count": 1})

    overdue = (await groups.client.get("/lpj/overdue", params={
        "province_code": "65", "page_size": 500}, headers=AGENCY)).json()
    overdue_ids = {g["group_id"] for g in overdue["items"]}
    assert late_id in overdue_ids and {on_time_id, reviewing_id}.isdisjoint(overdue_ids)
    late = next(g for g in overdue["items"] if g["group_id"] == late_id)
    assert late["lpj_due_on"] == (disbursed + timedelta(days=90)).isoformat()

    outstanding = (await groups.client.get("/lpj/outstanding", params={
        "province_code": "65", "page_size": 500}, headers=AGENCY)).json()
    assert {late_id, on_time_id, reviewing_id} <= {g["group_id"] for g in outstanding["items"]}
    later = (await groups.client.get("/lpj/overdue", params={
        "province_code": "65", "as_of": (date.today() + timedelta(days=91)).isoformat(),
        "page_size": 500}, headers=AGENCY)).json()
    assert on_time_id in {g["group_id"] for g in later["items"]}


async def test_rebuilding_the_read_models_from_the_events_gives_the_same_answer(groups):
    group_id, _ = await funded_group(groups, date(2023, 7, 1), regency_code="3201")
    await groups.client.post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
        "tools": 2_000_000, "materials": 1_000_000, "other": 0, "evidence_count": 2})
    rejected = (await groups.client.post("/groups", json=registration("3201"),
                                         headers=ADMIN)).json()["group_id"]
    await groups.client.post(f"/groups/{rejected}/rejection", headers=ADMIN,
                             json={"reason_code": "duplicate_proposal",
                                   "note": "same members as KUB Sejahtera"})
    conn = await asyncpg.connect(groups.database_url)
    try:
        live = await _snapshot(conn)
        assert len(live["group_registry"]) >= 2 and live["people_reached"]
        replayed = await rebuild(conn, project_read_models, READ_MODELS)
        assert replayed == await conn.fetchval("SELECT count(*) FROM events")
        assert await _snapshot(conn) == live
    finally:
        await conn.close()


async def _snapshot(conn: asyncpg.Connection) -> dict[str, list]:
    return {table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in READ_MODELS}


NOTE = "Anggota Siti Aminah NIK 3201014506990001 HP 081234567890 sudah bekerja"


async def test_reasons_go_out_as_codes_and_notes_stay_with_officers(groups):
    """An officer's note may name members: it reaches neither the topic nor agencies/TKS."""
    post, get = groups.client.post, groups.client.get
    rejected = (await post("/groups", json=registration("3201"), headers=ADMIN)).json()
    group_id = rejected["group_id"]
    free_text = await post(f"/groups/{group_id}/rejection", headers=ADMIN,
                           json={"reason": NOTE})
    assert (free_text.status_code, free_text.json()["error"]["field"]) == (422, "reason_code")
    answer = await post(f"/groups/{group_id}/rejection", headers=ADMIN,
                        json={"reason_code": "members_employed", "note": NOTE})
    assert answer.status_code == 200, answer.text

    lpj_group, _ = await funded_group(groups, date(2023, 6, 1), regency_code="3201")
    report = (await post(f"/groups/{lpj_group}/lpj", headers=ADMIN, json={
        "tools": 1_000_000, "materials": 0, "other": 0, "evidence_count": 1})).json()
    assert (await post(f"/groups/{lpj_group}/lpj/{report['report_id']}/return", headers=ADMIN,
                       json={"reason_code": "evidence_missing", "note": NOTE})).status_code == 200
    assert (await post(f"/groups/{lpj_group}/dissolution", headers=ADMIN, json={
        "reason_code": "members_left", "note": NOTE})).status_code == 200

    officer = auth(Role.PROVINCE, "32")
    for reader in (AGENCY, auth(Role.TKS)):
        for path, params in (("/groups", {"status": "rejected", "page_size": 500}),
                             ("/groups", {"status": "dissolved", "page_size": 500}),
                             (f"/groups/{group_id}", {}), (f"/groups/{lpj_group}", {})):
            seen = await get(path, params=params, headers=reader)
            assert seen.status_code == 200 and "Siti" not in seen.text, (path, seen.text)
            assert "status_note" not in seen.text and '"note"' not in seen.text
    listed = (await get("/groups", params={"status": "rejected", "page_size": 500},
                        headers=AGENCY)).json()
    mine = next(g for g in listed["items"] if g["group_id"] == group_id)
    assert mine["status_reason_code"] == "members_employed"

    for reader in (ADMIN, officer):
        listed = (await get("/groups", params={"status": "rejected", "page_size": 500},
                            headers=reader)).json()
        mine = next(g for g in listed["items"] if g["group_id"] == group_id)
        assert (mine["status_reason_code"], mine["status_note"]) == ("members_employed", NOTE)
        detail = (await get(f"/groups/{lpj_group}", headers=reader)).json()
        assert (detail["status_reason_code"], detail["status_note"]) == ("members_left", NOTE)
        assert [(r["reason_code"], r["note"]) for r in detail["lpj_reports"]] == [
            ("evidence_missing", NOTE)]
    assert (await get(f"/groups/{group_id}", headers=auth(Role.PROVINCE, "33"))).status_code == 403

    keys = {f"group-{g}".encode() for g in (group_id, lpj_group)}
    wanted = {"GroupRejected", "AccountabilityReportReturned", "GroupDissolved"}

    def reasons(records) -> list[dict]:
        return [e for e in (json.loads(r.value) for r in records if r.key in keys)
                if e["event_type"] in wanted]

    records = await read_topic(groups.kafka_bootstrap, GROUPS,
                               until=lambda recs: len(reasons(recs)) >= 3)
    published = reasons(records)
    assert {(e["event_type"], e["schema_version"], e["payload"]["reason_code"])
            for e in published} == {("GroupRejected", 2, "members_employed"),
                                    ("AccountabilityReportReturned", 2, "evidence_missing"),
                                    ("GroupDissolved", 2, "members_left")}
    mine = [r.value.decode() for r in records if r.key in keys]
    assert not any("Siti" in v or "3201014506990001" in v or "ReasonNoted" in v for v in mine)
