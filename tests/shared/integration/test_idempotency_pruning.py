"""Idempotency keys are kept for `idempotency_retention_hours`, then pruned with their
effects by every service's background job."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import httpx
import pytest

from services.groups.app import build_spec
from shared.service import create_app
from shared.settings import load_settings
from tests.groups.groups_support import ADMIN, registration
from tests.support.databases import create_database, drop_database
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


async def test_keys_past_their_retention_are_pruned_with_their_effects(infra):
    database_url = await create_database(infra, "t_idem_prune")
    spec = dataclasses.replace(build_spec(), consumer_group=f"groups-test-{uuid.uuid4().hex}")
    app = create_app(spec, load_settings(
        "groups", database_url=database_url, kafka_bootstrap_servers=infra.kafka_bootstrap,
        idempotency_retention_hours=2 / 3600, housekeeping_interval_s=0.2))
    conn = await asyncpg.connect(database_url)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://groups") as client:
                # warm: the first command of a process also adopts the shipped rules of the
                # years, which may outlast a short retention and so lose its own claim (a 409)
                assert (await client.get("/rules/2023", headers=ADMIN)).status_code == 200
                headers = {**ADMIN, "Idempotency-Key": f"prune-{uuid.uuid4()}"}
                first = await client.post("/groups", json=registration(), headers=headers)
                assert first.status_code == 201
                assert await conn.fetchval("SELECT count(*) FROM idempotency_effects") == 1

                async def pruned() -> bool:
                    keys = await conn.fetchval("SELECT count(*) FROM idempotency_keys")
                    effects = await conn.fetchval("SELECT count(*) FROM idempotency_effects")
                    return (keys, effects) == (0, 0)

                assert await eventually(pruned, timeout=10)
    finally:
        await conn.close()
        await drop_database(infra, database_url)
