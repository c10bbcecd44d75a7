"""Reading and writing topics directly, for assertions about what the broker holds.

Every client here authenticates with `kafka_client()`: the environment's plain `KAFKA_*` settings,
which the suite's conftest points at the admin principal (it reads and writes any topic, joins
any group)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.kafka_security import kafka_security


def kafka_client(service: str | None = None) -> dict[str, Any]:
    """aiokafka security kwargs: of `service`'s principal when given, else the admin's."""
    return kafka_security(service=service).client_kwargs()


async def read_topic(bootstrap: str, topic: str, *, until: Callable[[list], bool],
                     timeout: float = 60, security: dict[str, Any] | None = None) -> list:
    """Every record of `topic` from the beginning, read until `until(records)` holds.
    Raises TimeoutError with what was read when it never does. `security`: another broker's
    client kwargs than the suite's."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"test-reader-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **(security if security is not None else kafka_client()))
    await consumer.start()
    records: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records):
            if loop.time() > deadline:
                raise TimeoutError(f"{topic}: condition not met after {len(records)} records")
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                **kafka_client())
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def values(records: list) -> list[dict]:
    return [json.loads(r.value) for r in records]


async def eventually(check: Callable, timeout: float = 60, interval: float = 0.2):
    """Await `check()` until it returns a truthy value; return it. Raises TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


async def partitions(bootstrap: str, topics: tuple[str, ...] | list[str]) -> list:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client())
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described
            for p in t["partitions"]]


async def start_at_end(bootstrap: str, group: str, topics: tuple[str, ...] | list[str]) -> None:
    """Commit the topics' current end for `group`: the topics keep every run's events forever,
    and a test's service needs only what the test publishes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, **kafka_client())
    await consumer.start()
    try:
        assigned = await partitions(bootstrap, topics)
        consumer.assign(assigned)
        await consumer.commit(await consumer.end_offsets(assigned))
    finally:
        await consumer.stop()
