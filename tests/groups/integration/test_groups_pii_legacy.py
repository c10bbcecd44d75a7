"""Members stored before sealing (RosterRecorded/RosterChanged version 1, plaintext read-model
rows, NIKs in active_memberships) still read, and the one-time rewrite
(`python -m services.groups.privacy seal-plaintext`) seals them in place: afterwards no NIK or
name is left in the database, reads show the same members, a rebuild gives the same tables,
the membership rule and the /privacy routes find the persons by their hash."""

from __future__ import annotations

import json
import random
import uuid

import asyncpg
import pytest

from services.groups.privacy import seal_plaintext
from services.groups.projections import REBUILD
from shared import pii
from shared.nik import parse_nik
from shared.projections import rebuild_plan
from tests.groups.groups_support import ADMIN, HASH, KEYRING, registration
from tests.groups.integration.test_groups_pii import members_of
from tests.support.personal_data import database_text
from tests.shared.integration.rebuild_support import table_rows
from tests.support.kafka import kafka_client

pytestmark = pytest.mark.integration


def _plain(member: dict) -> dict:
    """A member as version 1 stored it."""
    return {"nik": member["nik"], "name": member["name"], "phone": "+62" + member["phone"][1:],
            "birth_date": parse_nik(member["nik"]).birth_date.isoformat()}


async def _make_legacy(conn: asyncpg.Connection, group_id: str, members: list[dict]) -> None:
    """Turn a registered group back into what the service stored before sealing."""
    plain = [_plain(m) for m in members]
    payload = json.loads(await conn.fetchval(
        "SELECT payload::text FROM events WHERE stream_id = $1 "
        "AND event_type = 'groups.RosterRecorded'", f"group-{group_id}"))
    payload["members"] = plain
    await conn.execute("UPDATE events SET payload = $2::jsonb, schema_version = 1 "
                       "WHERE stream_id = $1 AND event_type = 'groups.RosterRecorded'",
                       f"group-{group_id}", json.dumps(payload))
    await conn.execute("DELETE FROM group_members WHERE group_id = $1", group_id)
    await conn.executemany(
        "INSERT INTO group_members (group_id, nik, name, phone, birth_date) "
        "VALUES ($1, $2, $3, $4, $5)",
        [(group_id, p["nik"], p["name"], p["phone"], p["birth_date"]) for p in plain])
    await conn.executemany("UPDATE active_memberships SET nik_hash = $2 WHERE nik_hash = $1",
                           [(HASH(m["nik"]), m["nik"]) for m in members])
    await conn.execute("DELETE FROM pii_person_keys WHERE person_ref = ANY($1::text[])",
                       [HASH(m["nik"]) for m in members])


async def test_plaintext_members_read_and_are_sealed_once(groups):
    client, r = groups.client, random.Random(uuid.uuid4().int)
    body = {**registration("3201"), "members": members_of(r)}
    created = await client.post("/groups", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    newer = {**registration("3201"), "members": members_of(r)}  # sealed from the start
    assert (await client.post("/groups", json=newer, headers=ADMIN)).status_code == 201
    conn = await asyncpg.connect(groups.database_url)
    try:
        await _make_legacy(conn, group_id, body["members"])
        stored = await database_text(conn)
        assert body["members"][0]["nik"] in stored and body["members"][0]["name"] in stored

        # read as it is: names and masked NIKs, in the same order as sealed ones
        expected = sorted((m["name"], m["nik"][:6] + "*" * 10) for m in body["members"])
        shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
        assert [(m["name"], m["nik"]) for m in shown] == expected

        done = await seal_plaintext(conn, KEYRING)
        assert done == {"events": 1, "members": 10, "memberships": 10}
        assert await seal_plaintext(conn, KEYRING) == {"events": 0, "members": 0,
                                                       "memberships": 0}
        stored = await database_text(conn)
        for m in body["members"]:
            assert m["nik"] not in stored and m["name"] not in stored, m["name"]
        shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
        assert [(m["name"], m["nik"]) for m in shown] == expected
        assert await conn.fetchval("SELECT schema_version FROM events WHERE stream_id = $1 "
                                   "AND event_type = 'groups.RosterRecorded'",
                                   f"group-{group_id}") == 2

        # a rebuild from the rewritten events gives the same tables
        live = await table_rows(conn, REBUILD.tables)
        await rebuild_plan(conn, REBUILD, bootstrap=groups.kafka_bootstrap,
                           kafka_options=kafka_client("groups"))
        assert await table_rows(conn, REBUILD.tables) == live

        # the rule and the routes find the person by the hash now
        again = {**registration("3201"), "members": [*members_of(r, 9), body["members"][2]]}
        taken = await client.post("/groups", json=again, headers=ADMIN)
        assert taken.status_code == 409 and taken.json()["error"]["field"] == "members[9].nik"
        access = (await client.post("/privacy/subject-access", headers=ADMIN,
                                    json={"nik": body["members"][2]["nik"]})).json()
        assert access["found"] and access["records"][0]["name"] == body["members"][2]["name"]
        erased = await client.post("/privacy/erasure", headers=ADMIN, json={
            "nik": body["members"][2]["nik"], "reason_code": "subject_request"})
        assert erased.json()["erased"] == 1
        shown = (await client.get(f"/groups/{group_id}", headers=ADMIN)).json()["members"]
        assert sum(m["name"] == str(pii.ERASED) for m in shown) == 1
    finally:
        await conn.close()
