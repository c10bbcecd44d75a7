import json
import uuid

import asyncpg
import pytest

from shared.envelope import Envelope, encode, utcnow
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import dead_letter_topic, ensure_topics
from tests.support.kafka import eventually, produce, read_topic
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded, on_amount, router

pytestmark = pytest.mark.integration


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
                               until=lambda recs: len(_mine(recs, stream)) >= 4)
    mine = _mine(letters, stream)
    reasons = sorted(letter["reason"] for letter in mine)
    assert any("malformed envelope" in r for r in reasons)
    assert any("unknown event type 'NoSuchEvent'" in r for r in reasons)
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
