"""Idempotent consumption of the contract topics.

Guarantees, per batch of records:
- ONE Postgres transaction holds the inbox rows (event ids) and everything the handlers wrote;
  the Kafka offset is committed only after that transaction committed. A redelivered event finds
  its inbox row and is skipped, so its effects are applied once.
- A record that cannot be decoded, names an unknown event type, or whose handler still fails
  after `max_retries` retries is dead-lettered: a DLQ message carrying the reason and the
  original bytes is written through the outbox in the same transaction, and the batch goes on.
- When the database itself is unreachable nothing is committed: the batch is rewound (seek) and
  retried after a pause, so no record is ever passed over.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from shared.aggregate import Projector, UnitOfWork
from shared.envelope import ContractError, Envelope, Event, decode, utcnow
from shared.eventstore import OUTBOX_CHANNEL, EventStore
from shared.observability import (
    CONSUMER_LAG,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    correlation_id_var,
    event_id_var,
)

log = logging.getLogger("tkm.consumer")
Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
INFRASTRUCTURE_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                         asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError)


class EventConsumer:
    """Applies consumed records to a service's database. `handlers` maps event types to
    functions; valid events of other types are recorded as ignored."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, service: str,
                 handlers: dict[str, Handler], dead_letter_topic: str, *, max_retries: int = 3,
                 projector: Projector | None = None):
        self.pool, self.store, self.service = pool, store, service
        self.projector = projector  # events a policy saves update the read models too
        self.handlers, self.dlq, self.max_retries = handlers, dead_letter_topic, max_retries

    async def process(self, records: list[ConsumerRecord]) -> dict[str, int]:
        """Apply a batch in one transaction. Returns counts by outcome. Raises one of
        INFRASTRUCTURE_ERRORS when the database is unreachable (nothing was committed)."""
        started = time.perf_counter()
        outcomes: dict[str, int] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            for record in records:
                outcome = await self._one(conn, record)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcomes.get("dead-lettered"):
                await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        for record_topic in {r.topic for r in records}:
            HANDLER_SECONDS.labels(self.service, record_topic).observe(time.perf_counter() - started)
        for outcome, n in outcomes.items():
            EVENTS_CONSUMED.labels(self.service, records[0].topic, outcome).inc(n)
        return outcomes

    async def _one(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        try:
            envelope, event = decode(record.value)
        except ContractError as exc:
            await self._dead_letter(conn, record, None, exc.reason, "ContractError")
            return "dead-lettered"
        event_id_var.set(str(envelope.event_id))
        correlation_id_var.set(str(envelope.correlation_id))
        fresh = await conn.fetchval(
            "INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, outcome) "
            "VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT (event_id) DO NOTHING RETURNING 1",
            envelope.event_id, record.topic, record.partition, record.offset)
        if not fresh:
            return "duplicate"
        handler = self.handlers.get(envelope.event_type)
        if handler is None:
            await self._set_outcome(conn, envelope.event_id, "ignored")
            return "ignored"
        error: Exception | None = None
        for _ in range(self.max_retries + 1):
            try:
                async with conn.transaction():  # a savepoint: a failed try leaves no trace
                    uow = UnitOfWork(conn, self.store, f"system:{self.service}",
                                     envelope.correlation_id, causation_id=envelope.event_id,
                                     projector=self.projector)
                    await handler(uow, envelope, event)
                await self._set_outcome(conn, envelope.event_id, "applied")
                return "applied"
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                error = exc
        assert error is not None
        log.error("dead-lettering %s after %d tries: %r", envelope.event_type,
                  self.max_retries + 1, error)
        await self._dead_letter(conn, record, envelope, str(error) or repr(error),
                                type(error).__name__)
        await self._set_outcome(conn, envelope.event_id, "dead-lettered")
        return "dead-lettered"

    @staticmethod
    async def _set_outcome(conn: asyncpg.Connection, event_id: uuid.UUID, outcome: str) -> None:
        await conn.execute("UPDATE inbox SET outcome = $2 WHERE event_id = $1", event_id, outcome)

    async def _dead_letter(self, conn: asyncpg.Connection, record: ConsumerRecord,
                           envelope: Envelope | None, reason: str, error_type: str) -> None:
        # undecodable records have no event id: their place on the topic identifies them
        dead_id = envelope.event_id if envelope else uuid.uuid5(
            uuid.NAMESPACE_URL, f"kafka:{record.topic}/{record.partition}/{record.offset}")
        if envelope is None:
            fresh = await conn.fetchval(
                "INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, outcome) "
                "VALUES ($1, $2, $3, $4, 'dead-lettered') ON CONFLICT DO NOTHING RETURNING 1",
                dead_id, record.topic, record.partition, record.offset)
            if not fresh:
                return
        letter = {
            "dead_letter_id": str(dead_id), "consumer": self.service, "reason": reason,
            "error_type": error_type, "failed_at": utcnow().isoformat(),
            "source": {"topic": record.topic, "partition": record.partition,
                       "offset": record.offset,
                       "key": record.key.decode(errors="replace") if record.key else None},
            "event_type": envelope.event_type if envelope else None,
            "original_value_base64": base64.b64encode(record.value or b"").decode(),
        }
        await conn.execute(
            "INSERT INTO outbox (topic, message_key, event_id, value) VALUES ($1, $2, $3, $4)",
            self.dlq, str(dead_id), dead_id, json.dumps(letter).encode())


def record_lag(consumer: Any, service: str, records: list[ConsumerRecord]) -> None:
    """Lag = partition end minus the next offset to read, for the partitions just consumed."""
    from aiokafka import TopicPartition

    lag: dict[str, int] = {}
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    for (topic, partition), offset in last.items():
        high = consumer.highwater(TopicPartition(topic, partition))
        if high is not None:
            lag[topic] = lag.get(topic, 0) + max(0, high - offset - 1)
    for topic, value in lag.items():
        CONSUMER_LAG.labels(service, topic).set(value)


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
