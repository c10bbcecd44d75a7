"""Shared fixtures: the real Kafka broker and Postgres server, started once per test run on free
ports (or taken from KAFKA_BOOTSTRAP_SERVERS and TKM_POSTGRES_URL when those are set)."""

from __future__ import annotations

import os

import pytest

from scripts import infra as local_infra
from tests.support.databases import create_database

# the suite runs services on loopback with the repository's dev signing key: the explicit switch
# (shared.settings refuses that key otherwise)
os.environ.setdefault("TKM_ENV", "test")


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TKM_POSTGRES_URL"):
        yield local_infra.Endpoints(os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                                    os.environ["TKM_POSTGRES_URL"])
        return
    state = tmp_path_factory.mktemp("infra")
    endpoints, _ = local_infra.up(state)
    try:
        yield endpoints
    finally:
        local_infra.down(state)


@pytest.fixture
async def database_url(infra: local_infra.Endpoints) -> str:
    """A new, empty database of its own for one test."""
    return await create_database(infra)
