"""One record cannot hold a partition for ever: a batch that keeps failing is split down to the
record at fault, which is dead-lettered; an unreachable database is waited out, never blamed."""

import json
import uuid

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from shared.consumer import EventConsumer
from shared.envelope import Envelope, encode, utcnow
from shared.eventstore import EventStore, migrate
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import dead_letter_topic, ensure_topics
from tests.support.kafka import eventually, produce, read_topic
from tests.support.sample import TOTALS_SQL, AmountRecorded, on_amount, router

pytestmark = pytest.mark.integration
DLQ = "tkm.kerneltest.dlq.v1"


def _envelope(stream: str, n: int, amount: int) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=AmountRecorded.event_type,
                    schema_version=1, occurred_at=utcnow(), stream_id=stream, stream_version=n,
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload={"amount": amount})


def _record(envelope: Envelope, offset: int) -> ConsumerRecord:
    value = encode(envelope)
    return ConsumerRecord(topic="tkm.kerneltest.v1", partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=b"k", value=value, checksum=None,
                          serialized_key_size=1, serialized_value_size=len(value), headers=())


def _out_of_locks() -> asyncpg.InsufficientResourcesError:
    return asyncpg.OutOfMemoryError("out of shared memory")


async def _pool(database_url: str) -> asyncpg.Pool:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "kerneltest")
        await conn.execute(TOTALS_SQL)
    finally:
        await conn.close()
    return await asyncpg.create_pool(database_url, min_size=1, max_size=3)


async def test_a_record_failing_every_batch_it_is_in_is_split_out_and_dead_lettered(
        database_url):
    stream = f"poison-{uuid.uuid4()}"
    envelopes = [_envelope(stream, n, 10 ** (n % 6)) for n in range(1, 17)]
    poison = envelopes[10]
    calls: dict[uuid.UUID, int] = {}

    async def handler(uow, envelope, event):
        calls[envelope.event_id] = calls.get(envelope.event_id, 0) + 1
        if envelope.event_id == poison.event_id:
            raise _out_of_locks()  # in the old kernel: "transient", retried for ever
        await on_amount(uow, envelope, event)

    pool = await _pool(database_url)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: handler}, DLQ, max_retries=1,
                                 split_after=2, retry_pause_s=0.01)
        batch = [_record(e, offset) for offset, e in enumerate(envelopes)]
        result = await consumer.consume(batch)
        assert result.outcomes == {"applied": 15, "dead-lettered": 1} and not result.held
        row = await pool.fetchrow("SELECT total, events FROM sample_totals WHERE stream_id = $1",
                                  stream)
        assert (row["total"], row["events"]) == (
            sum(e.payload["amount"] for e in envelopes if e is not poison), 15)
        assert await pool.fetchval("SELECT outcome FROM inbox WHERE event_id = $1",
                                   poison.event_id) == "dead-lettered"
        [letter] = [json.loads(r["value"]) for r in await pool.fetch(
            "SELECT value FROM outbox WHERE topic = $1", DLQ)]
        assert letter["dead_letter_id"] == str(poison.event_id)
        assert letter["error_type"] == "OutOfMemoryError"
        assert "out of shared memory" in letter["reason"]
        # halved 16 -> 8 -> 4 -> 2 -> 1, two tries at each size, then the letter: bounded
        assert calls[poison.event_id] == 2 * 5
        # the consumer carries on, and the same batch again changes nothing
        assert (await consumer.consume(batch)).outcomes == {"duplicate": 16}
        later = _envelope(stream, 17, 1_000_000)
        assert (await consumer.consume([_record(later, 16)])).outcomes == {"applied": 1}
    finally:
        await pool.close()


async def test_an_unreachable_database_is_waited_out_never_dead_lettered(database_url):
    stream = f"outage-{uuid.uuid4()}"
    envelopes = [_envelope(stream, n, n) for n in range(1, 9)]
    flaky = envelopes[3]
    calls: dict[uuid.UUID, int] = {}

    async def handler(uow, envelope, event):
        calls[envelope.event_id] = calls.get(envelope.event_id, 0) + 1
        if envelope.event_id == flaky.event_id and calls[envelope.event_id] <= 6:
            raise ConnectionResetError("the database went away")
        await on_amount(uow, envelope, event)

    pool = await _pool(database_url)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: handler}, DLQ, max_retries=0,
                                 split_after=2, retry_pause_s=0.01)
        result = await consumer.consume([_record(e, o) for o, e in enumerate(envelopes)])
        # six failures, more than split_after: waiting is not failing, the batch stays whole
        assert result.outcomes == {"applied": 8}
        assert calls[flaky.event_id] == 7
        assert all(calls[e.event_id] == 7 for e in envelopes[:3])  # the whole batch each time
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
        assert await pool.fetchval("SELECT events FROM sample_totals") == 8
    finally:
        await pool.close()


async def test_on_the_broker_the_record_at_fault_is_dead_lettered_and_the_partition_goes_on(
        infra, database_url):
    hex8 = uuid.uuid4().hex[:8]
    topic = f"tkm.kerneltest-poison-{hex8}.v1"
    await ensure_topics(infra.kafka_bootstrap, [topic], partitions=1, replication_factor=1)
    stream = f"poison-{hex8}"
    envelopes = [_envelope(stream, n, n) for n in range(1, 13)]
    poison = envelopes[6]

    async def handler(uow, envelope, event):
        if envelope.event_id == poison.event_id:
            raise _out_of_locks()
        await on_amount(uow, envelope, event)

    spec = ServiceSpec(name=f"kerneltest{hex8}", topic=f"tkm.kerneltest-own-{hex8}.v1",
                       routers=[router], consumes=(topic,),
                       handlers={AmountRecorded.event_type: handler})
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         consumer_max_retries=0))

    async def totals(n: int):
        conn = await asyncpg.connect(database_url)
        try:
            if not await conn.fetchval("SELECT to_regclass('sample_totals') IS NOT NULL"):
                return None
            row = await conn.fetchrow("SELECT total, events FROM sample_totals")
            return row if row and row["events"] >= n else None
        finally:
            await conn.close()

    async with app.router.lifespan_context(app):
        await produce(infra.kafka_bootstrap, topic,
                      [(stream.encode(), encode(e)) for e in envelopes])
        row = await eventually(lambda: totals(11), timeout=120)
        assert (row["total"], row["events"]) == (sum(range(1, 13)) - 7, 11)
        letters = await read_topic(infra.kafka_bootstrap, dead_letter_topic(spec.name),
                                   until=lambda recs: len(recs) >= 1)
        [letter] = [json.loads(r.value) for r in letters]
        assert letter["dead_letter_id"] == str(poison.event_id)
        assert "out of shared memory" in letter["reason"]
        # the partition moved on: a later event is applied
        await produce(infra.kafka_bootstrap, topic,
                      [(stream.encode(), encode(_envelope(stream, 13, 100)))])
        row = await eventually(lambda: totals(12), timeout=60)
        assert row["total"] == sum(range(1, 13)) - 7 + 100
