"""A database from before expo codes: migration 003 and a rebuild both drop the free text."""

from __future__ import annotations

import shutil
from datetime import date

import asyncpg
import pytest

from services.groups.projections import READ_MODELS, project_read_models
from shared.contracts.groups import GroupApproved, GroupFunded
from shared.eventstore import migrate
from shared.projections import rebuild
from tests.groups.integration.test_groups_reason_migration import (
    MIGRATIONS,
    NOTE,
    _current,
    _registered,
    _store,
)

pytestmark = pytest.mark.integration


async def _activities(conn: asyncpg.Connection) -> list[tuple]:
    rows = await conn.fetch("SELECT group_id, kind, title, place, held_on FROM group_activities "
                            "ORDER BY group_id, stream_version")
    return [tuple(r) for r in rows]


async def test_free_text_expos_of_before_become_other_with_no_place(database_url, tmp_path):
    old = tmp_path / "migrations"
    old.mkdir()
    for name in ("001_read_models.sql", "002_reason_codes.sql"):
        shutil.copy(MIGRATIONS / name, old)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", old)
        await _store(conn, "group-g3", [
            _current(_registered("g3")), _current(GroupApproved(group_id="g3")),
            _current(GroupFunded(group_id="g3", tranche=1, amount=20_000_000,
                                 disbursed_on=date(2023, 6, 1), budget_year=2023, year=2023,
                                 province_code="32", regency_code="3201",
                                 lpj_due_on=date(2023, 8, 30))),
            ("GroupShowcasedAtExpo", 1, {"group_id": "g3", "expo": NOTE, "place": NOTE,
                                         "held_on": "2023-11-20"})])
        # the row the old projector made of the v1 event
        await conn.execute("INSERT INTO group_activities (group_id, stream_version, kind, title, "
                           "place, held_on) VALUES ('g3', 4, 'expo', $1, $1, '2023-11-20')", NOTE)

        assert "groups:003_expo_codes" in await migrate(conn, "groups", MIGRATIONS)
        migrated = await _activities(conn)
        assert migrated == [("g3", "expo", "other", None, date(2023, 11, 20))]

        await rebuild(conn, project_read_models, READ_MODELS)
        assert await _activities(conn) == migrated
    finally:
        await conn.close()
