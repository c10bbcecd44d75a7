"""Every write route of the evaluation service sent twice under one Idempotency-Key: the
first writes events, the retry writes none and answers the same."""

from __future__ import annotations

import random
import uuid

import asyncpg
import pytest

from shared.idempotency import WRITES
from tests.evaluation.integration.evaluation_helpers import ADMIN, CHECKER, running_service

pytestmark = pytest.mark.integration


async def test_every_evaluation_write_runs_once_under_one_key(infra, database_url):
    walked: set[tuple[str, str]] = set()

    async def events() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM events")
        finally:
            await conn.close()

    async with running_service(infra.kafka_bootstrap, database_url) as (_, api):
        async def twice(route: str, expected: int, method: str = "POST",
                        body: dict | None = None, who: dict[str, str] = ADMIN,
                        **params: str) -> dict:
            walked.add((method, route))
            headers = {**who, "Idempotency-Key": f"walk-{uuid.uuid4()}"}
            before = await events()
            first = await api.request(method, route.format(**params), headers=headers,
                                      json=body)
            assert first.status_code == expected, (route, first.text)
            written = await events()
            assert written > before, f"{route} wrote nothing"
            retry = await api.request(method, route.format(**params), headers=headers,
                                      json=body)
            assert (retry.status_code, retry.content) == (first.status_code, first.content)
            assert retry.headers["idempotent-replayed"] == "true"
            assert await events() == written, f"{route} wrote again on a retry"
            return first.json()

        year, rejected, many = (str(y) for y in random.sample(range(2040, 2091), 3))
        for y in (year, rejected, many):
            await twice("/evaluations/{year}/open", 201, year=y)
        # the close is asked for (202 pending) and granted by another admin, once
        asked = await twice("/evaluations/{year}/close", 202, year=year)
        granted = await twice("/approvals/{request_id}/grant", 200, who=CHECKER,
                              request_id=asked["request_id"])
        assert granted["result"]["summary"]["status"] == "closed"
        asked = await twice("/evaluations/{year}/close", 202, year=rejected)
        await twice("/approvals/{request_id}/reject", 200, who=CHECKER,
                    body={"reason_code": "other"}, request_id=asked["request_id"])
        asked = await twice("/evaluations/{year}/close", 202, year=many)
        grants = await twice("/approvals/grant", 200, who=CHECKER,
                             body={"request_ids": [asked["request_id"]]})
        assert grants["granted"] == 1
        policy = (await api.get("/rules/2023", headers=ADMIN)).json()["rules"]
        await twice("/rules/{year}", 200, "PUT", {"rules": {**policy, "version": "walk"}},
                    year=year)

        spec = (await api.get("/openapi.json")).json()["paths"]
        routes = {(m.upper(), p) for p, ops in spec.items() for m in ops if m.upper() in WRITES}
        assert routes - walked == set(), "write routes not walked under a key"
