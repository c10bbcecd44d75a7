"""The four services as separate processes against the session's real Kafka and Postgres, each
with a fresh database of its own."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from scripts import services as service_processes


@pytest.fixture(scope="module")
async def running_services(infra, tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    databases = {}
    conn = await asyncpg.connect(infra.database_url("postgres"))
    try:
        for name in service_processes.SERVICES:
            db = f"e2e_{name}_{suffix}"
            await conn.execute(f'CREATE DATABASE "{db}"')
            databases[name] = infra.database_url(db)
    finally:
        await conn.close()
    running = service_processes.start(infra, tmp_path_factory.mktemp("service-logs"),
                                      databases=databases, extra_env={"TKM_LOG_LEVEL": "WARNING"})
    try:
        yield running
    finally:
        running.stop()
