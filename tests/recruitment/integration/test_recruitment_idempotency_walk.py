"""Every write route of the recruitment service, with a request that succeeds, sent twice
under one Idempotency-Key: the first writes events, the retry writes none and answers the
same. A new write route fails this test until it is walked too."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.idempotency import WRITES
from tests.recruitment.recruitment_helpers import ADMIN, applicant

pytestmark = pytest.mark.integration

YEAR, REGENCY = 2027, "6301"
BRIEFING = {"city": "Banjarmasin", "briefed_on": f"{YEAR}-03-06"}


async def test_every_recruitment_write_runs_once_under_one_key(recruitment):
    walked: set[tuple[str, str]] = set()

    async def events() -> int:
        conn = await asyncpg.connect(recruitment.database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM events")
        finally:
            await conn.close()

    async def twice(route: str, expected: int, body: dict | None = None, **params: str) -> dict:
        walked.add(("POST", route))
        path = route.format(**params)
        headers = {**ADMIN, "Idempotency-Key": f"walk-{uuid.uuid4()}"}
        before = await events()
        first = await recruitment.client.post(path, json=body, headers=headers)
        assert first.status_code == expected, (route, first.text)
        written = await events()
        assert written > before, f"{route} wrote nothing"
        retry = await recruitment.client.post(path, json=body, headers=headers)
        assert (retry.status_code, retry.content) == (first.status_code, first.content), route
        assert retry.headers["idempotent-replayed"] == "true"
        assert await events() == written, f"{route} wrote again on a retry"
        return first.json()

    r = (await twice("/rounds", 201, {"year": YEAR, "stage": 1, "quotas": [
        {"province_code": REGENCY[:2], "regency_code": REGENCY, "places": 10}]}))["round_id"]
    a = (await twice("/applicants", 201, applicant(YEAR, REGENCY)))["applicant_id"]
    await twice("/applicants/{applicant_id}/screening", 200, {"passed": True}, applicant_id=a)
    await twice("/applicants/{applicant_id}/briefing", 200, {"stage": 1, **BRIEFING},
                applicant_id=a)
    await twice("/rounds/{round_id}/recruitments", 201,
                {"applicant_id": a, "regency_code": REGENCY}, round_id=r)
    await twice("/tks/{tks_id}/resignation", 200, {"effective_date": f"{YEAR}-07-31"},
                tks_id=a)
    await twice("/applicants:batch", 200, {"items": [applicant(YEAR, REGENCY)]})
    await twice("/rounds/{round_id}/recruitments:batch", 200, {"items": [
        {"applicant": applicant(YEAR, REGENCY), "regency_code": REGENCY,
         "briefing": BRIEFING}]}, round_id=r)
    await twice("/rounds/{round_id}/close", 200, round_id=r)
    # a person's rights (shared.privacy): each an audited command
    person = applicant(YEAR, REGENCY)
    await twice("/applicants", 201, person)
    await twice("/privacy/subject-access", 200, {"nik": person["nik"]})
    await twice("/privacy/correction", 200,
                {"nik": person["nik"], "changes": {"full_name": "Nama Baru"}})
    await twice("/privacy/erasure", 200, {"nik": person["nik"],
                                          "reason_code": "subject_request"})

    spec = (await recruitment.client.get("/openapi.json")).json()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops if m.upper() in WRITES}
    assert routes - walked == set(), "write routes not walked under a key"
