"""Running the evaluation service in-process against the shared broker, and feeding it contract
events as the other services would publish them."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from services.evaluation.app import build_spec
from shared.auth import Role, mint_token
from shared.envelope import Envelope, Event, encode, utcnow
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from shared.topics import EVALUATION, GROUPS, MENTORING, RECRUITMENT, ensure_topics
from tests.support.kafka import kafka_client, partitions, start_at_end

CONSUMED = (RECRUITMENT, GROUPS, MENTORING)
_versions = itertools.count(1)


def envelope(event: Event, stream_id: str, occurred_at: datetime | None = None) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                    schema_version=event.schema_version, occurred_at=occurred_at or utcnow(),
                    stream_id=stream_id, stream_version=next(_versions),
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload=json.loads(event.model_dump_json()))


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


async def publish(bootstrap: str, envelopes: list[Envelope]) -> None:
    """Each envelope to its event's topic, keyed by its stream, in the order given."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                **kafka_client())
    await producer.start()
    try:
        sends = []
        for env in envelopes:
            topic = _topic(env)
            sends.append(await producer.send(topic, value=encode(env),
                                             key=env.stream_id.encode()))
        for sent in sends:
            await sent
    finally:
        await producer.stop()


def _topic(env: Envelope) -> str:
    from shared.envelope import event_class

    topic = event_class(env.event_type, env.schema_version).topic
    assert topic is not None
    return topic


def headers(role: Role, subject: str = "tester", **scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, subject, role, **scope)}"}


ADMIN = headers(Role.ADMIN, "admin")  # the maker of a close
CHECKER = headers(Role.ADMIN, "checker")  # another ministry admin: grants the close
AGENCY = headers(Role.AGENCY, "bps")


async def close_year(client: httpx.AsyncClient, year: int | str,
                     maker: dict[str, str] | None = None, checker: dict[str, str] | None = None,
                     **grant_headers: str) -> dict:
    """The year-end close under four eyes: one ministry admin asks (202 pending), another grants
    (200); returns the grant's `result`, what the close answers."""
    asked = await client.post(f"/evaluations/{year}/close", headers=maker or ADMIN)
    assert asked.status_code == 202, asked.text
    assert asked.json()["state"] == "pending"
    granted = await client.post(f"/approvals/{asked.json()['request_id']}/grant",
                                headers={**(checker or CHECKER), **grant_headers})
    assert granted.status_code == 200, granted.text
    assert granted.json()["state"] == "granted"
    return granted.json()["result"]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client())
    await consumer.start()
    try:
        return await consumer.end_offsets(await partitions(bootstrap, (topic,)))
    finally:
        await consumer.stop()


async def read_from(bootstrap: str, offsets: dict[TopicPartition, int],
                    until: Callable[[list], bool], timeout: float = 60) -> list:
    """Records from `offsets` on, read until `until(records)` holds. Raises TimeoutError."""
    import asyncio

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_client())
    await consumer.start()
    records: list = []
    try:
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records):
            if loop.time() > deadline:
                raise TimeoutError(f"condition not met after {len(records)} records")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_service(bootstrap: str, database_url: str,
                          **spec_args) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The service with its real lifespan, in a consumer group of its own starting at the end
    of the consumed topics."""
    group = f"evaluation-test-{uuid.uuid4().hex}"  # the prefix the service's principal may use
    await ensure_topics(bootstrap, [*CONSUMED, EVALUATION], partitions=6, replication_factor=1)
    await start_at_end(bootstrap, group, CONSUMED)
    spec = dataclasses.replace(build_spec(**spec_args), consumer_group=group)
    app = create_app(spec, load_settings("evaluation", database_url=database_url,
                                         kafka_bootstrap_servers=bootstrap))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://evaluation") as client:
            yield app, client
