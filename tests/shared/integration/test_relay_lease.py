"""Relay leadership is a lease: a frozen leader (SIGSTOP) is replaced by a standby within the
lease, and once thawed it publishes nothing that breaks per-stream order or double-applies."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import pytest

from shared.consumer import EventConsumer
from shared.eventstore import EventStore, migrate
from shared.topics import ensure_topics
from tests.support.databases import create_database
from tests.support.kafka import eventually, kafka_client, read_topic
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded, on_amount

pytestmark = pytest.mark.integration

LEASE_S, RENEW_S = 4.0, 1.0
STREAMS = 6


def _relay(database_url: str, bootstrap: str, holder: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shared.outbox", "--dsn", database_url,
                             "--bootstrap", bootstrap, "--service", "kerneltest",
                             "--batch-size", "20", "--lease-seconds", str(LEASE_S),
                             "--renew-seconds", str(RENEW_S), "--holder", holder],
                            env={**os.environ, "PYTHONPATH": "."}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def test_a_frozen_leader_is_replaced_within_the_lease_and_order_holds(infra, database_url):
    await ensure_topics(infra.kafka_bootstrap, [SAMPLE_TOPIC], partitions=6, replication_factor=1)
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    store = EventStore("kerneltest")
    streams = [f"leasetest-{uuid.uuid4()}" for _ in range(STREAMS)]
    versions = dict.fromkeys(streams, 0)
    ids: set[str] = set()
    writing = asyncio.Event()
    writing.set()

    async def write() -> None:  # commands keep coming, whoever leads
        wconn = await asyncpg.connect(database_url)
        try:
            while writing.is_set():
                for stream in streams:
                    async with wconn.transaction():
                        envs = await store.append(
                            wconn, stream, versions[stream],
                            [AmountRecorded(amount=versions[stream] + 1)], actor="t",
                            correlation_id=uuid.uuid4())
                    versions[stream] += 1
                    ids.add(str(envs[0].event_id))
                await asyncio.sleep(0.05)
        finally:
            await wconn.close()

    relays = {"a": _relay(database_url, infra.kafka_bootstrap, "relay-a")}
    writer = asyncio.create_task(write())
    try:
        await eventually(lambda: conn.fetchval(
            "SELECT holder FROM relay_lease WHERE expires_at > now()"), timeout=30)
        relays["b"] = _relay(database_url, infra.kafka_bootstrap, "relay-b")
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) > 20 FROM outbox WHERE sent_at IS NOT NULL"), timeout=30)
        leader = await conn.fetchval("SELECT holder FROM relay_lease")
        frozen = relays[leader.removeprefix("relay-")]
        standby = "relay-b" if leader == "relay-a" else "relay-a"

        frozen.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        last_before = await conn.fetchval("SELECT max(id) FROM outbox")
        # a row written after the freeze gets published by the standby, within the lease
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) > 0 FROM outbox WHERE id > $1 AND sent_at IS NOT NULL",
            last_before), timeout=LEASE_S + 15, interval=0.05)
        takeover = time.monotonic() - stopped_at
        print(f"\nrelay takeover after SIGSTOP of the leader: {takeover:.2f}s "
              f"(lease {LEASE_S}s, renewal every {RENEW_S}s)")
        assert await conn.fetchval("SELECT holder FROM relay_lease") == standby
        assert takeover < LEASE_S + 3

        frozen.send_signal(signal.SIGCONT)  # the old leader thaws and must stand by
        await asyncio.sleep(LEASE_S)
        assert await conn.fetchval("SELECT holder FROM relay_lease") == standby
        writing.clear()
        await writer
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"), timeout=60)
    finally:
        writing.clear()
        await asyncio.gather(writer, return_exceptions=True)
        for proc in relays.values():
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        await conn.close()

    wanted = set(streams)
    records = [r for r in await read_topic(
        infra.kafka_bootstrap, SAMPLE_TOPIC,
        until=lambda recs: ids <= {json.loads(r.value)["event_id"] for r in recs
                                   if r.key and r.key.decode() in wanted})
        if r.key and r.key.decode() in wanted]
    first_seen: dict[str, list[int]] = {}
    seen: set[str] = set()
    for r in records:
        env = json.loads(r.value)
        if env["event_id"] not in seen:
            seen.add(env["event_id"])
            first_seen.setdefault(env["stream_id"], []).append(env["stream_version"])
    assert seen == ids
    for stream, got in first_seen.items():
        assert got == list(range(1, versions[stream] + 1)), stream
    print(f"{len(ids)} events, {len(records) - len(ids)} duplicates on the topic")

    # a consumer applies every event exactly once, duplicates included in what it reads
    consumer_db = await create_database(infra)
    cconn = await asyncpg.connect(consumer_db)
    await migrate(cconn, "kerneltest")
    await cconn.close()
    pool = await asyncpg.create_pool(consumer_db, min_size=1, max_size=2)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: on_amount}, "tkm.kerneltest.dlq")
        for i in range(0, len(records), 50):
            await consumer.consume(records[i:i + 50])
        rows = {r["stream_id"]: (r["events"], r["total"]) for r in await pool.fetch(
            "SELECT stream_id, events, total FROM sample_totals")}
        assert rows == {s: (v, v * (v + 1) // 2) for s, v in versions.items()}
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE outcome = 'applied'") \
            == len(ids)
    finally:
        await pool.close()


async def test_a_relay_that_lost_the_lease_cannot_mark_rows_sent(infra, database_url):
    """Fencing: a relay whose lease was taken over (another holder, a newer token) may still
    push what it had in hand, but its mark changes nothing and it stops at once."""
    from aiokafka import AIOKafkaProducer

    from shared.outbox import OutboxRelay

    await ensure_topics(infra.kafka_bootstrap, [SAMPLE_TOPIC], partitions=6, replication_factor=1)
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    stream = f"fencetest-{uuid.uuid4()}"
    async with conn.transaction():
        await EventStore("kerneltest").append(conn, stream, 0, [AmountRecorded(amount=1)],
                                              actor="t", correlation_id=uuid.uuid4())
    # another relay took the lease meanwhile: holder b, token 8
    await conn.execute("INSERT INTO relay_lease VALUES ('kerneltest', 'b', 8, "
                       "now() + interval '1 minute')")
    relay = OutboxRelay(database_url, infra.kafka_bootstrap, "kerneltest")
    relay.holder, relay._token, relay._valid_until = "a", 7, time.monotonic() + 60
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all",
                                enable_idempotence=True, **kafka_client())
    await producer.start()
    try:
        assert await relay._relay_batch(conn, producer) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 1
        assert not relay.holds_lease()
        # with the lease (the current token) the same row is marked
        await conn.execute("UPDATE relay_lease SET holder = 'a'")
        relay._token, relay._valid_until = 8, time.monotonic() + 60
        assert await relay._relay_batch(conn, producer) == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
    finally:
        await producer.stop()
        await conn.close()


async def test_a_stopping_leader_hands_the_lease_over_at_once(infra, database_url):
    from shared.outbox import OutboxRelay

    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    first, second = (OutboxRelay(database_url, infra.kafka_bootstrap, "kerneltest")
                     for _ in range(2))
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(first.run(stop_first))
    try:
        await eventually(lambda: _is_active(first), timeout=30)
        other = asyncio.create_task(second.run(stop_second))
        await asyncio.sleep(1.5)
        assert first.active and not second.active
        stop_first.set()
        await task
        stopped = time.monotonic()
        await eventually(lambda: _is_active(second), timeout=10, interval=0.05)
        # handed back at shutdown: no need to wait for the 10 s lease to run out
        assert time.monotonic() - stopped < 3
        token = await conn.fetchval("SELECT fencing_token FROM relay_lease")
        assert token == 2
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(task, *([other] if "other" in locals() else []),
                             return_exceptions=True)
        await conn.close()


async def _is_active(relay) -> bool:
    return relay.active
