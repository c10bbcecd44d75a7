"""The CSV import's speed with members' personal data sealed: 1,000 groups (10,000 members) in
one file, timed, with the members' data keys fetched once per batch of groups (one statement
for up to 2,500 persons), not once per member."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import asyncpg
import pytest

from services.groups import privacy
from services.groups.handlers import GROUPS_PER_TRANSACTION
from shared.nik import make_nik
from tests.groups.groups_support import ADMIN, CSV_HEADER, csv_file

pytestmark = pytest.mark.integration

CSV = {"Content-Type": "text/csv"}
GROUPS = 1_000


def _rows(run: str) -> list[list[str]]:
    """10 members a group, every NIK distinct (no one in two groups)."""
    first = date(1975, 1, 1) + timedelta(days=int(run, 16) % 5000)
    rows = []
    for i in range(GROUPS * 10):
        nik = make_nik("320101", first + timedelta(days=i % 3000), "FM"[i % 2], 1 + i // 3000)
        name = f"KUB {run} {i // 10}"
        rows.append([f"REF-{i // 10}", "2023", "pemula", "3201", "poultry", name, nik,
                     f"Anggota {i}", "0812 3456 7890"])
    return rows


async def test_a_thousand_groups_import_with_keys_per_batch(groups, monkeypatch):
    calls: list[int] = []
    ensure = privacy.pii.ensure_keys

    async def counted(conn, keyring, refs):
        refs = list(refs)
        calls.append(len(refs))
        return await ensure(conn, keyring, refs)

    monkeypatch.setattr(privacy.pii, "ensure_keys", counted)
    rows = _rows(uuid.uuid4().hex[:6])
    conn = await asyncpg.connect(groups.database_url)
    try:
        keys_before = await conn.fetchval("SELECT count(*) FROM pii_person_keys")
        started, cpu = time.perf_counter(), time.process_time()
        answer = await groups.client.post("/groups/imports", content=csv_file(rows, CSV_HEADER),
                                          headers={**ADMIN, **CSV})
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert answer.status_code == 200, answer.text[:500]
        assert answer.json()["registered"] == GROUPS, answer.json()["errors"][:3]
        keys_after = await conn.fetchval("SELECT count(*) FROM pii_person_keys")
    finally:
        await conn.close()
    # a key per member, asked for once per batch of groups
    assert keys_after - keys_before == GROUPS * 10
    assert calls == [GROUPS_PER_TRANSACTION * 10] * (GROUPS // GROUPS_PER_TRANSACTION)
    print(f"\n{GROUPS} groups ({len(rows)} members) imported in {elapsed:.2f} s "
          f"({cpu:.2f} s of CPU in this process)")
