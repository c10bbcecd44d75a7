"""A person's rights in the recruitment service, on the real service (Postgres + Kafka): personal
fields are stored as tokens only; subject access returns the person's data; a correction shows
the new values and leaves the old ones unreadable; after an erasure the NIK, names and phone
appear nowhere in the database (nor in a rebuild, nor in a backup taken afterwards), the
person reads as erased while every count stays; others are untouched; the erased NIK cannot
register again for the same year and registers for another year under a fresh key."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from scripts import backup
from services.recruitment.app import REBUILD, build_spec
from shared import pii
from shared.auth import Role
from shared.projections import rebuild_plan
from tests.recruitment.recruitment_helpers import ADMIN, applicant, auth
from tests.shared.integration.rebuild_support import table_rows
from tests.support.databases import create_database, drop_database
from tests.support.kafka import kafka_client
from tests.support.personal_data import database_text

pytestmark = pytest.mark.integration

YEAR, REGENCY = 2029, "6302"
REJECTION = "documents_incomplete"
ERASED = str(pii.ERASED)


async def person(recruitment, name: str, phone: str, *, year: int = YEAR) -> tuple[dict, str]:
    registration = {**applicant(year, REGENCY), "full_name": name, "phone": phone,
                    "email": f"{uuid.uuid4().hex[:10]}@example.id"}
    r = await recruitment.client.post("/applicants", headers=ADMIN, json=registration)
    assert r.status_code == 201, r.text
    return registration, r.json()["applicant_id"]


def traces(registration: dict) -> list[str]:
    """What must not be found in plaintext: the NIK, the name, the phone (as typed, without its
    leading 0, and normalised), the e-mail."""
    phone = registration["phone"]
    return [registration["nik"], registration["full_name"], phone[1:], "+62" + phone[1:],
            registration["email"]]


async def test_access_correction_and_erasure_of_one_applicant(recruitment, infra, tmp_path):
    client = recruitment.client
    round_id = await recruitment.open_round(
        [{"province_code": REGENCY[:2], "regency_code": REGENCY, "places": 5}], year=YEAR)
    siti, siti_id = await person(recruitment, f"Siti Privasi {uuid.uuid4().hex[:6]}",
                                 "081298765432")
    budi, budi_id = await person(recruitment, f"Budi Tetap {uuid.uuid4().hex[:6]}",
                                 "081211223344")
    for step, body in (("screening", {"passed": True}),
                       ("briefing", {"stage": 1, "city": "Banjarmasin",
                                     "briefed_on": f"{YEAR}-03-06"})):
        r = await client.post(f"/applicants/{siti_id}/{step}", headers=ADMIN, json=body)
        assert r.status_code == 200, r.text
    r = await recruitment.recruit(round_id, siti_id, REGENCY)
    assert r.status_code == 201, r.text

    conn = await asyncpg.connect(recruitment.database_url)
    try:
        # stored as tokens only, from the first write on
        stored = await database_text(conn)
        for trace in traces(siti) + traces(budi):
            assert trace not in stored, trace
        row = await conn.fetchrow("SELECT full_name, birth_date, nik, nik_hash FROM applicants "
                                  "WHERE applicant_id = $1", siti_id)
        assert all(pii.is_token(row[c]) for c in ("full_name", "birth_date", "nik"))
        assert row["nik_hash"] == pii.Keyring.dev().nik_hash(siti["nik"])

        # subject access: readable, with the contract and the events
        asked = await client.post("/privacy/subject-access", headers=ADMIN,
                                  json={"nik": siti["nik"]})
        assert asked.status_code == 200, asked.text
        answer = asked.json()
        assert answer["service"] == "recruitment" and answer["found"] is True
        [record] = answer["records"]
        assert (record["applicant_id"], record["nik"], record["full_name"]) == (
            siti_id, siti["nik"], siti["full_name"])
        assert record["birth_date"] == siti["birth_date"] and record["status"] == "recruited"
        assert [c["year"] for c in record["tks_contracts"]] == [YEAR]
        assert "recruitment.ApplicantRegistered" in {e["event_type"] for e in record["events"]}
        nobody = await client.post("/privacy/subject-access", headers=ADMIN,
                                   json={"nik": applicant(YEAR, REGENCY)["nik"]})
        assert nobody.json() == {"service": "recruitment", "found": False, "records": []}

        # refusals: another role, a bad NIK (never echoed), an unknown reason
        officer = auth(Role.PROVINCE, province=REGENCY[:2])
        for path, body in (("subject-access", {"nik": siti["nik"]}),
                           ("erasure", {"nik": siti["nik"], "reason_code": "subject_request"})):
            r = await client.post(f"/privacy/{path}", headers=officer, json=body)
            assert r.status_code == 403, r.text
        bad = siti["nik"][:12] + "0000"
        r = await client.post("/privacy/subject-access", headers=ADMIN, json={"nik": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "nik"
        assert bad not in r.text
        r = await client.post("/privacy/erasure", headers=ADMIN,
                              json={"nik": siti["nik"], "reason_code": "because"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "reason_code"

        # correction: new values read, the registration's tokens no longer open
        r = await client.post("/privacy/correction", headers=ADMIN, json={
            "nik": siti["nik"], "changes": {"full_name": "Siti Koreksi", "phone": "08521234567"}})
        assert r.json() == {"service": "recruitment", "corrected": 1}, r.text
        r = await client.post("/privacy/correction", headers=ADMIN, json={
            "nik": siti["nik"], "changes": {"phone": "123"}})
        assert r.status_code == 400 and r.json()["error"]["field"] == "changes.phone"
        read = (await client.get(f"/applicants/{siti_id}", headers=ADMIN)).json()
        assert (read["full_name"], read["phone"], read["email"]) == (
            "Siti Koreksi", "+628521234567", siti["email"])
        first = await conn.fetchval(
            "SELECT payload->>'full_name' FROM events WHERE stream_id = $1 "
            "AND event_type = 'recruitment.ApplicantRegistered'", f"applicant-{siti_id}")
        keys = await pii.load_keys(conn, pii.Keyring.dev(), [f"applicant-{siti_id}"])
        assert keys.decrypt(f"applicant-{siti_id}", "full_name", first) is pii.ERASED

        counts_before = {path: (await client.get(path, headers=ADMIN,
                                                 params={"year": YEAR})).json()
                         for path in ("/stats", "/funnel")}
        events_before = await conn.fetchval("SELECT count(*) FROM events")

        # erasure, then again (idempotent)
        r = await client.post("/privacy/erasure", headers=ADMIN,
                              json={"nik": siti["nik"], "reason_code": "subject_request"})
        assert r.json() == {"service": "recruitment", "erased": 1, "already_erased": 0}, r.text
        r = await client.post("/privacy/erasure", headers=ADMIN,
                              json={"nik": siti["nik"], "reason_code": "subject_request"})
        assert r.json() == {"service": "recruitment", "erased": 0, "already_erased": 1}

        read = (await client.get(f"/applicants/{siti_id}", headers=ADMIN,
                                 params={"reveal": "nik"})).json()
        for field in ("full_name", "birth_date", "phone", "email", "nik"):
            assert read[field] == ERASED, field
        assert read["age"] is None and read["status"] == "recruited"
        assert read["nik_masked"] == siti["nik"][:6] + "*" * 10
        [contract] = (await client.get(f"/tks/{siti_id}", headers=ADMIN)).json()["contracts"]
        assert contract["full_name"] == ERASED and contract["status"] == "active"
        other = (await client.get(f"/applicants/{budi_id}", headers=ADMIN)).json()
        assert (other["full_name"], other["phone"]) == (budi["full_name"], "+62" + budi["phone"][1:])
        for path, before in counts_before.items():
            assert (await client.get(path, headers=ADMIN, params={"year": YEAR})).json() == before
        # the erasures' own events only: PersonErased once, a request handled twice
        assert await conn.fetchval("SELECT count(*) FROM events") == events_before + 3
        again = (await client.post("/privacy/subject-access", headers=ADMIN,
                                   json={"nik": siti["nik"]})).json()
        assert again["found"] is True
        assert again["records"][0]["full_name"] == ERASED
        assert again["records"][0]["applicant_id"] == siti_id

        # nothing of Siti in plaintext anywhere, Budi still readable
        stored = await database_text(conn)
        for trace in [*traces(siti), "Siti Koreksi", "628521234567"]:
            assert trace not in stored, trace

        # the audit trail: who erased, never the NIK or the name
        trail = await client.get("/audit", headers=ADMIN,
                                 params={"type": ["privacy.PersonErased",
                                                  "privacy.PrivacyRequestHandled"]})
        assert trail.status_code == 200, trail.text
        kinds = [row["event_type"] for row in trail.json()["items"]]
        assert kinds.count("privacy.PersonErased") == 1
        assert {row["actor_role"] for row in trail.json()["items"]} == {"ministry_admin"}
        assert siti["nik"] not in trail.text and "Siti" not in trail.text
        erased_row = next(r for r in trail.json()["items"]
                          if r["event_type"] == "privacy.PersonErased")
        assert erased_row["province_code"] == REGENCY[:2]

        # a rebuild gives the same tables, still erased
        live = await table_rows(conn, REBUILD.tables)
        await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                           bootstrap=recruitment.kafka, kafka_options=kafka_client("recruitment"))
        assert await table_rows(conn, REBUILD.tables) == live
        read = (await client.get(f"/applicants/{siti_id}", headers=ADMIN)).json()
        assert read["full_name"] == ERASED and read["age"] is None

        # a correction of an erased person is refused
        r = await client.post("/privacy/correction", headers=ADMIN, json={
            "nik": siti["nik"], "changes": {"full_name": "Siti Lagi"}})
        assert r.status_code == 409 and r.json()["error"]["field"] == "nik"

        # the same NIK: refused for the same year; another year is a new applicant, new key
        r = await client.post("/applicants", headers=ADMIN, json={**siti, "full_name": "Siti"})
        assert r.status_code == 409 and r.json()["error"]["field"] == "nik"
        r = await client.post("/applicants", headers=ADMIN,
                              json={**siti, "year": YEAR + 1, "full_name": "Siti Baru"})
        assert r.status_code == 201, r.text
        fresh = r.json()["applicant_id"]
        assert fresh != siti_id
        read = (await client.get(f"/applicants/{fresh}", headers=ADMIN)).json()
        assert read["full_name"] == "Siti Baru"
    finally:
        await conn.close()

    # a backup taken after the erasure holds none of it, and restores Siti erased
    archive = backup.dump(recruitment.database_url, tmp_path / "recruitment.dump")
    assert siti["nik"].encode() not in archive.read_bytes()
    restored_url = await create_database(infra, "t_rec_restored")
    try:
        backup.restore(restored_url, archive)
        restored = await asyncpg.connect(restored_url)
        try:
            text = await database_text(restored)
            for trace in traces(siti):
                assert trace not in text, trace
            token = await restored.fetchval("SELECT full_name FROM applicants "
                                            "WHERE applicant_id = $1", siti_id)
            ref = f"applicant-{siti_id}"
            keys = await pii.load_keys(restored, pii.Keyring.dev(), [ref, f"applicant-{budi_id}"])
            assert keys.decrypt(ref, "full_name", token) is pii.ERASED
            budi_token = await restored.fetchval("SELECT full_name FROM applicants "
                                                 "WHERE applicant_id = $1", budi_id)
            assert keys.decrypt(f"applicant-{budi_id}", "full_name",
                                budi_token) == budi["full_name"]
        finally:
            await restored.close()
    finally:
        await drop_database(infra, restored_url)


async def test_a_rejection_note_is_sealed_with_the_applicant_and_erased_with_it(recruitment):
    client = recruitment.client
    rina, rina_id = await person(recruitment, f"Rina Catatan {uuid.uuid4().hex[:6]}",
                                 "081377788899")
    note = f"kata tetangga {uuid.uuid4().hex[:8]}: ijazah {rina['full_name']} palsu"
    r = await client.post(f"/applicants/{rina_id}/screening", headers=ADMIN,
                          json={"passed": False, "reason": REJECTION, "note": note})
    assert r.status_code == 200, r.text
    conn = await asyncpg.connect(recruitment.database_url)
    try:
        assert note not in await database_text(conn)
        assert (await client.get(f"/applicants/{rina_id}", headers=ADMIN)).json()[
            "rejection_note"] == note
        # a correction re-encrypts the note too: still readable
        r = await client.post("/privacy/correction", headers=ADMIN, json={
            "nik": rina["nik"], "changes": {"email": "rina@example.id"}})
        assert r.json()["corrected"] == 1
        read = (await client.get(f"/applicants/{rina_id}", headers=ADMIN)).json()
        assert (read["rejection_note"], read["email"]) == (note, "rina@example.id")
        r = await client.post("/privacy/erasure", headers=ADMIN,
                              json={"nik": rina["nik"], "reason_code": "retention_ended"})
        assert r.json()["erased"] == 1
        read = (await client.get(f"/applicants/{rina_id}", headers=ADMIN)).json()
        assert read["rejection_note"] == ERASED
        assert (read["status"], read["rejection_reason"]) == ("rejected", REJECTION)
        assert note not in await database_text(conn)
    finally:
        await conn.close()
