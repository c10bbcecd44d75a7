"""The command path on real Postgres: a single-stream command in steady state is at most four
statements (BEGIN, lock and history, events + outbox + notify, COMMIT; no pool reset), and
snapshots of long histories give the state a full replay gives, never from a stale snapshot."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from shared.aggregate import UnitOfWork, run_command
from shared.envelope import Event
from shared.eventstore import ConcurrencyError, EventStore, migrate
from shared.shedding import create_pool
from tests.support.sample import AmountRecorded, Counter

pytestmark = pytest.mark.integration


class SnappedCounter(Counter):
    """The sample counter, with snapshots every 5 events."""

    snapshot_every = 5
    snapshot_kind = "1"

    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.amounts: list[int] = []

    def apply(self, event: Event) -> None:
        super().apply(event)
        if isinstance(event, AmountRecorded):
            self.amounts.append(event.amount)

    def snapshot_state(self) -> Any:
        return {"total": self.total, "amounts": self.amounts}

    def restore(self, state: Any) -> None:
        self.total, self.amounts = state["total"], list(state["amounts"])


@pytest.fixture
async def pool(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=4, acquire_timeout=5)
    yield pool
    await pool.close()


class Statements:
    """Every statement the pool's connections send, by asyncpg's query logger."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.counting = False

    def __call__(self, record: Any) -> None:
        if self.counting:
            self.queries.append(record.query)


async def add(pool: asyncpg.Pool, store: EventStore, cls: type[Counter], stream: str,
              amount: int) -> int:
    async def decide(uow: UnitOfWork) -> int:
        counter = await uow.load(cls, stream) or cls(stream)
        counter.add(amount)
        await uow.save(counter)
        return counter.version

    return await run_command(pool, store, decide, actor="t")


@pytest.mark.parametrize("cls, warm", [(Counter, (1, 2)), (SnappedCounter, (1, 2, 3, 4))],
                         ids=["plain", "taking-its-snapshot"])
async def test_a_single_stream_command_in_steady_state_is_at_most_four_statements(pool, cls,
                                                                                  warm):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    for amount in warm:  # warm: the connection and its prepared statements exist
        await add(pool, store, cls, stream, amount)
    log = Statements()
    async with pool.acquire() as conn:
        conn.add_query_logger(log)  # (its release resets: this was no command)
    try:
        log.counting = True
        # the counted command's save is the one a snapshot is due at (the 5th event): it is
        # written by the append's own statement
        assert await add(pool, store, cls, stream, len(warm) + 1) == len(warm) + 1
        # the release (and its reset, if any) runs as the command returns: let it finish
        await asyncio.sleep(0.05)
        log.counting = False
    finally:
        async with pool.acquire() as conn:
            conn.remove_query_logger(log)
    assert len(log.queries) <= 4, log.queries
    assert log.queries[0].startswith("BEGIN") and log.queries[-1].startswith("COMMIT")
    assert not any("pg_advisory_unlock_all" in q for q in log.queries), log.queries
    async with pool.acquire() as conn:
        history = await store.read_stream(conn, stream)
        assert [e.amount for _, e in history] == [*warm, len(warm) + 1]
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE message_key = $1",
                                   stream) == len(warm) + 1
        snapshot = await conn.fetchval("SELECT version FROM snapshots WHERE stream_id = $1",
                                       stream)
        assert snapshot == (5 if cls is SnappedCounter else None)


async def test_a_connection_used_outside_a_command_is_still_reset(pool):
    async with pool.acquire() as conn:
        await conn.execute("SET application_name = 'changed'")
        await conn.execute("SELECT pg_advisory_lock(42)")
    async with pool.acquire() as conn:  # max 4, min 1: the same connection comes back
        assert await conn.fetchval("SHOW application_name") != "changed"
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 "
            "AND pid = pg_backend_pid()") == 0


async def test_a_contended_stream_still_queues_and_applies_every_command_once(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    await asyncio.gather(*(add(pool, store, Counter, stream, 1) for _ in range(20)))
    async with pool.acquire() as conn:
        history = await store.read_stream(conn, stream)
    assert [v.stream_version for v, _ in history] == list(range(1, 21))


async def test_a_stale_or_gapped_expected_version_writes_nothing(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    other = f"counter-{uuid.uuid4()}"
    await add(pool, store, Counter, stream, 1)
    for expected in (0, 5):  # behind, and beyond (a gap): both refused
        with pytest.raises(ConcurrencyError):
            async with pool.acquire() as conn, conn.transaction():
                await store.append_many(conn, [(other, 0, [AmountRecorded(amount=9)]),
                                               (stream, expected, [AmountRecorded(amount=9)])],
                                        actor="t", correlation_id=uuid.uuid4())
    async with pool.acquire() as conn:
        assert await store.stream_versions(conn, [stream, other]) == {stream: 1}
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1


async def test_snapshot_and_tail_give_the_state_of_a_full_replay(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    for amount in range(1, 13):
        await add(pool, store, SnappedCounter, stream, amount)
    async with pool.acquire() as conn:
        snapshot = await conn.fetchrow("SELECT version, kind FROM snapshots WHERE stream_id = $1",
                                       stream)
        assert snapshot["version"] == 10  # every 5 events: at 5, then at 10
        async with conn.transaction():
            histories = await store.read_histories(conn, [stream],
                                                   snapshot_kind=SnappedCounter.snapshot_key())
            assert histories is not None
            history = histories[stream]
            assert (history.snapshot_version, len(history.events)) == (10, 2)
            snapped = SnappedCounter.from_loaded(stream, history)
            full = SnappedCounter.from_history(
                stream, (await store.read_streams(conn, [stream]))[stream])
    assert (snapped.version, snapped.total, snapped.amounts) == (
        full.version, full.total, full.amounts) == (12, 78, list(range(1, 13)))


async def test_a_stale_snapshot_is_never_used(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    for amount in range(1, 6):
        await add(pool, store, SnappedCounter, stream, amount)
    kind = SnappedCounter.snapshot_key()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT version FROM snapshots WHERE stream_id = $1",
                                   stream) == 5
        # a snapshot lying about the state, but of another kind (an older shape): ignored
        await conn.execute("UPDATE snapshots SET kind = 'SnappedCounter:0', state = "
                           "'{\"total\": -1, \"amounts\": []}' WHERE stream_id = $1", stream)
        async with conn.transaction():
            histories = await store.read_histories(conn, [stream], snapshot_kind=kind)
        assert histories[stream].snapshot is None and len(histories[stream].events) == 5
        # of this kind, but not taken from this stream's event at its version: ignored
        await conn.execute("UPDATE snapshots SET kind = $2, event_id = $3 WHERE stream_id = $1",
                           stream, kind, uuid.uuid4())
        async with conn.transaction():
            histories = await store.read_histories(conn, [stream], snapshot_kind=kind)
        assert histories[stream].snapshot is None and len(histories[stream].events) == 5
    # a command on it sees the true state, and its write replaces the stale snapshot (the
    # full replay was more than 5 events)
    for amount in range(6, 11):
        assert await add(pool, store, SnappedCounter, stream, amount) == amount

    async def read(uow: UnitOfWork) -> SnappedCounter:
        return await uow.load(SnappedCounter, stream)

    counter = await run_command(pool, store, read, actor="t")
    assert (counter.total, counter.snapshot_version) == (55, 6)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT kind, version FROM snapshots WHERE stream_id = $1",
                                  stream)
    assert (row["kind"], row["version"]) == (kind, 6)


async def test_snapshots_serve_load_many_and_save_many(pool):
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(3)]
    for amount in range(1, 8):
        async def decide(uow: UnitOfWork, amount: int = amount) -> None:
            aggs = {s: SnappedCounter(s) for s in streams} | await uow.load_many(
                SnappedCounter, streams)
            for agg in aggs.values():
                agg.add(amount)
            await uow.save_many(aggs.values())

        await run_command(pool, store, decide, actor="t")

    async def read(uow: UnitOfWork) -> dict[str, SnappedCounter]:
        return await uow.load_many(SnappedCounter, streams)

    loaded = await run_command(pool, store, read, actor="t")
    assert {s: (a.version, a.snapshot_version, a.total) for s, a in loaded.items()} == {
        s: (7, 5, 28) for s in streams}


async def test_loading_one_stream_is_planned_once_not_at_every_command(pool):
    """`UnitOfWork.load` reads one stream: its statement gets the server's generic plan after
    the first five calls, so a command is not planned again every time (about half a
    millisecond of the database's CPU per command when it was). On tables with data (the
    planner's estimates then tell a one-id custom plan from a generic one), as a service has."""
    store = EventStore("kerneltest")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
            "schema_version, occurred_at, correlation_id, actor, payload) "
            "SELECT gen_random_uuid(), 'planned-' || (g / 4), 1 + g % 4, $1, 1, "
            "now(), gen_random_uuid(), 't', '{\"amount\": 1}' "
            "FROM generate_series(0, 39999) g", AmountRecorded.event_type)
        await conn.execute("ANALYZE events; ANALYZE snapshots")
        for i in range(12):
            async with conn.transaction():
                uow = UnitOfWork(conn, store, "t", uuid.uuid4())
                counter = await uow.load(SnappedCounter, f"planned-{i}")
                assert counter is not None and counter.version == 4
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%pg_try_advisory_xact_lock%' AND statement LIKE '%snapshots%' "
            "AND statement NOT LIKE '%pg_prepared_statements%'")  # not this one
    assert plans is not None
    assert plans["generic_plans"] >= 6 and plans["custom_plans"] <= 6, dict(plans)
