"""A dead letter can be applied later: a handler fails -> a letter on the service's DLQ topic
(kept for ever); fix the handler -> replay -> applied exactly once, however often replayed."""

import asyncio
import uuid
from types import SimpleNamespace

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

import scripts.dlq
from scripts.cli import app as cli
from shared.dlq import DeadLetterError, consumer_for, find, read_letters, replay, with_status
from shared.envelope import Envelope, encode, utcnow
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import dead_letter_topic, ensure_topics
from tests.support.kafka import kafka_client, eventually, produce
from tests.support.sample import AmountRecorded, on_amount, router

pytestmark = pytest.mark.integration


def _envelope(stream: str, n: int, amount: int) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=AmountRecorded.event_type,
                    schema_version=1, occurred_at=utcnow(), stream_id=stream, stream_version=n,
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload={"amount": amount})


async def _totals(database_url: str, stream: str):
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('sample_totals') IS NOT NULL"):
            return None
        return await conn.fetchrow("SELECT total, events FROM sample_totals WHERE stream_id = $1",
                                   stream)
    finally:
        await conn.close()


async def _retention(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client())
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})])
        return dict((e[0], e[1]) for e in response.resources[0][4])["retention.ms"]
    finally:
        await admin.close()


async def test_a_fixed_handler_applies_a_replayed_letter_exactly_once(infra, database_url,
                                                                     monkeypatch):
    hex8 = uuid.uuid4().hex[:8]
    topic = f"tkm.kerneltest-replay-{hex8}.v1"
    await ensure_topics(infra.kafka_bootstrap, [topic], partitions=1, replication_factor=1)
    stream = f"replay-{hex8}"
    broken = {"yes": True}

    async def handler(uow, envelope, event):
        if broken["yes"] and event.amount == 13:
            raise ValueError("13 is not supported yet")
        await on_amount(uow, envelope, event)

    service = f"kerneltest{hex8}"
    handlers = {AmountRecorded.event_type: handler}
    spec = ServiceSpec(name=service, topic=f"tkm.kerneltest-own-{hex8}.v1", routers=[router],
                       consumes=(topic,), handlers=handlers)
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         consumer_max_retries=0))
    failing = _envelope(stream, 2, 13)
    async with app.router.lifespan_context(app):
        await produce(infra.kafka_bootstrap, topic, [
            (stream.encode(), encode(e)) for e in
            (_envelope(stream, 1, 1), failing, _envelope(stream, 3, 100))])
        row = await eventually(lambda: _at_least(database_url, stream, 2))
        assert (row["total"], row["events"]) == (101, 2)

        async def one_letter():
            letters = await read_letters(infra.kafka_bootstrap, service)
            return letters or None

        [letter] = await eventually(one_letter)
        assert await _retention(infra.kafka_bootstrap, dead_letter_topic(service)) == "-1"
        [letter] = await with_status(database_url, [letter])
        assert (letter.id, letter.event_id, letter.status) == (
            failing.event_id, failing.event_id, "pending")
        assert "13 is not supported yet" in letter.reason
        assert (letter.topic, letter.partition, letter.offset) == (topic, 0, 1)
        assert find([letter], str(failing.event_id)) is letter

        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            consumer = consumer_for(pool, service, handlers, None)
            # still broken: the replay changes nothing and writes no second letter
            with pytest.raises(DeadLetterError, match="13 is not supported yet"):
                await replay(letter, consumer, infra.kafka_bootstrap)
            assert (await with_status(database_url, [letter]))[0].status == "pending"
            assert await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1",
                                       dead_letter_topic(service)) == 1

            listed = await _cli(monkeypatch, spec, database_url, infra, "list")
            assert listed.exit_code == 0, listed.output
            assert listed.stdout.split()[:3] == [str(letter.id), "pending",
                                                 AmountRecorded.event_type], listed.output
            broken["yes"] = False  # the fix is deployed
            assert await replay(letter, consumer, infra.kafka_bootstrap) == "applied"
            assert await replay(letter, consumer, infra.kafka_bootstrap) == "duplicate"
            again = await _cli(monkeypatch, spec, database_url, infra, "replay", "--event-id",
                               str(letter.id))
            assert (again.exit_code, again.stdout.strip()) == (  # see again.output
                0, f"{letter.id}  already applied"), again.output
            assert (await _cli(monkeypatch, spec, database_url, infra, "list", "--pending")
                    ).stdout == ""
        finally:
            await pool.close()
        row = await _totals(database_url, stream)
        assert (row["total"], row["events"]) == (114, 3)
        assert (await with_status(database_url, [letter]))[0].status == "replayed"

        # the original delivered again (a consumer group reset) is a duplicate too
        await produce(infra.kafka_bootstrap, topic, [
            (stream.encode(), encode(failing)), (stream.encode(), encode(_envelope(stream, 4, 7)))])
        row = await eventually(
            lambda: _at_least(database_url, stream, 4))
        assert (row["total"], row["events"]) == (121, 4)

    # its row pruned by housekeeping, a replay refuses rather than count the event twice
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await pool.execute("DELETE FROM inbox WHERE event_id = $1", failing.event_id)
        with pytest.raises(DeadLetterError, match="no dead-lettered inbox row"):
            await replay(letter, consumer_for(pool, service, handlers, None),
                         infra.kafka_bootstrap)
    finally:
        await pool.close()
    assert (await _totals(database_url, stream))["total"] == 121


async def _cli(monkeypatch, spec, database_url: str, infra, *args: str):
    """`tkm dlq ... --service <the test's service>`, run as an operator would (in a thread: it
    runs its own event loop), with the test service's spec and settings."""
    import shared.settings

    settings = load_settings("recruitment", database_url=database_url,
                             kafka_bootstrap_servers=infra.kafka_bootstrap)
    monkeypatch.setattr(shared.settings, "load_settings", lambda service: settings)
    monkeypatch.setattr(scripts.dlq, "importlib", SimpleNamespace(
        import_module=lambda name: SimpleNamespace(build_spec=lambda: spec)))
    return await asyncio.to_thread(CliRunner().invoke, cli,
                                   ["dlq", args[0], "--service", spec.name, *args[1:]])


async def _at_least(database_url: str, stream: str, n: int):
    row = await _totals(database_url, stream)
    return row if row and row["events"] >= n else None


async def test_an_existing_dead_letter_topic_is_switched_to_unlimited_retention(infra):
    topic = dead_letter_topic(f"kerneltest{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_client())
    await admin.start()
    try:
        from aiokafka.admin import NewTopic
        await admin.create_topics([NewTopic(topic, 1, 1,
                                            topic_configs={"retention.ms": "604800000"})])
    finally:
        await admin.close()
    assert await _retention(infra.kafka_bootstrap, topic) == "604800000"
    assert await ensure_topics(infra.kafka_bootstrap, [topic], partitions=1,
                               replication_factor=1) == []
    assert await _retention(infra.kafka_bootstrap, topic) == "-1"


@pytest.mark.parametrize("args, env, expected", [
    (["dlq", "list", "--service", "nosuch"], {}, "unknown service 'nosuch'"),
    (["dlq", "show", "--service", "groups", "--event-id", "x"], {"GROUPS_DATABASE_URL": ""},
     "GROUPS_DATABASE_URL is not set"),
    (["dlq", "replay", "--service", "mentoring"], {"MENTORING_DATABASE_URL": "postgresql://x@"
                                                  "127.0.0.1:1/x",
                                                  "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
     "KafkaConnectionError"),
])
def test_a_cli_error_is_one_line_not_a_traceback(args, env, expected):
    result = CliRunner().invoke(cli, args, env={"TKM_ENV": "test", **env})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
