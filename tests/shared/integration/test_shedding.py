"""Load shedding on a real service (groups, real lifespan, Kafka and Postgres): beyond its
in-flight limit, or when no pooled connection frees up in time, a request is answered 503 JSON
with Retry-After at once; none hangs; health stays answered; the service carries on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Request

from services.groups.app import build_spec
from shared.auth import Role, mint_token
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from shared.shedding import patient
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration

READER = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "shedding", Role.AGENCY)}
SLOW_S = 1.0


def slow_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/test/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(SLOW_S)
        return {"status": "done"}

    @router.get("/test/hold-connection")
    async def hold(request: Request, wait: bool = False) -> dict[str, str]:
        with patient() if wait else contextlib.nullcontext():
            async with request.app.state.ctx.pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep($1)", SLOW_S)
        return {"status": "done"}

    return router


@contextlib.asynccontextmanager
async def limited_groups(infra, **settings) -> AsyncIterator[httpx.AsyncClient]:
    database_url = await create_database(infra, "t_shed")
    spec = build_spec()
    spec = dataclasses.replace(spec, routers=[*spec.routers, slow_routes()],
                               consumer_group=f"groups-test-{uuid.uuid4().hex}")
    app = create_app(spec, load_settings(
        "groups", database_url=database_url, kafka_bootstrap_servers=infra.kafka_bootstrap,
        **settings))
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://groups", timeout=30) as client:
                yield client
    finally:
        await drop_database(infra, database_url)


async def timed(client: httpx.AsyncClient, path: str, **kw) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await client.get(path, **kw)
    return answer, time.monotonic() - started


async def test_beyond_the_in_flight_limit_requests_are_shed_at_once(infra):
    async with limited_groups(infra, max_in_flight=4, queue_wait_s=0.2) as client:
        burst = [asyncio.create_task(timed(client, "/test/slow")) for _ in range(60)]
        await asyncio.sleep(0.05)
        health, health_s = await timed(client, "/healthz")  # exempt, even now
        answers = await asyncio.gather(*burst)

        statuses = Counter(a.status_code for a, _ in answers)
        assert statuses == {200: 4, 503: 56}
        shed = [(a, s) for a, s in answers if a.status_code == 503]
        for answer, _ in shed:
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"]["status"] == 503
        slowest_shed = max(s for _, s in shed)
        # the queue wait (0.2 s) plus scheduling; generous for a loaded CI machine, still far
        # below the slow request a queued caller would otherwise wait for
        assert slowest_shed < SLOW_S, slowest_shed
        assert max(s for _, s in answers) < SLOW_S + 1
        assert (health.status_code, health_s < 1.5) == (200, True)

        after = await client.get("/test/slow")
        assert after.status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'tkm_http_requests_shed_total{service="groups"}' in metrics


async def test_a_request_queued_briefly_gets_its_turn(infra):
    async with limited_groups(infra, max_in_flight=1, queue_wait_s=SLOW_S * 3) as client:
        answers = await asyncio.gather(*(timed(client, "/test/slow") for _ in range(2)))
        assert [a.status_code for a, _ in answers] == [200, 200]


async def test_no_free_connection_in_time_is_a_quick_503(infra):
    async with limited_groups(infra, db_pool_max=2, db_acquire_timeout_s=0.3,
                              max_in_flight=50) as client:
        answers = await asyncio.gather(*(timed(client, "/test/hold-connection")
                                         for _ in range(6)))
        statuses = Counter(a.status_code for a, _ in answers)
        assert statuses[200] >= 1 and statuses[503] >= 3, statuses
        for answer, seconds in answers:
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1"
                assert "busy" in answer.json()["error"]["reason"]
                assert seconds < 2.0
        # and the pool serves again once the holders are done
        assert (await client.get("/groups", headers=READER)).status_code == 200
        # work already admitted (a bulk request part-way) waits its turn instead
        answers = await asyncio.gather(*(client.get("/test/hold-connection?wait=true")
                                         for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4


async def test_hundreds_of_real_requests_none_hangs(infra):
    async with limited_groups(infra, max_in_flight=8, queue_wait_s=0.1) as client:
        started = time.monotonic()
        answers = await asyncio.gather(*(timed(client, "/groups", headers=READER)
                                         for _ in range(400)))
        took = time.monotonic() - started
        statuses = Counter(a.status_code for a, _ in answers)
        assert set(statuses) <= {200, 503} and statuses[200] >= 8, statuses
        assert took < 20, took
        assert (await client.get("/groups", headers=READER)).status_code == 200
