"""A round opened twice without a round id but with one Idempotency-Key is one round."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.recruitment.recruitment_helpers import ADMIN

pytestmark = pytest.mark.integration


async def rounds_opened(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'RecruitmentRoundOpened'")
    finally:
        await conn.close()


async def test_a_retried_round_without_an_id_opens_one_round(recruitment):
    body = {"year": 2029, "stage": 2, "quotas": [{"province_code": "52", "places": 3}]}
    headers = {**ADMIN, "Idempotency-Key": f"round-{uuid.uuid4()}"}
    before = await rounds_opened(recruitment.database_url)
    first = await recruitment.client.post("/rounds", json=body, headers=headers)
    retry = await recruitment.client.post("/rounds", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert await rounds_opened(recruitment.database_url) == before + 1
    # without the key, the same body opens a second round: the key is what made it safe
    again = await recruitment.client.post("/rounds", json=body, headers=ADMIN)
    assert again.status_code == 201 and again.json()["round_id"] != first.json()["round_id"]
    assert await rounds_opened(recruitment.database_url) == before + 2
