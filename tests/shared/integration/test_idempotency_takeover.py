"""A claimed request whose command outlives its lease, racing the retry that takes the claim
over: exactly one of the two commits a command, whichever order they reach Postgres in. Real
Postgres; the middleware's claim step and `recording` as the services use them."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from shared import idempotency
from shared.aggregate import UnitOfWork, run_command
from shared.eventstore import EventStore, migrate
from shared.idempotency import ClaimLostError, IdempotencyMiddleware, recording
from shared.shedding import create_pool
from tests.support.sample import Counter

pytestmark = pytest.mark.integration

LEASE_S = 0.2


@pytest.fixture
async def pool(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "takeovertest")
    await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=6, acquire_timeout=10)
    yield pool
    await pool.close()


def adding(stream: str, gate: asyncio.Event | None = None, locked: asyncio.Event | None = None):
    """A command of the claim in the context: add 1 to `stream`; with `gate`, hold its
    transaction open (after the claim row is updated) until the gate opens."""
    async def decide(uow: UnitOfWork) -> None:
        counter = await uow.load(Counter, stream) or Counter(stream)
        counter.add(1)
        await uow.save(counter)

    async def held(uow: UnitOfWork) -> None:
        await recording(decide)(uow)  # as ctx.command does: in the request's context
        if locked is not None:
            locked.set()
        if gate is not None:
            await gate.wait()

    return held


async def run_as(claim, pool, store, command) -> None:
    token = idempotency._claim.set(claim)
    try:
        await run_command(pool, store, command, actor="t")
    finally:
        idempotency._claim.reset(token)


async def applied(pool, stream: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream)


async def test_the_retry_took_over_first_so_the_late_command_rolls_back(pool):
    store, stream = EventStore("takeovertest"), f"counter-{uuid.uuid4()}"
    middleware = IdempotencyMiddleware(None, lease_s=LEASE_S)
    pk = ("actor-1", "POST /counters", f"k-{uuid.uuid4()}")
    first, retry = uuid.uuid4(), uuid.uuid4()
    assert await middleware._claim(pool, pk, "digest", first) is None
    await asyncio.sleep(LEASE_S + 0.2)  # the first request's command is still running
    assert await middleware._claim(pool, pk, "digest", retry) is None  # taken over
    await run_as((retry, pk), pool, store, adding(stream))
    with pytest.raises(ClaimLostError):  # the first one now reaches its commit
        await run_as((first, pk), pool, store, adding(stream))
    assert await applied(pool, stream) == 1


async def test_a_command_committing_holds_off_the_takeover(pool):
    store, stream = EventStore("takeovertest"), f"counter-{uuid.uuid4()}"
    middleware = IdempotencyMiddleware(None, lease_s=LEASE_S)
    pk = ("actor-1", "POST /counters", f"k-{uuid.uuid4()}")
    first, retry = uuid.uuid4(), uuid.uuid4()
    assert await middleware._claim(pool, pk, "digest", first) is None
    await asyncio.sleep(LEASE_S + 0.2)  # lease over, the first command about to commit
    gate, locked = asyncio.Event(), asyncio.Event()
    command = asyncio.create_task(run_as((first, pk), pool, store, adding(stream, gate, locked)))
    await asyncio.wait_for(locked.wait(), 10)
    # the retry read the claim as expired and uncommitted before the command committed, and
    # now takes it over
    async with pool.acquire() as conn:
        takeover = asyncio.create_task(middleware._take_over(conn, pk, retry, first))
        await asyncio.sleep(0.3)
        assert not takeover.done()  # waits on the claim row the committing command holds
        gate.set()
        await command
        assert await takeover is False  # the command committed: the claim stays its
    assert await middleware._claim(pool, pk, "digest", retry) is not None  # answered, not run
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT owner, committed FROM idempotency_keys WHERE "
                                  "actor = $1 AND route = $2 AND key = $3", *pk)
    assert row["owner"] == first and row["committed"]
    assert await applied(pool, stream) == 1


async def test_an_uncommitted_claim_past_its_lease_is_still_taken_over(pool):
    """The dead-process case keeps working: nothing committed, so a retry runs it."""
    store, stream = EventStore("takeovertest"), f"counter-{uuid.uuid4()}"
    middleware = IdempotencyMiddleware(None, lease_s=LEASE_S)
    pk = ("actor-1", "POST /counters", f"k-{uuid.uuid4()}")
    dead, retry = uuid.uuid4(), uuid.uuid4()
    assert await middleware._claim(pool, pk, "digest", dead) is None
    assert await middleware._claim(pool, pk, "digest", retry) is not None  # lease still on
    await asyncio.sleep(LEASE_S + 0.2)
    assert await middleware._claim(pool, pk, "digest", retry) is None
    await run_as((retry, pk), pool, store, adding(stream))
    assert await applied(pool, stream) == 1


async def test_the_commands_append_marks_the_claim_committed_in_its_own_statement(pool):
    """No statement of its own for the claim: BEGIN, the stream's read, the append (which marks
    the claim committed and records the effect), COMMIT."""
    store, stream = EventStore("takeovertest"), f"counter-{uuid.uuid4()}"
    middleware = IdempotencyMiddleware(None, lease_s=30)

    async def claimed() -> tuple[uuid.UUID, tuple[str, str, str]]:
        pk, owner = ("actor-1", "POST /counters", f"k-{uuid.uuid4()}"), uuid.uuid4()
        assert await middleware._claim(pool, pk, "digest", owner) is None
        return owner, pk

    one = await create_pool(pool._connect_args[0], min_size=1, max_size=1, acquire_timeout=10)
    sent: list[str] = []
    try:
        async with one.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        # warm-up (type introspection, statement cache, the pool's first reset)
        await run_as(await claimed(), one, store, adding(f"counter-{uuid.uuid4()}"))
        owner, pk = await claimed()
        await asyncio.sleep(0.05)  # the logger runs on the loop's next turns
        sent.clear()
        await run_as((owner, pk), one, store, adding(stream))
        await asyncio.sleep(0.05)
    finally:
        await one.close()
    assert len(sent) == 4, sent
    assert "idempotency_keys" in sent[2] and "INSERT INTO events" in sent[2]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT committed FROM idempotency_keys WHERE actor = $1 "
                                   "AND route = $2 AND key = $3", *pk)
        assert await conn.fetchval("SELECT count(*) FROM idempotency_effects WHERE owner = $1",
                                   owner) == 1
    assert await applied(pool, stream) == 1


async def test_a_claimed_command_that_appends_nothing_still_marks_its_claim(pool):
    store = EventStore("takeovertest")
    middleware = IdempotencyMiddleware(None, lease_s=30)
    pk = ("actor-1", "POST /counters", f"k-{uuid.uuid4()}")
    owner = uuid.uuid4()
    assert await middleware._claim(pool, pk, "digest", owner) is None

    async def nothing(uow: UnitOfWork) -> None:
        await recording(lambda uow: asyncio.sleep(0))(uow)

    await run_as((owner, pk), pool, store, nothing)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT committed FROM idempotency_keys WHERE actor = $1 "
                                   "AND route = $2 AND key = $3", *pk)
        assert await conn.fetchval("SELECT count(*) FROM idempotency_effects WHERE owner = $1",
                                   owner) == 1
