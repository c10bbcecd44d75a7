import json
import uuid

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from shared.consumer import EventConsumer
from shared.envelope import Envelope, Event, encode, register, utcnow
from shared.eventstore import EventStore, migrate
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import dead_letter_topic, ensure_topics
from tests.support.kafka import eventually, produce, read_topic
from tests.support.sample import SAMPLE_TOPIC, TOTALS_SQL, AmountRecorded, on_amount, router

pytestmark = pytest.mark.integration


@register
class NoteTaken(Event):
    """A valid event the sample service has no handler for."""

    event_type = "KernelTestConsumerNoteTaken"
    text: str


def _envelope(stream: str, version: int, amount: int, event_type: str | None = None) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=event_type or AmountRecorded.event_type,
                    schema_version=1, occurred_at=utcnow(), stream_id=stream,
                    stream_version=version, correlation_id=uuid.uuid4(), producer="test",
                    actor="test", payload={"amount": amount})


@pytest.fixture
async def running_consumer(infra, database_url):
    """A service (its own consumer group) consuming the sample topic, inside its lifespan."""
    await ensure_topics(infra.kafka_bootstrap, [SAMPLE_TOPIC], partitions=6, replication_factor=1)
    # a consumer group (the service name) of its own per test, reading the topic from the start
    spec = ServiceSpec(name=f"kerneltest{uuid.uuid4().hex[:8]}", topic=f"tkm.kerneltest-own-{uuid.uuid4().hex[:8]}.v1",
                       routers=[router], consumes=(SAMPLE_TOPIC,),
                       handlers={AmountRecorded.event_type: on_amount})
    settings = load_settings("recruitment", database_url=database_url,
                             kafka_bootstrap_servers=infra.kafka_bootstrap, consumer_max_retries=2)
    app = create_app(spec, settings)
    async with app.router.lifespan_context(app):
        yield app, spec.name


async def _total(database_url: str, stream: str):
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('sample_totals') IS NOT NULL"):
            return None
        return await conn.fetchrow("SELECT total, events FROM sample_totals WHERE stream_id = $1",
                                   stream)
    finally:
        await conn.close()


async def test_every_event_delivered_twice_changes_the_projection_once(infra, database_url,
                                                                        running_consumer):
    stream = f"dup-{uuid.uuid4()}"
    envelopes = [_envelope(stream, v, v * 100) for v in range(1, 11)]
    sentinel = _envelope(stream, 11, 7)
    messages = [(stream.encode(), encode(e)) for e in envelopes]
    await produce(infra.kafka_bootstrap, SAMPLE_TOPIC, messages + messages
                  + [(stream.encode(), encode(sentinel))])
    row = await eventually(lambda: _has_events(database_url, stream, 11))
    assert row["total"] == sum(v * 100 for v in range(1, 11)) + 7
    assert row["events"] == 11


async def _has_events(database_url: str, stream: str, n: int):
    row = await _total(database_url, stream)
    return row if row and row["events"] >= n else None


async def test_poison_messages_go_to_the_dead_letter_topic_and_consumption_goes_on(
        infra, database_url, running_consumer):
    _, service = running_consumer
    stream = f"poison-{uuid.uuid4()}"
    key = stream.encode()
    unknown = _envelope(stream, 2, 1, event_type="NoSuchEvent")
    failing = _envelope(stream, 3, -5)  # the handler refuses negative amounts
    bad_payload = _envelope(stream, 4, 1).model_dump(mode="json")
    bad_payload["payload"] = {"amount": "ten"}
    good = _envelope(stream, 5, 42)
    await produce(infra.kafka_bootstrap, SAMPLE_TOPIC, [
        (key, b"\x00 not json at all"),
        (key, encode(unknown)),
        (key, encode(failing)),
        (key, json.dumps(bad_payload).encode()),
        (key, encode(good)),
    ])
    row = await eventually(lambda: _has_events(database_url, stream, 1))
    assert (row["total"], row["events"]) == (42, 1)

    letters = await read_topic(infra.kafka_bootstrap, dead_letter_topic(service),
                               until=lambda recs: len(_mine(recs, stream)) >= 3)
    mine = _mine(letters, stream)
    reasons = sorted(letter["reason"] for letter in mine)
    assert any("malformed envelope" in r for r in reasons)
    # a type the service has no handler for is none of its business: ignored, not a letter
    assert not any("NoSuchEvent" in r for r in reasons) and len(mine) == 3
    assert any("negative amount" in r for r in reasons)
    assert any("payload" in r or "amount" in r for r in reasons if "ten" not in r)
    raw = {letter["original_value_base64"] for letter in mine}
    import base64
    assert base64.b64encode(b"\x00 not json at all").decode() in raw


def _mine(records, stream):
    out = []
    for r in records:
        letter = json.loads(r.value)
        if letter["source"]["key"] == stream:
            out.append(letter)
    return out


def _record(value: bytes, offset: int, key: str) -> ConsumerRecord:
    return ConsumerRecord(topic=SAMPLE_TOPIC, partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=key.encode(), value=value, checksum=None,
                          serialized_key_size=len(key), serialized_value_size=len(value),
                          headers=())


async def _prepared(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "kerneltest")
        await conn.execute(TOTALS_SQL)
    finally:
        await conn.close()


async def test_a_mixed_batch_applies_every_good_event_exactly_once(database_url):
    await _prepared(database_url)
    stream = f"mixed-{uuid.uuid4()}"
    good = [_envelope(stream, v, amount) for v, amount in ((1, 100), (2, 20), (5, 3))]
    flaky = _envelope(stream, 6, 13)  # fails once, then succeeds
    failing = _envelope(stream, 3, -5)
    unknown = _envelope(stream, 4, 1, event_type="NoSuchEvent")
    unhandled = Envelope(**{**_envelope(stream, 7, 0).model_dump(), "payload": {"text": "x"},
                            "event_type": NoteTaken.event_type})
    values = [encode(good[0]), encode(good[1]), encode(good[0]), encode(unknown),
              encode(failing), encode(flaky), b"\x00 not json", encode(unhandled),
              encode(good[2]), encode(good[1])]
    calls: dict[uuid.UUID, int] = {}

    async def counting(uow, envelope, event):
        calls[envelope.event_id] = calls.get(envelope.event_id, 0) + 1
        if envelope.event_id == flaky.event_id and calls[envelope.event_id] == 1:
            raise RuntimeError("a passing hiccup")
        await on_amount(uow, envelope, event)

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: counting}, "tkm.kerneltest.dlq",
                                 max_retries=2)
        batch = [_record(v, offset, stream) for offset, v in enumerate(values)]
        outcomes = await consumer.process(batch)
        # an unhandled type is ignored, known or not
        assert outcomes == {"applied": 4, "duplicate": 2, "dead-lettered": 2, "ignored": 2}
        assert calls[failing.event_id] == 3  # max_retries + 1 tries, then the dead-letter queue
        row = await pool.fetchrow("SELECT total, events FROM sample_totals WHERE stream_id = $1",
                                  stream)
        assert (row["total"], row["events"]) == (136, 4)
        inbox = {r["event_id"]: r["outcome"] for r in await pool.fetch(
            "SELECT event_id, outcome FROM inbox")}
        assert [inbox.get(e.event_id) for e in (*good, flaky, failing, unhandled, unknown)] == [
            "applied"] * 4 + ["dead-lettered", "ignored", "ignored"]
        # undecodable records are known by their place on the topic, not by an event id
        assert len(inbox) == 8
        letters = await pool.fetch("SELECT value FROM outbox WHERE topic = 'tkm.kerneltest.dlq'")
        reasons = sorted(json.loads(r["value"])["reason"] for r in letters)
        assert len(reasons) == 2 and "a negative amount cannot be totalled" in reasons

        # the whole batch again: nothing more is applied or dead-lettered
        assert await consumer.process(batch) == {"duplicate": 10}
        assert await pool.fetchval("SELECT events FROM sample_totals") == 4
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 2
    finally:
        await pool.close()


async def test_without_retries_the_handler_failing_a_batch_is_dead_lettered_at_once(
        database_url):
    await _prepared(database_url)
    stream = f"noretry-{uuid.uuid4()}"
    good, failing = _envelope(stream, 1, 5), _envelope(stream, 2, -1)
    calls: list[uuid.UUID] = []

    async def counting(uow, envelope, event):
        calls.append(envelope.event_id)
        await on_amount(uow, envelope, event)

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: counting}, "tkm.kerneltest.dlq",
                                 max_retries=0)
        outcomes = await consumer.process([_record(encode(failing), 0, stream),
                                           _record(encode(good), 1, stream)])
        assert outcomes == {"applied": 1, "dead-lettered": 1}
        assert calls.count(failing.event_id) == 1
        assert await pool.fetchval("SELECT total FROM sample_totals") == 5
    finally:
        await pool.close()
