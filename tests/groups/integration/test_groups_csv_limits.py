"""CSV uploads within bounds, through the real groups service (real Kafka and Postgres)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from services.groups.domain import group_id_for
from tests.groups.groups_support import ADMIN, csv_file, csv_rows

pytestmark = pytest.mark.integration
CSV = {**ADMIN, "Content-Type": "text/csv"}


async def upload(groups, body):
    return await groups.client.post("/groups/imports", content=body, headers=CSV)


async def registered(groups, *names: str, regency: str = "3201") -> int:
    ids = [f"group-{group_id_for(2023, regency, n)}" for n in names]
    conn = await asyncpg.connect(groups.database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = ANY($1)", ids)
    finally:
        await conn.close()


async def test_a_file_with_cr_line_endings_registers_its_groups(groups):
    body = csv_file(csv_rows("CR Alpha") + csv_rows("CR Beta")).replace(b"\n", b"\r")
    response = await upload(groups, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["registered"], report["errors"]) == (20, 2, [])


async def test_a_nul_cell_is_a_422_with_its_row_and_nothing_is_registered(groups):
    bad = csv_rows("NUL Gamma")
    bad[2][7] = "Siti\x00"  # row 14, after the ten rows of a good group
    response = await upload(groups, csv_file(csv_rows("NUL Delta") + bad))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["status"], error["field"], error["row"]) == (422, "file", 14)
    assert error["errors"] == [{"row": 14, "field": "member_name",
                                "reason": "must not contain NUL characters"}]
    assert await registered(groups, "NUL Gamma", "NUL Delta") == 0


async def test_an_over_long_cell_is_a_422_with_its_row_and_nothing_is_registered(groups):
    bad = csv_rows("Long Epsilon")
    bad[0][5] = "z" * 140_000  # past the csv module's 131,072 that used to end in a 500
    response = await upload(groups, csv_file(csv_rows("Long Zeta") + bad))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["row"] == 12 and "longer than" in error["reason"]
    assert await registered(groups, "Long Epsilon", "Long Zeta") == 0


async def test_a_large_file_is_parsed_off_the_event_loop(groups):
    # 20,000 rows of groups of one member each: every group refused, nothing registered,
    # but reading and checking them all must not stop /healthz from answering
    rows = [row for i in range(2000) for row in csv_rows(f"Big {i}", members=1) * 10]
    body = csv_file(rows)
    slowest = 0.0

    async def probe(stop: asyncio.Event) -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.perf_counter()
            assert (await groups.client.get("/healthz")).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    prober = asyncio.create_task(probe(stop))
    started = time.perf_counter()
    response = await upload(groups, body)
    took = time.perf_counter() - started
    stop.set()
    await prober
    print(f"\n{len(body)} bytes, 20,000 rows: {took:.2f}s; slowest /healthz {slowest:.3f}s")
    assert response.status_code == 200, response.text[:300]
    report = response.json()
    assert report["rows"] == 20_000 and report["registered"] == 0
    assert len(report["errors"]) == 100 and report["errors_total"] > 100
    # parsed on the event loop, /healthz would wait about as long as the whole upload took; a
    # share of it, not a wall-clock bound, so a loaded machine does not fail it (nor hide a block)
    assert slowest < max(1.0, 0.5 * took), (slowest, took)


async def test_a_csv_body_over_its_own_cap_is_a_413(groups):
    response = await upload(groups, b"x" * (32 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["error"]["status"] == 413
