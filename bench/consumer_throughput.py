"""Events per second through a real service consumer: the mentoring service, its real handlers
(TksRecruited -> mentors), real Kafka and Postgres, a topic and a database of its own; beside
the same consumer with a handler that does nothing (the inbox and the decoding alone).

`make bench` runs it as one of its paths (bench/run.py). Alone:

    eval "$(.venv/bin/python -m scripts.infra env)"   # or KAFKA_BOOTSTRAP_SERVERS=... etc.
    .venv/bin/python -m bench.consumer_throughput [N]

Every Kafka client runs as the admin (`ADMIN_KAFKA_*`, shared.kafka_security): the bench makes a
topic and a consumer group of its own, which no service principal may.

N events are produced first; the clock runs from the first committed batch to the last, so
start-up and group join are not measured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
import uuid
from datetime import date

import asyncpg
from aiokafka import AIOKafkaProducer

from services.mentoring.app import build_spec
from shared.contracts.recruitment import TksRecruited
from shared.envelope import Envelope, encode, utcnow
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.service import create_app
from shared.settings import load_settings
from shared.topics import ensure_topics


def _recruited(n: int) -> Envelope:
    tks = f"bench-{uuid.uuid4().hex[:12]}-{n}"
    event = TksRecruited(tks_id=tks, round_id="bench", year=2031, stage=1, province_code="11",
                         regency_code="1101", contract_start=date(2031, 1, 1),
                         contract_end=date(2031, 12, 31))
    return Envelope(event_id=uuid.uuid4(), event_type=event.event_type, schema_version=1,
                    occurred_at=utcnow(), stream_id=f"tks-{tks}", stream_version=1,
                    correlation_id=uuid.uuid4(), producer="bench", actor="bench",
                    payload=event.model_dump(mode="json"))


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]],
                  sec: KafkaSecurity) -> float:
    """Send (key, value) pairs as fast as the producer takes them; returns records per second
    (acks=all, idempotent, as the outbox relay's producer)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=256 * 1024,
                                **sec.producer_kwargs())
    await producer.start()
    try:
        # the first record waits for the topic's metadata and leaders: not counted
        await producer.send_and_wait(topic, key=values[0][0], value=values[0][1])
        values = values[1:]
        began = time.perf_counter()
        for key, value in values:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
        return len(values) / (time.perf_counter() - began)
    finally:
        await producer.stop()


async def _noop(*_: object) -> None:
    return None


def _noop_handler():
    """A handler doing nothing, called once per run of events where the kernel allows it."""
    try:
        from shared.consumer import batched
    except ImportError:  # a kernel without batch handlers: once per event
        return _noop

    async def nothing(*_: object) -> None:
        return None

    return batched(nothing)


async def measure(bootstrap: str, base: str, n: int, *, real: bool = True,
                  sec: KafkaSecurity | None = None) -> dict[str, float]:
    """Consume n TksRecruited events with mentoring's consumer: its real handlers, or (real=False)
    a handler that does nothing, so only the inbox and the decoding remain. `base`: the
    Postgres server's URL without a database (a database of its own is made and dropped)."""
    sec = sec or kafka_security(service="admin")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    topic = f"tkm.bench-{name}.v1"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await ensure_topics(bootstrap, [topic], partitions=6, replication_factor=1,
                            client=sec.admin_kwargs())
        records = [(e.stream_id.encode(), encode(e)) for e in (_recruited(i) for i in range(n))]
        await produce(bootstrap, topic, records, sec)
        spec = build_spec()
        handlers = spec.handlers if real else {TksRecruited.event_type: _noop_handler()}
        spec = dataclasses.replace(spec, consumes=(topic,), consumer_group=f"bench-{name}",
                                   handlers=handlers, background=())
        app = create_app(spec, load_settings("mentoring", database_url=f"{base}/{name}",
                                             kafka_bootstrap_servers=bootstrap,
                                             log_level="WARNING"), security=sec)
        opened = time.perf_counter()
        async with app.router.lifespan_context(app):
            while getattr(app.state, "ctx", None) is None:
                await asyncio.sleep(0.05)
            pool = app.state.ctx.pool
            first: tuple[float, int] | None = None
            deadline = time.monotonic() + 600
            while True:
                done = await pool.fetchval("SELECT count(*) FROM inbox")
                now = time.perf_counter()
                if done and first is None:
                    first = (now, done)
                if done >= n:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the consumer applied {done} of {n} events in 600 s")
                await asyncio.sleep(0.02)
            assert first is not None
            applied = await pool.fetchval("SELECT count(*) FROM mentors") if real else 0
        elapsed = now - first[0]
        if first[1] <= n // 2:
            rate = (n - first[1]) / elapsed
        else:  # too few events for more than a batch or two: start-up included then
            elapsed = now - opened
            rate = n / elapsed
        return {"events": n, "applied": applied, "seconds": elapsed, "rate": rate}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(n: int) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    # the server's URL without a database, as scripts/infra.py and the tests use it
    base = os.environ.get("TKM_POSTGRES_URL", "postgresql://postgres@127.0.0.1:15432")
    for real in (True, False):
        result = await measure(bootstrap, base, n, real=real)
        print(f"{'real handlers' if real else 'inbox + decode'}: {n} events, "
              f"{result['applied']} applied, {result['seconds']:.2f}s after the first batch: "
              f"{result['rate']:,.0f} events/s")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faststream").setLevel(logging.WARNING)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
