"""Rebuild throughput and peak memory: the groups service's read models (`REBUILD` of
services/groups/projections.py) rebuilt by shared.projections from N events, made set-based in
the database beforehand (no service, no API: a server-side loop with a transaction per group,
so the history has the shape of the live one: a group's registration, roster, approval,
funding and product evidence). The rebuild runs in a child process of its own, whose peak
resident memory (VmHWM) is read at the end. The ceiling: asyncpg `executemany` inserting the
same number of rows into a table of the same width."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import BenchEnv, peak_rss_mb, summary

EVENTS_PER_GROUP = 5
ROOT = Path(__file__).resolve().parent.parent


def _templates() -> list[tuple[str, int, str]]:
    """(event type, schema version, payload JSON) of one group's history, group id "G"."""
    from services.groups.domain import MemberRecord, ProductEvidenceRecorded, RosterRecorded
    from shared.contracts.groups import GroupApproved, GroupFunded, GroupRegistered

    events = [
        GroupRegistered(group_id="G", year=2031, stage="pemula", province_code="32",
                        regency_code="3201", business_type="catering", member_count=10),
        RosterRecorded(group_id="G", name="Kelompok bench", registered_on=date(2031, 2, 1),
                       members=(MemberRecord(nik="0" * 16, name="Anggota",
                                             birth_date="1990-01-01"),)),
        GroupApproved(group_id="G"),
        GroupFunded(group_id="G", tranche=1, amount=20_000_000, disbursed_on=date(2031, 3, 1),
                    budget_year=2031, year=2031, province_code="32", regency_code="3201",
                    lpj_due_on=date(2031, 6, 1)),
        ProductEvidenceRecorded(group_id="G", product="nasi kotak", evidence_count=3,
                                recorded_on=date(2031, 4, 1)),
    ]
    return [(e.event_type, e.schema_version, json.dumps(e.model_dump(mode="json")))
            for e in events]


GENERATE = """
DO $$
DECLARE g integer;
BEGIN
  FOR g IN 1..{groups} LOOP
    INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                        occurred_at, correlation_id, actor, payload)
    SELECT gen_random_uuid(), 'group-bench-' || g, t.n, t.event_type, t.schema_version,
           now(), gen_random_uuid(), 'system:bench',
           CASE WHEN t.event_type = 'groups.RosterRecorded' THEN
             jsonb_set(jsonb_set(t.payload, '{{group_id}}', to_jsonb('bench-' || g)),
                       '{{members}}', (SELECT jsonb_agg(jsonb_build_object(
                          'nik', lpad((g::bigint * 10 + m)::text, 16, '0'),
                          'name', 'Anggota ' || m, 'phone', NULL, 'birth_date', '1990-01-01'))
                        FROM generate_series(1, 10) AS m))
           ELSE jsonb_set(t.payload, '{{group_id}}', to_jsonb('bench-' || g)) END
    FROM bench_templates t ORDER BY t.n;
    COMMIT;
  END LOOP;
END $$
"""


async def generate(dsn: str, events: int) -> int:
    """At least `events` events (whole groups) into the database's event store; returns how many."""
    groups = math.ceil(events / EVENTS_PER_GROUP)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("CREATE TEMP TABLE bench_templates (n integer, event_type text, "
                           "schema_version integer, payload jsonb)")
        await conn.executemany("INSERT INTO bench_templates VALUES ($1, $2, $3, $4)",
                               [(i, t, v, p) for i, (t, v, p) in enumerate(_templates(), 1)])
        await conn.execute(GENERATE.format(groups=int(groups)))
        await conn.execute("ANALYZE events")
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def ceiling(dsn: str, rows: int) -> float:
    """Rows per second of asyncpg executemany into a table of the width of a read model."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id text PRIMARY KEY, "
                           "province_code text, regency_code text, year integer, "
                           "amount bigint, note text)")
        await conn.execute("TRUNCATE bench_rows")
        data = [(f"row-{i}", "32", "3201", 2031, 20_000_000, "bench") for i in range(rows)]
        began = time.perf_counter()
        async with conn.transaction():
            await conn.executemany("INSERT INTO bench_rows VALUES ($1, $2, $3, $4, $5, $6)",
                                   data)
        return rows / (time.perf_counter() - began)
    finally:
        await conn.close()


async def _child(dsn: str) -> None:
    from services.groups.projections import REBUILD
    from shared.projections import rebuild_plan

    conn = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        # the service's own plan, as `tkm rebuild groups` runs it (pages across transactions)
        replayed = (await rebuild_plan(conn, REBUILD)).own_events
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    print(json.dumps({"events": replayed, "seconds": seconds, "peak_mb": peak_rss_mb()}))


def rebuild_in_child(dsn: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.rebuild_path", dsn], capture_output=True,
                         text=True, timeout=3600, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the rebuild failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def run(env: BenchEnv, *, sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    from services.groups.app import build_spec

    rows = []
    for size in sizes:
        dsn = await env.fresh_database("rebuild", "groups", build_spec().migrations)
        began = time.perf_counter()
        events = await generate(dsn, size)
        env.log(f"rebuild: {events:,} events generated in {time.perf_counter() - began:.1f}s")
        rates, peaks, ceilings = [], [], []
        for _ in range(repeats):
            result = await asyncio.to_thread(rebuild_in_child, dsn)
            if result["events"] != events:
                raise RuntimeError(f"the rebuild replayed {result['events']} of {events} events")
            rates.append(events / result["seconds"])
            peaks.append(result["peak_mb"])
            ceilings.append(await ceiling(dsn, min(events, 200_000)))
        env.log(f"rebuild of {events:,} events: {summary(rates)['median']:,.0f} events/s, peak "
                f"{summary(peaks)['median']:.0f} MB; executemany {summary(ceilings)['median']:,.0f}"
                " rows/s")
        rows.append({"path": f"rebuild groups, {events:,} events", "unit": "events/s",
                     "value": summary(rates), "ceiling_name": "executemany rows/s",
                     "ceiling": summary(ceilings),
                     "note": f"peak memory {summary(peaks)['median']:.0f} MB"})
        rows.append({"path": f"rebuild peak memory, {events:,} events", "unit": "MB (VmHWM)",
                     "value": summary(peaks), "lower_is_better": True})
        await env.drop_databases()  # a million events take room: free it before the next size
    return rows


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1]))
