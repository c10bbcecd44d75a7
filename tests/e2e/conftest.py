"""The four services as separate processes against the session's real Kafka and Postgres, each
with a fresh database of its own."""

from __future__ import annotations

import pytest

from scripts import services as service_processes
from tests.support.databases import create_database


@pytest.fixture(scope="module")
async def running_services(infra, tmp_path_factory):
    databases = {name: await create_database(infra, f"e2e_{name}")
                 for name in service_processes.SERVICES}
    running = service_processes.start(infra, tmp_path_factory.mktemp("service-logs"),
                                      databases=databases, extra_env={"TKM_LOG_LEVEL": "WARNING"})
    try:
        yield running
    finally:
        running.stop()
