"""Every state-changing route of the four services honours Idempotency-Key: the routes are
enumerated from each app's OpenAPI document, so a new write endpoint is covered (and checked)
without a list to keep. Each is sent twice with one key: the retry is the first answer replayed and writes no
event; the OpenAPI document declares the header on each."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from shared.auth import Role, mint_token, pseudonym
from shared.idempotency import HEADER, WRITES
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from tests.support.databases import create_database, drop_database
from tests.support.kafka import start_at_end

pytestmark = pytest.mark.integration

SERVICES = ("recruitment", "groups", "mentoring", "evaluation")
ADMIN = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "idempotency-every-route",
                                                 Role.ADMIN)}
CALLER = f"{Role.ADMIN.value}:{pseudonym(DEV_SIGNING_KEY, 'idempotency-every-route')}"
# values for path parameters that pass their type checks (the command may still refuse them)
PATH_VALUES = {"year": "2031", "period": "2031-01"}


@contextlib.asynccontextmanager
async def running(infra, service: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    database_url = await create_database(infra, f"t_idem_{service[:4]}")
    spec = importlib.import_module(f"services.{service}.app").build_spec()
    spec = dataclasses.replace(spec, consumer_group=f"{service}-test-{uuid.uuid4().hex}")
    if spec.consumes:
        # from the topics' end: what earlier tests published would otherwise be consumed (and
        # written) while a route is retried, and counted as the retry's writes
        await start_at_end(infra.kafka_bootstrap, spec.consumer_group, spec.consumes)
    app = create_app(spec, load_settings(service, database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         relay_poll_interval_s=0.05))
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url=f"http://{service}", timeout=60) as client:
                yield client, database_url
    finally:
        await drop_database(infra, database_url)


def write_routes(operations: dict) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, ops in operations.items()
                  for method in ops if method.upper() in WRITES)


def concrete(path: str) -> str:
    return re.sub(r"{([^}:]+)(:[^}]*)?}",
                  lambda m: PATH_VALUES.get(m.group(1), str(uuid.uuid4())), path)


async def event_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        # the caller's own writes only: a consumer policy or a periodic job of the service
        # (the period closer) may append events of its own while a route is retried
        return await conn.fetchval("SELECT count(*) FROM events WHERE actor = $1", CALLER)
    finally:
        await conn.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_every_write_route_replays_its_first_answer_and_writes_once(infra, service):
    async with running(infra, service) as (client, database_url):
        operations = (await client.get("/openapi.json")).json()["paths"]
        routes = write_routes(operations)
        assert len(routes) >= 2, f"{service}: {routes}"
        undocumented = [(m, p) for m, p in routes if HEADER not in
                        {q["name"] for q in operations[p][m.lower()].get("parameters", [])}]
        assert undocumented == []

        for method, template in routes:
            path, key = concrete(template), f"every-route-{uuid.uuid4()}"
            headers = {**ADMIN, HEADER: key}
            first = await client.request(method, path, json={}, headers=headers)
            assert first.status_code < 500, (method, template, first.text)
            written = await event_count(database_url)
            retry = await client.request(method, path, json={}, headers=headers)
            assert (retry.status_code, retry.content) == (first.status_code, first.content), (
                method, template)
            assert retry.headers.get("idempotent-replayed") == "true", (method, template)
            assert await event_count(database_url) == written, (method, template)
            other = await client.request(method, path, json={"other": 1}, headers=headers)
            assert other.status_code == 422, (method, template)
            assert other.json()["error"]["field"] == HEADER
