"""A rebuild replays into shadow tables while readers and writers carry on, and swaps them in
one short transaction without skipping an event committed late (insert order is not commit
order)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter as Tally

import asyncpg
import pytest

from shared.aggregate import run_command
from shared.eventstore import EventStore, migrate
from shared.projections import RebuildPlan, RebuildStats, rebuild_plan
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes
from tests.support.sample import Counter

pytestmark = pytest.mark.integration

STREAMS, EVENTS_PER_STREAM = 3000, 20
TABLES = ("counter_totals", "amount_log")


async def project(conn: asyncpg.Connection, items) -> None:
    totals: Tally[str] = Tally()
    counts: Tally[str] = Tally()
    for envelope, event in items:
        totals[envelope.stream_id] += event.amount
        counts[envelope.stream_id] += 1
    await conn.execute(
        "INSERT INTO counter_totals AS t (stream_id, total, events) "
        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) "
        "ON CONFLICT (stream_id) DO UPDATE SET total = t.total + excluded.total, "
        "events = t.events + excluded.events", list(totals), list(totals.values()),
        [counts[s] for s in totals])
    await conn.execute(
        "INSERT INTO amount_log (stream_id, version, amount) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::int[])",
        [e.stream_id for e, _ in items], [e.stream_version for e, _ in items],
        [ev.amount for _, ev in items])


@pytest.fixture
async def pool(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    await conn.execute(
        "CREATE TABLE counter_totals (stream_id text PRIMARY KEY, total bigint NOT NULL, "
        "events integer NOT NULL CHECK (events > 0));"
        "CREATE INDEX counter_totals_by_total ON counter_totals (total);"
        "CREATE TABLE amount_log (stream_id text NOT NULL, version integer NOT NULL, "
        "amount integer NOT NULL, PRIMARY KEY (stream_id, version));"
        "CREATE INDEX amount_log_by_amount ON amount_log (amount) WHERE amount > 5")
    await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=20)
    yield pool
    await pool.close()


async def _history(pool: asyncpg.Pool, store: EventStore, streams: list[str]) -> None:
    for start in range(0, len(streams), 500):
        chunk = streams[start:start + 500]
        aggs = []
        for stream in chunk:
            counter = Counter(stream)
            for i in range(EVENTS_PER_STREAM):
                counter.add(1 + i % 9)
            aggs.append(counter)
        async with pool.acquire() as conn, conn.transaction():
            envelopes = await store.append_many(
                conn, [(a.stream_id, 0, a.pending) for a in aggs], actor="t",
                correlation_id=uuid.uuid4())
            await project(conn, [(e, ev) for e, ev in zip(
                envelopes, [ev for a in aggs for ev in a.pending], strict=True)])


async def _expected(conn: asyncpg.Connection) -> list[tuple]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT stream_id, sum((payload->>'amount')::bigint), count(*)::int FROM events "
        "GROUP BY stream_id ORDER BY 1, 2, 3")]


async def _rebuild_elsewhere(database_url: str) -> RebuildStats:
    code = (
        "import asyncio, asyncpg, dataclasses, json, sys\n"
        "from shared.projections import RebuildPlan, rebuild_plan\n"
        "from tests.shared.integration.test_rebuild_swap import TABLES, project\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    stats = await rebuild_plan(conn, RebuildPlan(TABLES, project))\n"
        "    print(json.dumps(dataclasses.asdict(stats)))\n"
        "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, database_url,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return RebuildStats(**json.loads(out.decode().strip().splitlines()[-1]))


async def test_readers_and_writers_carry_on_and_a_late_commit_is_not_skipped(pool, database_url):
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(STREAMS)]
    await _history(pool, store, streams)
    async with pool.acquire() as conn:
        shapes = await table_shapes(conn, TABLES)
        await conn.execute("UPDATE counter_totals SET total = -1")  # damage: the replay repairs

    # a transaction that takes its positions before the rebuild and commits during it
    late_stream = f"counter-{uuid.uuid4()}"
    late = await pool.acquire()
    late_tx = late.transaction()
    await late_tx.start()
    counter = Counter(late_stream)
    counter.add(7)
    envelopes = await store.append(late, late_stream, 0, counter.pending, actor="t",
                                   correlation_id=uuid.uuid4())
    await project(late, list(zip(envelopes, counter.pending, strict=True)))

    stop = asyncio.Event()
    reads: list[float] = []
    writes: list[float] = []

    async def reader() -> None:
        async with pool.acquire() as conn:
            while not stop.is_set():
                started = time.perf_counter()
                await conn.fetchrow("SELECT total, events FROM counter_totals WHERE stream_id = $1",
                                    random.choice(streams))
                await conn.fetchval("SELECT count(*) FROM amount_log WHERE amount > 8")
                reads.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

    async def writer() -> None:
        async def add(uow):
            stream = random.choice(streams)
            agg = await uow.load(Counter, stream)
            agg.add(3)
            await uow.save(agg)

        while not stop.is_set():
            started = time.perf_counter()
            await run_command(pool, store, add, actor="t", projector=project)
            writes.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def commit_late() -> None:
        await asyncio.sleep(0.5)
        await late_tx.commit()
        await pool.release(late)

    loops = [asyncio.create_task(reader()), asyncio.create_task(writer()),
             asyncio.create_task(writer())]
    committer = asyncio.create_task(commit_late())
    await asyncio.sleep(0.2)
    try:
        # in a process of its own, as `tkm rebuild` runs: the figures are the database's, not
        # this event loop's
        started = time.perf_counter()
        stats = await _rebuild_elsewhere(database_url)
        took = time.perf_counter() - started
        await asyncio.sleep(0.2)  # writers go on against the swapped-in tables
    finally:
        stop.set()
        await asyncio.gather(*loops, committer)

    async with pool.acquire() as conn:
        assert await table_rows(conn, ["counter_totals"]) == {
            "counter_totals": await _expected(conn)}
        assert await conn.fetchval("SELECT total FROM counter_totals WHERE stream_id = $1",
                                   late_stream) == 7
        assert await conn.fetchval("SELECT count(*) FROM amount_log") == await conn.fetchval(
            "SELECT count(*) FROM events")
        assert await table_shapes(conn, TABLES) == shapes
        assert await leftovers(conn) == []
    # everything committed during the replay came in through the catch-ups and the swap
    assert stats.replayed >= STREAMS * EVENTS_PER_STREAM + 1 and stats.caught_up > 0
    worst_read, worst_write = max(reads), max(writes)
    print(f"\nrebuild of {stats.replayed:,} events: {took:.2f}s (replay "
          f"{stats.replay_seconds:.2f}s unlocked, swap {stats.swap_seconds * 1000:.0f} ms, "
          f"{stats.swap_attempts} attempt(s), {stats.caught_up} caught up, {stats.in_swap} in the swap); "
          f"readers: {len(reads)} "
          f"reads, median {sorted(reads)[len(reads) // 2] * 1000:.1f} ms, worst "
          f"{worst_read * 1000:.1f} ms; writers: {len(writes)} commands, worst "
          f"{worst_write * 1000:.1f} ms")
    assert len(reads) > 20
    assert worst_read < took / 5, (worst_read, took)
    assert worst_write < took / 2, (worst_write, took)


async def test_a_second_rebuild_at_once_is_refused_and_leaves_the_tables(pool):
    from shared.projections import RebuildError

    store = EventStore("kerneltest")
    await _history(pool, store, [f"counter-{uuid.uuid4()}" for _ in range(3)])
    async with pool.acquire() as first, pool.acquire() as second:
        before = await table_rows(second, TABLES)
        await first.execute("SELECT pg_advisory_lock(hashtext('tkm-rebuild'))")
        with pytest.raises(RebuildError, match="another rebuild"):
            await rebuild_plan(second, RebuildPlan(TABLES, project))
        await first.execute("SELECT pg_advisory_unlock(hashtext('tkm-rebuild'))")
        assert await table_rows(second, TABLES) == before


async def test_the_swap_outwaits_a_holder_that_yields_only_to_a_long_waiter(pool):
    """An autovacuum worker on a live table (a big table just swapped in is analysed) holds
    its lock until a waiter has waited deadlock_timeout: then the server cancels it. The swap's
    short waits alone never get there; its later attempts wait past deadlock_timeout. The
    holder here yields the way the server makes autovacuum yield."""
    store = EventStore("kerneltest")
    await _history(pool, store, [f"counter-{uuid.uuid4()}" for _ in range(20)])
    async with pool.acquire() as holder, pool.acquire() as rebuilding:
        deadlock_ms = await holder.fetchval(
            "SELECT extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000")
        swapper = await rebuilding.fetchval("SELECT pg_backend_pid()")
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE counter_totals IN SHARE UPDATE EXCLUSIVE MODE")

        async def yield_to_a_long_waiter() -> float:
            began = time.monotonic()
            while time.monotonic() - began < 60:
                waited = await pool.fetchval(
                    "SELECT extract(epoch FROM now() - query_start) * 1000 FROM "
                    "pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", swapper)
                if waited is not None and waited >= deadlock_ms:
                    await holder.execute("ROLLBACK")
                    return waited
                await asyncio.sleep(0.02)
            await holder.execute("ROLLBACK")
            raise AssertionError("no waiter waited deadlock_timeout")

        yielded = asyncio.create_task(yield_to_a_long_waiter())
        stats = await rebuild_plan(rebuilding, RebuildPlan(TABLES, project))
        assert await yielded >= deadlock_ms
        assert stats.swap_attempts >= 4  # the short waits gave way first
        assert [tuple(r) for r in await rebuilding.fetch(
            "SELECT stream_id, total, events FROM counter_totals ORDER BY 1, 2, 3")] \
            == await _expected(rebuilding)
