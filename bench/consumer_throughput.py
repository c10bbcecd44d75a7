"""Events per second through a real service consumer: the mentoring service, its real handlers
(TksRecruited -> mentors), real Kafka and Postgres, a topic and a database of its own.

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


async def _produce(bootstrap: str, topic: str, n: int, sec: KafkaSecurity) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=20, **sec.producer_kwargs())
    await producer.start()
    try:
        for i in range(n):
            envelope = _recruited(i)
            await producer.send(topic, key=envelope.stream_id.encode(), value=encode(envelope))
        await producer.flush()
    finally:
        await producer.stop()


async def main(n: int) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    sec = kafka_security(service="admin")
    # the server's URL without a database, as scripts/infra.py and the tests use it
    base = os.environ.get("TKM_POSTGRES_URL", "postgresql://postgres@127.0.0.1:15432")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    topic = f"tkm.bench-{name}.v1"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await ensure_topics(bootstrap, [topic], partitions=6, replication_factor=1,
                            client=sec.admin_kwargs())
        await _produce(bootstrap, topic, n, sec)
        spec = dataclasses.replace(build_spec(), consumes=(topic,),
                                   consumer_group=f"bench-{name}")
        app = create_app(spec, load_settings("mentoring", database_url=f"{base}/{name}",
                                             kafka_bootstrap_servers=bootstrap,
                                             log_level="WARNING"), security=sec)
        async with app.router.lifespan_context(app):
            pool = app.state.ctx.pool
            first: tuple[float, int] | None = None
            while True:
                done = await pool.fetchval("SELECT count(*) FROM inbox")
                now = time.perf_counter()
                if done and first is None:
                    first = (now, done)
                if done >= n:
                    break
                await asyncio.sleep(0.02)
            assert first is not None
            applied = await pool.fetchval("SELECT count(*) FROM mentors")
        elapsed = now - first[0]
        rate = (n - first[1]) / elapsed if elapsed > 0 else float("inf")
        print(f"{n} events, {applied} applied, {elapsed:.2f}s after the first batch: "
              f"{rate:,.0f} events/s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faststream").setLevel(logging.WARNING)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
