import asyncio
import uuid

import asyncpg
import pytest

from shared.aggregate import run_command
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
        assert first == ["kernel:event store, outbox, inbox", "svc:001_things"]
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
    assert await rebuild(pool, project, ["counter_totals"]) == 35
    rebuilt = await pool.fetch("SELECT * FROM counter_totals ORDER BY stream_id")
    assert [tuple(r) for r in rebuilt] == [tuple(r) for r in live]
    assert all(r["total"] == 28 for r in rebuilt)
