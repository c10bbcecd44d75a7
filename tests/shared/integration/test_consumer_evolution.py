"""Consumers outlive producers' changes: on the real broker and Postgres, an old consumer meets
a producer one version ahead (added field, newer schema_version, new event type) and loses
nothing, dead-letters nothing, applies everything once."""

import json
import uuid

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

import shared.service
from shared.envelope import Envelope, Event, current_version, register, upcaster, utcnow
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import ensure_topics
from tests.support.kafka import kafka_client, eventually, produce
from tests.support.sample import AmountRecorded, router

pytestmark = pytest.mark.integration

APPLIED_SQL = """CREATE TABLE IF NOT EXISTS rolling_applied (
    seq bigserial PRIMARY KEY, event_id uuid NOT NULL, amount integer NOT NULL,
    unit text NOT NULL)"""


def _versions(name: str) -> tuple[type[Event], type[Event]]:
    """Version 1 (registered now) and version 2 (registered at the upgrade) of a fresh type:
    v2 adds a required `unit`; v1 payloads are upcast with unit "rupiah"."""

    @register
    class V1(Event):
        event_type = name
        amount: int

    class V2(Event):
        event_type = name
        schema_version = 2
        amount: int
        unit: str

    return V1, V2


def _upgrade(event_type: str, v2: type[Event]) -> None:
    upcaster(event_type, 1)(lambda payload: {**payload, "unit": "rupiah"})
    register(v2)


def _envelope(event_type: str, stream: str, n: int, payload: dict, version: int = 1) -> dict:
    return Envelope(event_id=uuid.uuid4(), event_type=event_type, schema_version=version,
                    occurred_at=utcnow(), stream_id=stream, stream_version=n,
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload=payload).model_dump(mode="json")


async def _on_rolling(uow, envelope, event) -> None:
    await uow.conn.execute(APPLIED_SQL)
    await uow.conn.execute(
        "INSERT INTO rolling_applied (event_id, amount, unit) VALUES ($1, $2, $3)",
        envelope.event_id, event.amount, getattr(event, "unit", "rupiah"))


class Rig:
    """A service consuming a topic of its own (one partition), run and re-run over the same
    database and consumer group, as a deploy would."""

    def __init__(self, infra, database_url: str, event_type: str):
        hex8 = uuid.uuid4().hex[:8]
        self.infra, self.database_url, self.event_type = infra, database_url, event_type
        self.topic = f"tkm.kerneltest-rolling-{hex8}.v1"
        self.spec = ServiceSpec(name=f"kerneltest{hex8}", topic=f"tkm.kerneltest-own-{hex8}.v1",
                                routers=[router], consumes=(self.topic,),
                                handlers={event_type: _on_rolling})

    def app(self):
        return create_app(self.spec, load_settings(
            "recruitment", database_url=self.database_url,
            kafka_bootstrap_servers=self.infra.kafka_bootstrap, consumer_max_retries=0))

    async def prepare(self) -> None:
        # one partition, created before the service would create it with its default count
        await ensure_topics(self.infra.kafka_bootstrap, [self.topic], partitions=1,
                            replication_factor=1)

    async def produce(self, envelopes: list[dict]) -> None:
        await produce(self.infra.kafka_bootstrap, self.topic,
                      [(b"stream-1", json.dumps(e).encode()) for e in envelopes])

    async def applied(self) -> list[tuple[str, int, str]]:
        conn = await asyncpg.connect(self.database_url)
        try:
            if not await conn.fetchval("SELECT to_regclass('rolling_applied') IS NOT NULL"):
                return []
            return [(str(r["event_id"]), r["amount"], r["unit"]) for r in await conn.fetch(
                "SELECT event_id, amount, unit FROM rolling_applied ORDER BY seq")]
        finally:
            await conn.close()

    async def scalar(self, sql: str, *args):
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def committed(self) -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.infra.kafka_bootstrap,
                                    group_id=self.spec.name, enable_auto_commit=False,
                                    **kafka_client())
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(self.topic, 0))
        finally:
            await consumer.stop()


def _paused_gauge(service: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value("tkm_consumer_paused_partitions",
                                     {"service": service, "topic": topic})


async def _readyz(app) -> dict:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with client:
        return (await client.get("/readyz")).json()


def _ids(envelopes: list[dict]) -> list[str]:
    return [e["event_id"] for e in envelopes]


async def _pauses_before_the_newer_event(rig: Rig, app, first: list[dict], newer: dict,
                                         rest: list[dict]) -> None:
    await rig.produce([*first, newer, *rest])
    await eventually(lambda: _has(rig, len(first)))

    async def paused():
        body = await _readyz(app)
        return body if body["consumer"]["paused_partitions"] else None

    body = await eventually(paused, timeout=30)
    assert body["ready"] is True and body["status"] == "degraded"
    [held] = body["consumer"]["paused_partitions"]
    assert (held["topic"], held["partition"], held["offset"]) == (rig.topic, 0, len(first))
    assert (held["event_type"], held["schema_version"], held["known_version"]) == (
        rig.event_type, 2, 1)
    assert _paused_gauge(rig.spec.name, rig.topic) == 1
    # the commit stops just before the newer event
    assert await eventually(lambda: _committed_is(rig, len(first)), timeout=30)
    # nothing behind it is applied, it is not dead-lettered, and it has no inbox row
    assert _ids_applied(await rig.applied()) == _ids(first)
    assert await rig.scalar("SELECT count(*) FROM outbox WHERE topic LIKE '%.dlq.v1'") == 0
    assert await rig.scalar("SELECT count(*) FROM inbox WHERE event_id = $1",
                            uuid.UUID(newer["event_id"])) == 0


async def _committed_is(rig: Rig, offset: int) -> bool:
    return await rig.committed() == offset


async def _has(rig: Rig, n: int):
    rows = await rig.applied()
    return rows if len(rows) >= n else None


def _ids_applied(rows) -> list[str]:
    return [r[0] for r in rows]


async def test_an_old_consumer_pauses_before_a_newer_version_and_the_upgraded_one_applies_all_once(
        infra, database_url):
    event_type = f"KernelTestRolling{uuid.uuid4().hex[:8]}"
    _, v2 = _versions(event_type)
    rig = Rig(infra, database_url, event_type)
    await rig.prepare()
    first = [_envelope(event_type, "s", n, {"amount": n}) for n in (1, 2, 3)]
    newer = _envelope(event_type, "s", 4, {"amount": 4, "unit": "kg"}, version=2)
    rest = [_envelope(event_type, "s", n, {"amount": n}) for n in (5, 6)]

    old = rig.app()
    async with old.router.lifespan_context(old):
        await _pauses_before_the_newer_event(rig, old, first, newer, rest)

    # the deploy: the new process knows version 2 and starts where the old one committed
    _upgrade(event_type, v2)
    assert current_version(event_type) == 2
    new = rig.app()
    async with new.router.lifespan_context(new):
        rows = await eventually(lambda: _has(rig, 6))
        assert _ids_applied(rows) == _ids([*first, newer, *rest])  # in order, each once
        assert [r[2] for r in rows] == ["rupiah"] * 3 + ["kg"] + ["rupiah"] * 2
        assert (await _readyz(new))["status"] == "ok"
        assert await eventually(lambda: _committed_is(rig, 6), timeout=30)
    assert len(await rig.applied()) == 6
    assert await rig.scalar("SELECT count(*) FROM outbox WHERE topic LIKE '%.dlq.v1'") == 0


async def test_a_paused_partition_resumes_by_itself_once_the_version_is_known(
        infra, database_url, monkeypatch):
    monkeypatch.setattr(shared.service, "HOLD_RECHECK_S", 0.2)
    event_type = f"KernelTestRolling{uuid.uuid4().hex[:8]}"
    _, v2 = _versions(event_type)
    rig = Rig(infra, database_url, event_type)
    await rig.prepare()
    first = [_envelope(event_type, "s", 1, {"amount": 1})]
    newer = _envelope(event_type, "s", 2, {"amount": 2, "unit": "kg"}, version=2)
    rest = [_envelope(event_type, "s", 3, {"amount": 3})]

    app = rig.app()
    async with app.router.lifespan_context(app):
        await _pauses_before_the_newer_event(rig, app, first, newer, rest)
        _upgrade(event_type, v2)  # as a process that learnt the version would
        rows = await eventually(lambda: _has(rig, 3))
        assert _ids_applied(rows) == _ids([*first, newer, *rest])
        body = await _readyz(app)
        assert body["status"] == "ok" and body["consumer"]["paused_partitions"] == []
        assert _paused_gauge(rig.spec.name, rig.topic) == 0


async def test_an_added_field_is_applied_and_an_unknown_type_is_ignored(infra, database_url):
    event_type = f"KernelTestRolling{uuid.uuid4().hex[:8]}"
    _versions(event_type)
    rig = Rig(infra, database_url, event_type)
    await rig.prepare()
    added = _envelope(event_type, "s", 1, {"amount": 7, "note_code": "X1"})
    added["trace"] = {"hop": 1}  # an envelope field of a later kernel
    unknown = _envelope("KernelTestNeverHeardOf", "s", 2, {"anything": ["goes", 1]})
    # a registered type this service does not handle, with a payload its model refuses:
    # not this consumer's to judge, so never parsed
    unparseable = _envelope(AmountRecorded.event_type, "s", 3, {"amount": "ten"})
    newer_unhandled = _envelope(AmountRecorded.event_type, "s", 4, {"amount": 1}, version=9)
    sentinel = _envelope(event_type, "s", 5, {"amount": 9})
    ignored = [unknown, unparseable, newer_unhandled]
    app = rig.app()
    async with app.router.lifespan_context(app):
        await rig.produce([added, *ignored, sentinel])
        rows = await eventually(lambda: _has(rig, 2))
        assert [(r[0], r[1]) for r in rows] == [(added["event_id"], 7), (sentinel["event_id"], 9)]
        outcomes = dict(await _inbox(rig, [*_ids(ignored), added["event_id"]]))
        assert outcomes == {**dict.fromkeys(_ids(ignored), "ignored"),
                            added["event_id"]: "applied"}
        assert (await _readyz(app))["status"] == "ok"
    assert await rig.scalar("SELECT count(*) FROM outbox WHERE topic LIKE '%.dlq.v1'") == 0


async def _inbox(rig: Rig, ids: list[str]):
    conn = await asyncpg.connect(rig.database_url)
    try:
        return [(str(r["event_id"]), r["outcome"]) for r in await conn.fetch(
            "SELECT event_id, outcome FROM inbox WHERE event_id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids])]
    finally:
        await conn.close()
