"""The messaging paths: the outbox relay (outbox rows -> topic) beside a bare producer sending
the same records, and a service consumer through its real handlers beside the inbox and the
decoding alone (bench/consumer_throughput.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench import consumer_throughput
from bench.common import BenchEnv, summary
from shared.envelope import encode
from shared.eventstore import OUTBOX_CHANNEL
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.outbox import OutboxRelay
from shared.topics import ensure_topics


def security(env: BenchEnv) -> KafkaSecurity:
    fields = {k.removeprefix("ADMIN_").lower(): v for k, v in env.kafka_env.items()
              if k.startswith(("ADMIN_KAFKA_", "KAFKA_")) or k == "TKM_KAFKA_ALLOW_PLAINTEXT"}
    return kafka_security(kafka_password=None, **fields)


async def relay_once(env: BenchEnv, n: int, sec: KafkaSecurity) -> tuple[float, float]:
    """(relay rows/s, bare producer records/s) for n outbox rows of real envelopes."""
    topic = f"tkm.bench-relay-{uuid.uuid4().hex[:8]}.v1"
    await ensure_topics(env.bootstrap, [topic], partitions=6, replication_factor=1,
                        client=sec.admin_kwargs())
    dsn = await env.fresh_database("relay", "bench")
    records = [(e.stream_id.encode(), encode(e))
               for e in (consumer_throughput._recruited(i) for i in range(n))]
    relay = OutboxRelay(dsn, env.bootstrap, f"bench-{uuid.uuid4().hex[:6]}", security=sec,
                        poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    conn = await asyncpg.connect(dsn)
    try:
        # a first row: the relay holds its lease, its producer knows the topic (not counted)
        await _outbox(conn, topic, records[:1])
        await _sent(conn, 1)
        await _outbox(conn, topic, records[1:])
        began = time.perf_counter()
        await _sent(conn, n)
        relay_rate = (n - 1) / (time.perf_counter() - began)
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await conn.close()
    bare = await consumer_throughput.produce(env.bootstrap, topic, records, sec)
    return relay_rate, bare


async def _outbox(conn: asyncpg.Connection, topic: str,
                  records: list[tuple[bytes, bytes]]) -> None:
    """The rows in one statement, with the notify that wakes the relay (as EventStore.append)."""
    await conn.execute(
        "WITH o AS (INSERT INTO outbox (topic, message_key, value) SELECT $1, k, v "
        "FROM unnest($2::text[], $3::bytea[]) AS u(k, v)) SELECT pg_notify($4, '')",
        topic, [k.decode() for k, _ in records], [v for _, v in records], OUTBOX_CHANNEL)


async def _sent(conn: asyncpg.Connection, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay did not send {n} rows in {timeout:.0f}s")
        await asyncio.sleep(0.01)


async def run(env: BenchEnv, *, relay_rows: int, consumer_events: int, repeats: int,
              paths: Sequence[str] = ("relay", "consumer")) -> list[dict[str, Any]]:
    sec = security(env)
    rows: list[dict[str, Any]] = []
    if "relay" in paths:
        rows.append(await _relay(env, relay_rows, repeats, sec))
    if "consumer" in paths:
        rows.append(await _consumer(env, consumer_events, repeats, sec))
    return rows


async def _relay(env: BenchEnv, relay_rows: int, repeats: int,
                 sec: KafkaSecurity) -> dict[str, Any]:
    relay, bare = [], []
    for _ in range(repeats):
        r, b = await relay_once(env, relay_rows, sec)
        relay.append(r)
        bare.append(b)
    env.log(f"relay: {summary(relay)['median']:,.0f} rows/s, bare producer "
            f"{summary(bare)['median']:,.0f} records/s")
    return {"path": "relay outbox -> topic", "unit": "rows/s", "value": summary(relay),
            "ceiling_name": "bare producer, same records", "ceiling": summary(bare)}


async def _consumer(env: BenchEnv, consumer_events: int, repeats: int,
                    sec: KafkaSecurity) -> dict[str, Any]:
    real, alone = [], []
    for _ in range(repeats):
        for results, is_real in ((real, True), (alone, False)):
            outcome = await consumer_throughput.measure(
                env.bootstrap, env.endpoints.postgres_url, consumer_events, real=is_real,
                sec=sec)
            results.append(outcome["rate"])
    env.log(f"consumer: real handlers {summary(real)['median']:,.0f} events/s, inbox + decode "
            f"{summary(alone)['median']:,.0f} events/s")
    return {"path": "consumer through real handlers", "unit": "events/s", "value": summary(real),
            "ceiling_name": "inbox + decode alone", "ceiling": summary(alone)}
