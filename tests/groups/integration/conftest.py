"""The groups service running in-process with its real lifespan (real Kafka and Postgres)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.groups.groups_support import RunningGroups, running_groups


@pytest.fixture(scope="module")
async def groups(infra) -> AsyncIterator[RunningGroups]:
    """One service and database per test module: tests use fresh groups and NIKs."""
    async with running_groups(infra) as service:
        yield service
