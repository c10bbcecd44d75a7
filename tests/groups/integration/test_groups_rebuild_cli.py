from __future__ import annotations

import asyncio

import asyncpg
import pytest
from typer.testing import CliRunner

from scripts.cli import app
from tests.groups.groups_support import ADMIN, registration

pytestmark = pytest.mark.integration


async def test_tkm_rebuild_restores_a_damaged_read_model(groups, monkeypatch):
    created = await groups.client.post("/groups", json=registration("3201"), headers=ADMIN)
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    conn = await asyncpg.connect(groups.database_url)
    try:
        before = await conn.fetchrow("SELECT * FROM group_registry WHERE group_id = $1", group_id)
        await conn.execute("DELETE FROM group_registry")
        monkeypatch.setenv("GROUPS_DATABASE_URL", groups.database_url)
        result = await asyncio.to_thread(CliRunner().invoke, app, ["rebuild", "groups"])
        assert result.exit_code == 0, result.output
        assert "events replayed into group_registry" in result.output
        after = await conn.fetchrow("SELECT * FROM group_registry WHERE group_id = $1", group_id)
        assert dict(after) == dict(before)
        # the rule is a service table: the rebuild leaves it as it was
        assert await conn.fetchval("SELECT count(*) FROM active_memberships WHERE group_id = $1",
                                   group_id) == len(registration("3201")["members"])
    finally:
        await conn.close()


def test_an_unknown_service_is_refused():
    result = CliRunner().invoke(app, ["rebuild", "payroll"])
    assert result.exit_code == 2
    assert "unknown service" in result.output
