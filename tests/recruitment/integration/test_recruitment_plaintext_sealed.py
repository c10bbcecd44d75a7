"""Personal data stored before encryption (ApplicantRegistered v1, a plaintext rejection note,
the plain NIK in applicant_nik) still reads, still blocks its NIK, and is sealed once in place
(services.recruitment.privacy.seal_plaintext): afterwards the database holds none of it in
plaintext, the living read as before, an applicant erased before the sealing reads erased, the
NIK rule holds on the hash, and a rebuild gives the same tables."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg
import pytest

from services.recruitment.app import REBUILD, build_spec
from services.recruitment.domain import ApplicantRejected
from services.recruitment.privacy import seal_plaintext
from services.recruitment.projections import project
from shared import pii
from shared.envelope import Event, parse_payload
from shared.eventstore import EventStore
from shared.projections import rebuild_plan
from tests.support.personal_data import database_text
from tests.recruitment.recruitment_helpers import ADMIN, applicant
from tests.shared.integration.rebuild_support import table_rows
from tests.support.kafka import kafka_client

pytestmark = pytest.mark.integration

YEAR, REGENCY = 2030, "6303"


class LegacyRegistered(Event):
    """ApplicantRegistered as version 1 wrote it (plaintext); not registered: written only."""

    event_type = "recruitment.ApplicantRegistered"
    schema_version = 1
    applicant_id: str
    year: int
    nik: str
    full_name: str
    sex: str
    birth_date: date
    education: str
    domicile_province_code: str
    domicile_regency_code: str
    phone: str | None = None
    email: str | None = None


async def legacy(conn: asyncpg.Connection, name: str, phone: str,
                 note: str | None = None) -> tuple[dict, str]:
    """An applicant as the service stored it before encryption: events, read model, claim."""
    reg = {**applicant(YEAR, REGENCY), "full_name": name}
    applicant_id = str(uuid.uuid4())
    events: list[Event] = [LegacyRegistered(
        applicant_id=applicant_id, year=YEAR, nik=reg["nik"], full_name=name, sex=reg["sex"],
        birth_date=date.fromisoformat(reg["birth_date"]), education="S1",
        domicile_province_code=REGENCY[:2], domicile_regency_code=REGENCY, phone=phone,
        email=None)]
    if note:
        events.append(ApplicantRejected(applicant_id=applicant_id,
                                        reason="documents_incomplete", note=note))
    async with conn.transaction():
        envelopes = await EventStore("recruitment").append(
            conn, f"applicant-{applicant_id}", 0, events, actor="ministry_admin:legacy",
            correlation_id=uuid.uuid4())
        await project(conn, [(e, parse_payload(e)) for e in envelopes])
        await conn.execute("INSERT INTO applicant_nik (year, nik, applicant_id) "
                           "VALUES ($1, $2, $3)", YEAR, reg["nik"], applicant_id)
        await conn.execute("UPDATE applicants SET nik = $2 WHERE applicant_id = $1",
                           applicant_id, reg["nik"])  # as migration 003 did
    return reg, applicant_id


async def test_plaintext_from_before_reads_and_is_sealed_once(recruitment):
    client, keyring = recruitment.client, pii.Keyring.dev()
    tag = uuid.uuid4().hex[:6]
    conn = await asyncpg.connect(recruitment.database_url)
    try:
        lama, lama_id = await legacy(conn, f"Lama Terbaca {tag}", "+6281311112222")
        gone, gone_id = await legacy(conn, f"Lama Dihapus {tag}", "+6281333334444")
        note = f"catatan lama {tag}"
        noted, noted_id = await legacy(conn, f"Lama Ditolak {tag}", "+6281355556666", note)
        plain = [lama["nik"], lama["full_name"], "6281311112222", gone["nik"], gone["full_name"],
                 "6281333334444", noted["nik"], note]
        before = await database_text(conn)
        assert all(p in before for p in plain)  # the premise

        # before the sealing: it reads, the NIK rule holds, subject access finds it
        read = (await client.get(f"/applicants/{lama_id}", headers=ADMIN,
                                 params={"reveal": "nik"})).json()
        assert (read["full_name"], read["nik"], read["phone"]) == (
            lama["full_name"], lama["nik"], "+6281311112222")
        again = await client.post("/applicants", headers=ADMIN, json=lama)
        assert again.status_code == 409 and again.json()["error"]["applicant_id"] == lama_id
        found = (await client.post("/privacy/subject-access", headers=ADMIN,
                                   json={"nik": lama["nik"]})).json()
        assert [r["applicant_id"] for r in found["records"]] == [lama_id]
        r = await client.post("/privacy/erasure", headers=ADMIN,
                              json={"nik": gone["nik"], "reason_code": "subject_request"})
        assert r.json()["erased"] == 1, r.text

        sealed = 0
        while n := await seal_plaintext(conn, keyring, batch_size=2):
            sealed += n
        assert sealed == 4  # three registrations, one note
        assert await seal_plaintext(conn, keyring) == 0  # once

        text = await database_text(conn)
        for p in plain:
            assert p not in text, p
        assert await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'recruitment.ApplicantRegistered' "
            "AND schema_version = 1") == 0
        read = (await client.get(f"/applicants/{lama_id}", headers=ADMIN,
                                 params={"reveal": "nik"})).json()
        assert (read["full_name"], read["nik"], read["phone"]) == (
            lama["full_name"], lama["nik"], "+6281311112222")
        assert read["birth_date"] == lama["birth_date"] and read["age"] is not None
        read = (await client.get(f"/applicants/{noted_id}", headers=ADMIN)).json()
        assert (read["rejection_note"], read["status"]) == (note, "rejected")
        read = (await client.get(f"/applicants/{gone_id}", headers=ADMIN)).json()
        assert read["full_name"] == str(pii.ERASED) and read["phone"] == str(pii.ERASED)
        again = await client.post("/applicants", headers=ADMIN, json=lama)
        assert again.status_code == 409 and again.json()["error"]["applicant_id"] == lama_id
        assert await conn.fetchval("SELECT nik FROM applicant_nik WHERE applicant_id = $1",
                                   lama_id) == keyring.nik_hash(lama["nik"])

        live = await table_rows(conn, REBUILD.tables)
        await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                           bootstrap=recruitment.kafka, kafka_options=kafka_client("recruitment"))
        assert await table_rows(conn, REBUILD.tables) == live
    finally:
        await conn.close()
