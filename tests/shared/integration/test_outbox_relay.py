import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import asyncpg
import pytest

from shared.eventstore import EventStore, migrate
from shared.topics import ensure_topics
from tests.support.kafka import eventually, read_topic
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def sample_topic(infra):
    await ensure_topics(infra.kafka_bootstrap, [SAMPLE_TOPIC], partitions=6, replication_factor=1)


async def _store_events(database_url: str, streams: int, per_stream: int) -> tuple[set, list]:
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    store, ids, names = EventStore("kerneltest"), set(), []
    for _ in range(streams):
        stream = f"relaytest-{uuid.uuid4()}"
        names.append(stream)
        for v in range(per_stream):
            async with conn.transaction():
                envs = await store.append(conn, stream, v, [AmountRecorded(amount=v)],
                                          actor="t", correlation_id=uuid.uuid4())
                ids.add(envs[0].event_id)
    await conn.close()
    return {str(i) for i in ids}, names


def _start_relay(database_url: str, bootstrap: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shared.outbox", "--dsn", database_url,
                             "--bootstrap", bootstrap, "--service", "kerneltest",
                             "--batch-size", "40"], env={**os.environ, "PYTHONPATH": "."})


async def test_relay_killed_mid_batch_loses_nothing_and_keeps_stream_order(infra, database_url):
    ids, streams = await _store_events(database_url, streams=30, per_stream=25)
    conn = await asyncpg.connect(database_url)
    relay = _start_relay(database_url, infra.kafka_bootstrap)
    try:
        sent = await eventually(lambda: conn.fetchval(
            "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"), timeout=60, interval=0.02)
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        assert sent > 0 and unsent > 0, "the relay must be killed part-way through"
        relay = _start_relay(database_url, infra.kafka_bootstrap)
        await eventually(lambda: _none_unsent(conn), timeout=60)
    finally:
        relay.kill()
        relay.wait()
        await conn.close()

    wanted = set(streams)
    # other tests put other records (even undecodable ones) on this topic: keys tell ours apart
    records = await read_topic(
        infra.kafka_bootstrap, SAMPLE_TOPIC,
        until=lambda recs: ids <= {json.loads(r.value)["event_id"] for r in recs
                                   if r.key and r.key.decode() in wanted})
    first_seen: dict[str, list[int]] = {}
    seen_ids: set[str] = set()
    for r in records:
        if not r.key or r.key.decode() not in wanted:
            continue
        env = json.loads(r.value)
        if env["event_id"] in seen_ids:
            continue  # a resend after the kill: consumers drop it by event id
        seen_ids.add(env["event_id"])
        assert r.key.decode() == env["stream_id"]
        first_seen.setdefault(env["stream_id"], []).append(env["stream_version"])
    assert seen_ids == ids
    for versions in first_seen.values():
        assert versions == list(range(1, 26))


async def _none_unsent(conn) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


async def test_only_one_relay_is_active_per_database(infra, database_url):
    from shared.outbox import OutboxRelay

    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    await conn.close()
    stop = asyncio.Event()
    relays = [OutboxRelay(database_url, infra.kafka_bootstrap, "kerneltest") for _ in range(2)]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        await eventually(lambda: _any_active(relays), timeout=30)
        await asyncio.sleep(1)
        assert sum(r.active for r in relays) == 1
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _any_active(relays) -> bool:
    return any(r.active for r in relays)


async def test_a_row_the_broker_refuses_is_set_aside_and_the_rest_still_flow(infra, database_url):
    from shared.outbox import OutboxRelay

    ids, streams = await _store_events(database_url, streams=1, per_stream=3)
    conn = await asyncpg.connect(database_url)
    try:
        # a 2 MB row between stored events: more than the broker's default message size
        await conn.execute("INSERT INTO outbox (id, topic, message_key, value) "
                           "VALUES (0, $1, 'huge', $2)", SAMPLE_TOPIC, b"x" * 2_000_000)
        stop = asyncio.Event()
        task = asyncio.create_task(OutboxRelay(database_url, infra.kafka_bootstrap,
                                               "kerneltest").run(stop))
        try:
            await eventually(lambda: _none_unsent_but_failed(conn), timeout=60)
        finally:
            stop.set()
            await task
        failed = await conn.fetchrow("SELECT sent_at, failed_reason FROM outbox WHERE id = 0")
        assert failed["sent_at"] is None and "MessageSizeTooLarge" in failed["failed_reason"]
    finally:
        await conn.close()
    keys = {s.encode() for s in streams}
    records = await read_topic(infra.kafka_bootstrap, SAMPLE_TOPIC, until=lambda recs: ids <= {
        json.loads(r.value)["event_id"] for r in recs if r.key in keys})
    assert not any(r.key == b"huge" for r in records)


async def _none_unsent_but_failed(conn) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL "
                               "AND failed_reason IS NULL") == 0


async def test_a_wake_up_arriving_during_a_batch_is_not_lost(infra, database_url):
    """A commit's NOTIFY delivered while the relay's batch runs (its row committed after the
    batch read the outbox) wakes the relay for the next batch; it must not wait out the poll
    interval (here a minute, as is the lease's renewal, which wakes it too). The relay cleared
    its wake-up after the batch until 2026-12-03, so such a row waited up to a poll interval."""
    from shared.outbox import OutboxRelay

    await _store_events(database_url, streams=1, per_stream=1)
    conn = await asyncpg.connect(database_url)
    late: list[uuid.UUID] = []

    class Relay(OutboxRelay):
        async def _relay_batch(self, rconn, producer):
            sent = await super()._relay_batch(rconn, producer)
            if sent and not late:  # the first batch: a commit lands right after its read
                self._wake.clear()
                async with conn.transaction():
                    late.extend(e.event_id for e in await EventStore("kerneltest").append(
                        conn, f"relaytest-{uuid.uuid4()}", 0, [AmountRecorded(amount=7)],
                        actor="t", correlation_id=uuid.uuid4()))
                await eventually(lambda: _set(self._wake), timeout=10, interval=0.005)
            return sent

    stop = asyncio.Event()
    relay = Relay(database_url, infra.kafka_bootstrap, "kerneltest", poll_interval=60)
    relay.lease_s, relay.renew_s = 120.0, 60.0  # a renewal wakes the relay too: not in time
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: _sent(conn, late), timeout=10, interval=0.05)
    finally:
        stop.set()
        relay._wake.set()  # the relay sees `stop` between batches, not in its minute's wait
        await task
        await conn.close()


async def _set(event: asyncio.Event) -> bool:
    return event.is_set()


async def _sent(conn, ids: list) -> bool:
    return bool(ids) and await conn.fetchval(
        "SELECT bool_and(sent_at IS NOT NULL) FROM outbox WHERE event_id = ANY($1::uuid[])", ids)
