"""Members' personal data in the groups service, on the real service (Postgres + Kafka): the NIK,
name, phone and birth date are stored as tokens only (events and read model), reads open them;
subject access returns the person's memberships; a correction shows the new values in every
group of the person; after an erasure the NIK, names and phone appear nowhere in the database
(nor after a rebuild, nor in a backup taken afterwards), the member reads as erased while every
count and rupiah total stays; the other members are untouched; the erased NIK is not
registered again (409, by hand or from a CSV file)."""

from __future__ import annotations

import random
import uuid
from datetime import date

import asyncpg
import pytest

from scripts import backup
from services.groups.projections import REBUILD
from shared import pii
from shared.auth import Role
from shared.projections import rebuild_plan
from tests.groups.groups_support import (
    ADMIN,
    HASH,
    auth,
    csv_file,
    csv_rows,
    fund,
    member_inputs,
    registration,
)
from tests.shared.integration.rebuild_support import table_rows
from tests.support.databases import create_database, drop_database
from tests.support.kafka import kafka_client
from tests.support.personal_data import database_text

pytestmark = pytest.mark.integration

ERASED = str(pii.ERASED)
CSV = {"Content-Type": "text/csv"}


def phone(r: random.Random) -> str:
    return f"0813{r.randrange(10 ** 7, 10 ** 8)}"


def traces(member: dict) -> list[str]:
    """What must not be found in plaintext: the NIK, the name, the phone as typed (without its
    leading 0) and normalised."""
    return [member["nik"], member["name"], member["phone"][1:], "+62" + member["phone"][1:]]


def members_of(r: random.Random, n: int = 10) -> list[dict]:
    return [m | {"name": f"Anggota {uuid.uuid4().hex[:8]}", "phone": phone(r)}
            for m in member_inputs(n, "3201", r)]


async def test_members_are_sealed_and_read_back(groups):
    client, r = groups.client, random.Random(uuid.uuid4().int)
    body = {**registration("3201"), "members": members_of(r)}
    created = await client.post("/groups", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    conn = await asyncpg.connect(groups.database_url)
    try:
        stored = await database_text(conn)
        for m in body["members"]:
            for trace in traces(m):
                assert trace not in stored, trace
        payload = await conn.fetchval(
            "SELECT payload::text FROM events WHERE stream_id = $1 "
            "AND event_type = 'groups.RosterRecorded'", f"group-{group_id}")
        assert payload.count("pii1:") == 40  # NIK, name, phone, birth date of 10 members
        rows = await conn.fetch("SELECT nik_hash FROM group_members WHERE group_id = $1",
                                group_id)
        assert sorted(row["nik_hash"] for row in rows) == sorted(
            HASH(m["nik"]) for m in body["members"])
        claimed = await conn.fetchval("SELECT count(*) FROM active_memberships "
                                      "WHERE group_id = $1 AND nik_hash = ANY($2)", group_id,
                                      [HASH(m["nik"]) for m in body["members"]])
        assert claimed == 10
    finally:
        await conn.close()

    shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
    expected = sorted((m["name"], m["nik"][:6] + "*" * 10, "+62" + m["phone"][1:])
                      for m in body["members"])
    assert [(m["name"], m["nik"], m["phone"]) for m in shown] == expected
    revealed = (await client.get(f"/groups/{group_id}", headers=ADMIN,
                                 params={"reveal": "nik"})).json()["members"]
    assert sorted(m["nik"] for m in revealed) == sorted(m["nik"] for m in body["members"])
    province = auth(Role.PROVINCE, "32")
    assert (await client.get(f"/groups/{group_id}", headers=province,
                             params={"reveal": "nik"})).status_code == 403

    # the one-group-per-person rule still holds on the hash: 409 pointing at the member
    again = {**registration("3201"), "members": [*members_of(r, 9), body["members"][4]]}
    taken = await client.post("/groups", json=again, headers=ADMIN)
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"]["field"] == "members[9].nik"
    assert body["members"][4]["nik"] not in taken.text

    # a roster change removes by hash and seals the newcomer
    newcomer = members_of(r, 1)[0]
    changed = await client.put(f"/groups/{group_id}/members", headers=ADMIN,
                               json={"members": [*body["members"][1:], newcomer]})
    assert changed.status_code == 200, changed.text
    shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
    names = {m["name"] for m in shown}
    assert newcomer["name"] in names and body["members"][0]["name"] not in names
    conn = await asyncpg.connect(groups.database_url)
    try:
        assert newcomer["name"] not in await database_text(conn)
        freed = await conn.fetchval("SELECT count(*) FROM active_memberships WHERE nik_hash = $1",
                                    HASH(body["members"][0]["nik"]))
        assert freed == 0
    finally:
        await conn.close()


async def test_access_correction_and_erasure_of_one_member(groups, infra, tmp_path):
    client, r = groups.client, random.Random(uuid.uuid4().int)
    first = {**registration("3201", year=2023), "members": members_of(r)}
    siti = first["members"][3] | {"name": f"Siti Privasi {uuid.uuid4().hex[:6]}"}
    first["members"][3] = siti
    budi = first["members"][5]
    # Siti is in a second group, of another year (one key, one ref across her groups)
    later = {**registration("3201", year=2024), "members": members_of(r)}
    later["members"][0] = siti
    created = [await client.post("/groups", json=g, headers=ADMIN) for g in (first, later)]
    assert [c.status_code for c in created] == [201, 201], [c.text for c in created]
    group_id, other_id = (c.json()["group_id"] for c in created)
    assert (await client.post(f"/groups/{group_id}/approval", headers=ADMIN)).status_code == 200
    await fund(client, group_id, {"tranche": 1, "amount": 20_000_000,
                                  "disbursed_on": "2023-06-01", "budget_year": 2023})

    # subject access: the NIK in the body, never in the URL; admin only; a bad NIK is a 422
    access = await client.post("/privacy/subject-access", headers=ADMIN,
                               json={"nik": siti["nik"]})
    assert access.status_code == 200, access.text
    answer = access.json()
    assert answer["service"] == "groups" and answer["found"] is True
    assert sorted(rec["group_id"] for rec in answer["records"]) == sorted([group_id, other_id])
    for rec in answer["records"]:
        assert (rec["nik"], rec["name"], rec["phone"]) == (
            siti["nik"], siti["name"], "+62" + siti["phone"][1:])
        assert rec["birth_date"] and date.fromisoformat(rec["birth_date"])
        assert rec["active_membership"] is True
    funded = next(rec for rec in answer["records"] if rec["group_id"] == group_id)
    assert (funded["status"], funded["funded_total"]) == ("funded", 20_000_000)
    assert [e["event_type"] for e in funded["roster_events"]] == ["groups.RosterRecorded"]
    officer = await client.post("/privacy/subject-access", headers=auth(Role.PROVINCE, "32"),
                                json={"nik": siti["nik"]})
    assert officer.status_code == 403
    bad = await client.post("/privacy/subject-access", headers=ADMIN,
                            json={"nik": siti["nik"][:-1] + "x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "nik"
    assert siti["nik"][:-1] not in bad.text
    nobody = (await client.post("/privacy/subject-access", headers=ADMIN,
                                json={"nik": member_inputs(1, "3201", r)[0]["nik"]})).json()
    assert (nobody["found"], nobody["records"]) == (False, [])

    # a correction: the new name in both groups, the old one unreadable
    wrong = await client.post("/privacy/correction", headers=ADMIN, json={
        "nik": siti["nik"], "changes": {"phone": "12345"}})
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "changes.phone"
    corrected_name = f"Siti Koreksi {uuid.uuid4().hex[:6]}"
    fixed = await client.post("/privacy/correction", headers=ADMIN, json={
        "nik": siti["nik"], "changes": {"name": f"  {corrected_name} "}})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json() == {"service": "groups", "corrected": 1}
    for gid in (group_id, other_id):
        names = {m["name"] for m in (await client.get(f"/groups/{gid}",
                                                      headers=ADMIN)).json()["members"]}
        assert corrected_name in names and siti["name"] not in names

    conn = await asyncpg.connect(groups.database_url)
    try:
        counts = ("SELECT year, province_code, groups_registered, members_registered, "
                  "groups_funded, members_funded FROM people_reached ORDER BY 1, 2")
        money = ("SELECT budget_year, province_code, groups_funded, tranches, amount_disbursed "
                 "FROM funding_by_province ORDER BY 1, 2")
        before = (await conn.fetch(counts), await conn.fetch(money),
                  await conn.fetch("SELECT group_id, member_count, funded_total, status "
                                   "FROM group_registry ORDER BY group_id"))
        events_before = await conn.fetchval("SELECT count(*) FROM events")

        erased = await client.post("/privacy/erasure", headers=ADMIN,
                                   json={"nik": siti["nik"], "reason_code": "subject_request"})
        assert erased.status_code == 200, erased.text
        assert erased.json() == {"service": "groups", "erased": 1, "already_erased": 0}
        again = await client.post("/privacy/erasure", headers=ADMIN,
                                  json={"nik": siti["nik"], "reason_code": "subject_request"})
        assert again.json() == {"service": "groups", "erased": 0, "already_erased": 1}

        # the member reads as erased in both groups; Budi, counts and rupiah as they were
        for gid in (group_id, other_id):
            shown = (await client.get(f"/groups/{gid}", headers=ADMIN,
                                      params={"reveal": "nik"})).json()["members"]
            gone = [m for m in shown if m["name"] == ERASED]
            assert gone == [{"nik": ERASED, "name": ERASED, "phone": ERASED}]
            assert len(shown) == len(first["members"] if gid == group_id else later["members"])
        shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
        assert (budi["name"], budi["nik"][:6] + "*" * 10, "+62" + budi["phone"][1:]) in {
            (m["name"], m["nik"], m["phone"]) for m in shown}
        after = (await conn.fetch(counts), await conn.fetch(money),
                 await conn.fetch("SELECT group_id, member_count, funded_total, status "
                                  "FROM group_registry ORDER BY group_id"))
        assert after == before
        # the erasure's own events only: PersonErased once, a request handled twice
        assert await conn.fetchval("SELECT count(*) FROM events") == events_before + 3
        access = (await client.post("/privacy/subject-access", headers=ADMIN,
                                    json={"nik": siti["nik"]})).json()
        assert access["found"] is True and len(access["records"]) == 2
        for rec in access["records"]:
            assert all(rec[f] == ERASED for f in ("nik", "name", "phone", "birth_date")), rec

        # nothing of Siti in plaintext anywhere (events, read models, rule table, answers)
        stored = await database_text(conn)
        for trace in [*traces(siti), corrected_name]:
            assert trace not in stored, trace
        assert budi["nik"] not in stored

        # a correction of an erased person is refused
        refused = await client.post("/privacy/correction", headers=ADMIN, json={
            "nik": siti["nik"], "changes": {"name": "Siti Lagi"}})
        assert refused.status_code == 409 and refused.json()["error"]["field"] == "nik"

        # the erased NIK is not registered again: by hand (409 at the member) or from a file
        renewed = {**registration("3201", year=2025), "members": members_of(r)}
        renewed["members"][2] = siti | {"name": "Siti Baru"}
        r_new = await client.post("/groups", json=renewed, headers=ADMIN)
        assert r_new.status_code == 409, r_new.text
        assert r_new.json()["error"]["field"] == "members[2].nik"
        assert "erased" in r_new.json()["error"]["reason"] and siti["nik"] not in r_new.text
        rows = csv_rows(f"KUB {uuid.uuid4().hex[:8]}", "3201", members=10, year=2025)
        rows[6][6], rows[6][7] = siti["nik"], "Siti Berkas"
        imported = await client.post("/groups/imports", content=csv_file(rows),
                                     headers={**ADMIN, **CSV})
        assert imported.status_code == 200, imported.text
        report = imported.json()
        assert (report["registered"], report["refused"]) == (0, 1)
        assert [(e["row"], e["field"]) for e in report["errors"]] == [(8, "member_nik")]
        assert "Siti Berkas" not in await database_text(conn)

        # a rebuild gives the same tables, still erased
        live = await table_rows(conn, REBUILD.tables)
        await rebuild_plan(conn, REBUILD, bootstrap=groups.kafka_bootstrap,
                           kafka_options=kafka_client("groups"))
        assert await table_rows(conn, REBUILD.tables) == live
        shown = (await client.get(f"/groups/{other_id}", headers=ADMIN)).json()["members"]
        assert sum(m["name"] == ERASED for m in shown) == 1
    finally:
        await conn.close()

    # a backup taken after the erasure holds none of it, and restores Siti erased, Budi not
    archive = backup.dump(groups.database_url, tmp_path / "groups.dump")
    assert siti["nik"].encode() not in archive.read_bytes()
    restored_url = await create_database(infra, "t_groups_restored")
    try:
        backup.restore(restored_url, archive)
        restored = await asyncpg.connect(restored_url)
        try:
            text = await database_text(restored)
            for trace in [*traces(siti), corrected_name]:
                assert trace not in text, trace
            refs = [HASH(siti["nik"]), HASH(budi["nik"])]
            rows = {row["nik_hash"]: row for row in await restored.fetch(
                "SELECT nik_hash, name FROM group_members WHERE group_id = $1 "
                "AND nik_hash = ANY($2)", group_id, refs)}
            keys = await pii.load_keys(restored, pii.Keyring.dev(), refs)
            assert keys.decrypt(refs[0], "name", rows[refs[0]]["name"]) is pii.ERASED
            assert keys.decrypt(refs[1], "name", rows[refs[1]]["name"]) == budi["name"]
        finally:
            await restored.close()
    finally:
        await drop_database(infra, restored_url)
