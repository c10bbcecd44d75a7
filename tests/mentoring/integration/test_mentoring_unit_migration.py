"""A database from before unit codes: migration 002 maps each report's unit as the v1 -> v2
upcaster does, so the live table equals a rebuild from the event store."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

import services.mentoring
from shared.contracts.mentoring import PRODUCTION_UNITS
from shared.envelope import decode
from shared.eventstore import migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(services.mentoring.__file__).parent / "migrations"
TYPED = ["kg", " KG ", "Porsi\n", "ekor", "lembar", "karung", "servis",
         "Siti 081234567890", "3201014506990001", "lainnya", "Ton"]


def upcast(unit: str) -> str:
    raw = json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "ReportFiled", "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(), "stream_id": "group-g", "stream_version": 1,
        "correlation_id": str(uuid.uuid4()), "producer": "mentoring", "actor": "tks:x",
        "payload": {"group_id": "g", "tks_id": "t", "period": "2023-05", "revenue": 1,
                    "production_units": 1, "production_unit": unit, "members_active": 1,
                    "new_workers": 0, "support": [], "lpj_help": False, "on_time": True}})
    return decode(raw)[1].production_unit


async def test_typed_units_of_before_map_as_the_upcaster_maps_them(database_url, tmp_path):
    old = tmp_path / "migrations"
    old.mkdir()
    shutil.copy(MIGRATIONS / "001_read_models.sql", old)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "mentoring", old)
        for i, unit in enumerate(TYPED):
            await conn.execute(
                "INSERT INTO monthly_reports (group_id, period, tks_id, province_code, "
                "regency_code, revenue, production_units, production_unit, members_active, "
                "new_workers, partnership, capital_access, market_access, lpj_help, on_time, "
                "filed_at) VALUES ($1, '2023-05', 't', '32', '3201', 1, 1, $2, 1, 0, false, "
                "false, false, false, true, now())", f"g{i:02d}", unit)

        assert "mentoring:002_production_unit_codes" in await migrate(conn, "mentoring",
                                                                      MIGRATIONS)
        rows = await conn.fetch("SELECT production_unit FROM monthly_reports ORDER BY group_id")
        migrated = [r["production_unit"] for r in rows]
        assert migrated == [upcast(unit) for unit in TYPED]
        assert migrated[:5] == ["kg", "kg", "porsi", "ekor", "lembar"]
        assert set(migrated[5:]) == {"lainnya"} and set(migrated) <= set(PRODUCTION_UNITS)
    finally:
        await conn.close()
