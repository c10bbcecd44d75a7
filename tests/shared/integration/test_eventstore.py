import asyncio
import uuid

import asyncpg
import pytest

from shared.aggregate import run_command
from shared.envelope import Event, register
from shared.eventstore import ConcurrencyError, EventStore, migrate
from tests.support.sample import AmountRecorded, Counter

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=25)
    yield pool
    await pool.close()


async def test_migrations_apply_once(database_url, tmp_path):
    (tmp_path / "001_things.sql").write_text("CREATE TABLE things (id int PRIMARY KEY)")
    conn = await asyncpg.connect(database_url)
    try:
        first = await migrate(conn, "svc", tmp_path)
        second = await migrate(conn, "svc", tmp_path)
        assert first == ["kernel:event store, outbox, inbox",
                         "kernel:outbox rows the broker refuses",
                         "kernel:indexes for pruning outbox and inbox",
                         "kernel:outbox relay lease",
                         "kernel:aggregate snapshots",
                         "idempotency:Idempotency-Key claims and answers",
                         "idempotency:a committed claim is never taken over",
                         "rules:programme rules per year (shared.rules)", "svc:001_things"]
        assert second == []
    finally:
        await conn.close()


async def test_append_at_a_stale_version_raises_and_writes_nothing(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, stream, 0, [AmountRecorded(amount=1)], actor="t",
                           correlation_id=uuid.uuid4())
    for expected in (0, 2):
        with pytest.raises(ConcurrencyError):
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, stream, expected, [AmountRecorded(amount=5)], actor="t",
                                   correlation_id=uuid.uuid4())
    async with pool.acquire() as conn:
        history = await store.read_stream(conn, stream)
        assert [e.amount for _, e in history] == [1]
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE message_key = $1", stream) == 1


async def test_two_writers_racing_on_one_version_exactly_one_wins(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    gate = asyncio.Barrier(2)

    async def writer(amount: int):
        async with pool.acquire() as conn, conn.transaction():
            await gate.wait()
            await store.append(conn, stream, 0, [AmountRecorded(amount=amount)], actor="t",
                               correlation_id=uuid.uuid4())

    results = await asyncio.gather(writer(1), writer(2), return_exceptions=True)
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    async with pool.acquire() as conn:
        assert len(await store.read_stream(conn, stream)) == 1


async def test_concurrent_commands_on_one_stream_all_apply_once(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"

    async def add(uow):
        counter = await uow.load(Counter, stream) or Counter(stream)
        counter.add(3)
        await uow.save(counter)

    await asyncio.gather(*(run_command(pool, store, add, actor="t") for _ in range(20)))
    async with pool.acquire() as conn:
        history = await store.read_stream(conn, stream)
    assert [env.stream_version for env, _ in history] == list(range(1, 21))
    assert Counter.from_history(stream, [e for _, e in history]).total == 60


async def test_read_all_does_not_skip_a_transaction_that_commits_late(pool):
    store = EventStore("kerneltest")
    early, late = f"counter-{uuid.uuid4()}", f"counter-{uuid.uuid4()}"
    slow = await pool.acquire()
    tx = slow.transaction()
    await tx.start()
    # the slow transaction takes its position first but commits last
    await store.append(slow, late, 0, [AmountRecorded(amount=1)], actor="t",
                       correlation_id=uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, early, 0, [AmountRecorded(amount=2)], actor="t",
                           correlation_id=uuid.uuid4())
    seen: list[str] = []
    cursor = (0, 0)
    async with pool.acquire() as conn:
        batch, cursor = await store.read_all(conn, cursor)
        seen += [r.envelope.stream_id for r in batch]
        await tx.commit()
        await pool.release(slow)
        batch, cursor = await store.read_all(conn, cursor)
        seen += [r.envelope.stream_id for r in batch]
    assert late in seen and early in seen


async def test_a_rebuilt_projection_equals_the_live_one(pool):
    from shared.projections import rebuild

    async def project(conn, items):
        for envelope, event in items:
            await conn.execute(
                "INSERT INTO counter_totals VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE "
                "SET total = counter_totals.total + $2", envelope.stream_id, event.amount)

    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE counter_totals (stream_id text PRIMARY KEY, total int)")
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(5)]

    async def add(uow, stream, amount):
        counter = await uow.load(Counter, stream) or Counter(stream)
        counter.add(amount)
        await uow.save(counter)

    await asyncio.gather(*(run_command(pool, store, lambda u, s=s, a=a: add(u, s, a), actor="t",
                                       projector=project)
                           for s in streams for a in range(1, 8)))
    live = await pool.fetch("SELECT * FROM counter_totals ORDER BY stream_id")
    await pool.execute("UPDATE counter_totals SET total = -1")  # damage the read model
    async with pool.acquire() as conn:
        assert await rebuild(conn, project, ["counter_totals"]) == 35
    rebuilt = await pool.fetch("SELECT * FROM counter_totals ORDER BY stream_id")
    assert [tuple(r) for r in rebuilt] == [tuple(r) for r in live]
    assert all(r["total"] == 28 for r in rebuilt)


@register
class NoteTaken(Event):
    """An internal (unpublished) event: stored, never in the outbox."""

    event_type = "KernelTestNoteTaken"
    text: str


async def test_append_many_writes_many_streams_in_one_call(pool):
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(300)]
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, streams[0], 0, [AmountRecorded(amount=1)], actor="t",
                           correlation_id=uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        envelopes = await store.append_many(
            conn, [(s, 1 if i == 0 else 0, [AmountRecorded(amount=i), AmountRecorded(amount=2)])
                   for i, s in enumerate(streams)] + [(f"counter-{uuid.uuid4()}", 0, [])],
            actor="t", correlation_id=uuid.uuid4())
    assert [(v.stream_id, v.stream_version) for v in envelopes][:4] == [
        (streams[0], 2), (streams[0], 3), (streams[1], 1), (streams[1], 2)]
    async with pool.acquire() as conn:
        assert await store.stream_versions(conn, streams) == {
            s: 3 if i == 0 else 2 for i, s in enumerate(streams)}
        history = await store.read_streams(conn, streams)
        assert [e.amount for e in history[streams[7]]] == [7, 2]
        # outbox rows in append order: the relay publishes each stream's events in order
        keys = await conn.fetch("SELECT message_key, event_id FROM outbox "
                                "WHERE message_key = ANY($1) ORDER BY id", streams)
        assert [r["event_id"] for r in keys if r["message_key"] != streams[0]] == [
            v.event_id for v in envelopes[2:]]


async def test_append_many_with_one_stale_item_writes_nothing_at_all(pool):
    store = EventStore("kerneltest")
    fresh, moved, other = (f"counter-{uuid.uuid4()}" for _ in range(3))
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, moved, 0, [AmountRecorded(amount=1)], actor="t",
                           correlation_id=uuid.uuid4())
    with pytest.raises(ConcurrencyError) as raised:
        async with pool.acquire() as conn, conn.transaction():
            await store.append_many(
                conn, [(fresh, 0, [AmountRecorded(amount=5)]), (moved, 0, [NoteTaken(text="x")]),
                       (other, 0, [AmountRecorded(amount=6)])],
                actor="t", correlation_id=uuid.uuid4())
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (moved, 0, 1)
    async with pool.acquire() as conn:
        assert await store.stream_versions(conn, [fresh, moved, other]) == {moved: 1}
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE message_key = ANY($1)",
                                   [fresh, moved, other]) == 1


async def test_append_many_refuses_a_stream_named_twice(pool):
    store, stream = EventStore("kerneltest"), f"counter-{uuid.uuid4()}"
    with pytest.raises(ValueError, match="twice"):
        async with pool.acquire() as conn, conn.transaction():
            await store.append_many(conn, [(stream, 0, [AmountRecorded(amount=1)]),
                                           (stream, 1, [AmountRecorded(amount=2)])],
                                    actor="t", correlation_id=uuid.uuid4())


async def test_outbox_rows_only_for_published_events(pool):
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(3)]
    async with pool.acquire() as conn, conn.transaction():
        envelopes = await store.append_many(
            conn, [(streams[0], 0, [NoteTaken(text="a"), AmountRecorded(amount=1)]),
                   (streams[1], 0, [NoteTaken(text="b")]),
                   (streams[2], 0, [AmountRecorded(amount=2), NoteTaken(text="c")])],
            actor="t", correlation_id=uuid.uuid4())
    published = {v.event_id for v in envelopes if v.event_type == AmountRecorded.event_type}
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, event_id FROM outbox WHERE message_key = ANY($1)",
                                streams)
        assert {r["event_id"] for r in rows} == published and len(rows) == 2
        assert {r["topic"] for r in rows} == {AmountRecorded.topic}
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = ANY($1)",
                                   streams) == 5


async def test_load_many_and_save_many_keep_every_guarantee(pool):
    store = EventStore("kerneltest")
    known, empty = f"counter-{uuid.uuid4()}", f"counter-{uuid.uuid4()}"
    projected: list[list] = []

    async def project(conn, items):
        projected.append([(env.stream_id, env.stream_version) for env, _ in items])

    async def first(uow):
        counter = Counter(known)
        counter.add(4)
        await uow.save(counter)

    async def second(uow):
        loaded = await uow.load_many(Counter, [empty, known, known])
        assert set(loaded) == {known} and loaded[known].total == 4
        fresh = Counter(empty)
        for counter in (loaded[known], fresh):
            counter.add(1)
        untouched = Counter(f"counter-{uuid.uuid4()}")
        await uow.save_many([loaded[known], fresh, untouched, fresh])
        return loaded[known].version, fresh.version

    await run_command(pool, store, first, actor="t")
    assert await run_command(pool, store, second, actor="t", projector=project) == (2, 1)
    assert projected == [[(known, 2), (empty, 1)]]


async def test_concurrent_save_many_on_overlapping_streams_loses_and_duplicates_nothing(pool):
    store = EventStore("kerneltest")
    streams = [f"counter-{uuid.uuid4()}" for _ in range(12)]
    # each writer touches a window of streams overlapping its neighbours', in its own order
    windows = [[streams[(start + k) % len(streams)] for k in range(5)][::(-1) ** start]
               for start in range(len(streams)) for _ in range(2)]

    async def add(uow, window, lock):
        counters = await uow.load_many(Counter, window, lock=lock)
        for stream in window:
            counters.setdefault(stream, Counter(stream)).add(1)
        await uow.save_many(counters.values())

    # locked writers queue on the stream locks in one order: no retry, no deadlock
    await asyncio.gather(*(run_command(pool, store, lambda u, w=w: add(u, w, True), actor="t",
                                       attempts=1) for w in windows))
    # writers that skip the locks are caught by the versions and retried
    await asyncio.gather(*(run_command(pool, store, lambda u, w=w, i=i: add(u, w, i % 2 == 0),
                                       actor="t", attempts=100)
                           for i, w in enumerate(windows)))
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT stream_id, array_agg(stream_version ORDER BY "
                                "stream_version) AS versions FROM events "
                                "WHERE stream_id = ANY($1) GROUP BY stream_id", streams)
        history = await store.read_streams(conn, streams)
    assert len(rows) == len(streams)
    assert all(r["versions"] == list(range(1, 21)) for r in rows)
    assert {Counter.from_history(s, events).total for s, events in history.items()} == {20}
