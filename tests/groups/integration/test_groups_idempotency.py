"""Retries with an Idempotency-Key through the HTTP API: the command runs once, the retry gets
the first answer again (events counted in the event store)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
import pytest

from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY
from tests.groups.groups_support import ADMIN, fund, registration

pytestmark = pytest.mark.integration

ACTIVITIES = {
    "bimtek": ({"subject": "Bimtek kelembagaan", "held_on": "2023-09-12"},
               "groups.BimtekAttended"),
    "product-evidence": ({"product": "Kue tradisional", "evidence_count": 3,
                          "recorded_on": "2023-10-02"}, "groups.ProductEvidenceRecorded"),
    "expos": ({"expo_code": "gelar_produk_tkm_bali", "held_on": "2023-11-20"},
              "GroupShowcasedAtExpo"),
}


def keyed(key: str | None = None, headers: dict[str, str] = ADMIN) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or f"test-{uuid.uuid4()}"}


async def count_events(database_url: str, event_type: str, stream_id: str | None = None) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = $1 AND ($2::text IS NULL OR "
            "stream_id = $2)", event_type, stream_id)
    finally:
        await conn.close()


async def funded_group(groups) -> str:
    post = groups.client.post
    group_id = (await post("/groups", json=registration(), headers=ADMIN)).json()["group_id"]
    assert (await post(f"/groups/{group_id}/approval", headers=ADMIN)).status_code == 200
    funded = await fund(groups.client, group_id, {
        "tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01",
        "budget_year": 2023})
    assert funded["status"] == "funded", funded
    return group_id


@pytest.mark.parametrize("activity", sorted(ACTIVITIES))
async def test_an_activity_sent_twice_with_one_key_is_recorded_once(groups, activity):
    group_id = await funded_group(groups)
    body, event_type = ACTIVITIES[activity]
    headers = keyed()
    first = await groups.client.post(f"/groups/{group_id}/{activity}", json=body,
                                     headers=headers)
    retry = await groups.client.post(f"/groups/{group_id}/{activity}", json=body,
                                     headers=headers)
    assert first.status_code == 201, first.text
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count_events(groups.database_url, event_type, f"group-{group_id}") == 1
    # without the key the same activity is recorded again: the key is what made it safe
    again = await groups.client.post(f"/groups/{group_id}/{activity}", json=body,
                                     headers=ADMIN)
    assert again.status_code == 201
    assert await count_events(groups.database_url, event_type, f"group-{group_id}") == 2


async def test_a_retried_registration_answers_201_again_not_409(groups):
    body, headers = registration(), keyed()
    first = await groups.client.post("/groups", json=body, headers=headers)
    retry = await groups.client.post("/groups", json=body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    stream = f"group-{first.json()['group_id']}"
    assert await count_events(groups.database_url, "GroupRegistered", stream) == 1
    # a new key for the same group meets the natural key: a 409 naming the group
    other = await groups.client.post("/groups", json=body, headers=keyed())
    assert other.status_code == 409


async def test_the_same_key_with_another_body_is_refused_and_runs_nothing(groups):
    group_id = await funded_group(groups)
    headers = keyed()
    first = await groups.client.post(f"/groups/{group_id}/bimtek", headers=headers, json={
        "subject": "Bimtek kelembagaan", "held_on": "2023-09-12"})
    other = await groups.client.post(f"/groups/{group_id}/bimtek", headers=headers, json={
        "subject": "Bimtek keuangan", "held_on": "2023-09-13"})
    assert first.status_code == 201
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    assert "different request" in other.json()["error"]["reason"]
    assert await count_events(groups.database_url, "groups.BimtekAttended",
                              f"group-{group_id}") == 1


async def test_concurrent_duplicates_run_once(groups):
    group_id = await funded_group(groups)
    body, event_type = ACTIVITIES["bimtek"]
    headers = keyed()
    answers = await asyncio.gather(*(
        groups.client.post(f"/groups/{group_id}/bimtek", json=body, headers=headers)
        for _ in range(10)))
    fresh = [a for a in answers if a.status_code == 201
             and "idempotent-replayed" not in a.headers]
    assert len(fresh) == 1
    for answer in answers:
        if answer.status_code == 409:  # still in flight when it came: told so, told to retry
            assert "in progress" in answer.json()["error"]["reason"]
            assert answer.headers["retry-after"] == "1"
        else:
            assert (answer.status_code, answer.json()) == (201, fresh[0].json())
    assert await count_events(groups.database_url, event_type, f"group-{group_id}") == 1


async def test_a_key_belongs_to_its_caller(groups):
    group_id = await funded_group(groups)
    body, event_type = ACTIVITIES["bimtek"]
    key = f"shared-{uuid.uuid4()}"
    other = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "another-admin",
                                                     Role.ADMIN)}
    first = await groups.client.post(f"/groups/{group_id}/bimtek", json=body,
                                     headers=keyed(key))
    second = await groups.client.post(f"/groups/{group_id}/bimtek", json=body,
                                      headers=keyed(key, other))
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in second.headers
    assert await count_events(groups.database_url, event_type, f"group-{group_id}") == 2


async def test_a_refusal_is_replayed_too(groups):
    headers = keyed()
    missing = f"/groups/{uuid.uuid4().hex}/approval"
    first = await groups.client.post(missing, headers=headers)
    retry = await groups.client.post(missing, headers=headers)
    assert first.status_code == 404
    assert (retry.status_code, retry.json()) == (404, first.json())
    assert retry.headers["idempotent-replayed"] == "true"


async def test_a_malformed_key_is_refused(groups):
    answer = await groups.client.post("/groups", json=registration(),
                                      headers=keyed("has spaces in it"))
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "Idempotency-Key"


async def test_a_claim_left_by_a_dead_process(groups):
    """In progress past its lease: taken over when nothing committed, refused (never run
    twice) when its command committed but its answer was lost."""
    body, event_type = ACTIVITIES["bimtek"]
    conn = await asyncpg.connect(groups.database_url)
    try:
        outcomes = Counter()
        for committed in (False, True):
            group_id = await funded_group(groups)
            key, owner = f"dead-{uuid.uuid4()}", uuid.uuid4()
            path = f"/groups/{group_id}/bimtek"
            # a first answer gives the row its request hash; then it is made to look like
            # the claim of a process that died (lease over, no answer stored)
            await groups.client.post(path, json=body, headers=keyed(key))
            digest = await conn.fetchval(
                "SELECT request_hash FROM idempotency_keys WHERE key = $1", key)
            await conn.execute(
                "UPDATE idempotency_keys SET state = 'in_progress', owner = $2, status = NULL, "
                "body = NULL, lease_until = now() - interval '1 second', committed = $3 "
                "WHERE key = $1", key, owner, committed)
            if committed:
                await conn.execute("INSERT INTO idempotency_effects (owner) VALUES ($1)",
                                   owner)
            retry = await groups.client.post(path, json=body, headers=keyed(key))
            outcomes[committed] = retry.status_code
            assert digest is not None
            expected = 1 if committed else 2  # the first ran; a takeover runs it once more
            assert await count_events(groups.database_url, event_type,
                                      f"group-{group_id}") == expected
        assert outcomes == {False: 201, True: 409}
    finally:
        await conn.close()
