"""Idempotent consumption of the contract topics.

Guarantees, per batch of records:
- ONE Postgres transaction holds the inbox rows (event ids) and everything the handlers wrote;
  the Kafka offset is committed only after that transaction committed. A redelivered event finds
  its inbox row and is skipped, and an event repeated within a batch counts once, so its effects
  are applied once. Events are applied in the order of the batch.
- A record that cannot be decoded, names an unknown event type, or whose handler still fails
  after `max_retries` retries is dead-lettered: a DLQ message carrying the reason and the
  original bytes is written through the outbox in the same transaction, and the batch goes on;
  a failed handler leaves no trace of its own writes.
- When the database is unreachable, or the batch lost a race (deadlock, serialization failure,
  stale stream version), nothing is committed and the batch is retried after a pause, so no
  record is ever passed over and no valid event is dead-lettered for a passing reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from shared.aggregate import Projector, UnitOfWork
from shared.envelope import ContractError, Envelope, Event, decode, utcnow
from shared.eventstore import OUTBOX_CHANNEL, ConcurrencyError, EventStore
from shared.observability import (
    CONSUMER_LAG,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    correlation_id_var,
    event_id_var,
)

log = logging.getLogger("tkm.consumer")
DLQ_ORIGINAL_CAP = 256 * 1024  # bytes of the original record a dead letter carries
Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
# The database or the moment is at fault, not the event: the whole batch is rolled back and
# tried again after a pause, and nothing is dead-lettered for these. Anything else a handler
# raises (a TimeoutError of its own included) is the event's failure: retried, then dead-lettered.
TRANSIENT_ERRORS = (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError, asyncpg.OperatorInterventionError,
                    asyncpg.InsufficientResourcesError, asyncpg.TransactionRollbackError,
                    asyncpg.LockNotAvailableError, ConcurrencyError)


@dataclass
class _Item:
    record: ConsumerRecord
    inbox_id: uuid.UUID  # the event id; for an undecodable record, one from its place
    envelope: Envelope | None = None
    event: Event | None = None
    reason: str = ""  # why it is dead-lettered
    error_type: str = "ContractError"
    handler: Handler | None = None
    outcome: str = ""  # the one expected until the handlers ran, then the final one


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
        """Apply a batch in one transaction. Returns counts by outcome (applied, ignored,
        dead-lettered, duplicate). Raises one of TRANSIENT_ERRORS when the database is
        unreachable or the batch lost a race (nothing was committed)."""
        started = time.perf_counter()
        items = [self._decoded(record) for record in records]
        async with self.pool.acquire() as conn, conn.transaction():
            await self._claim(conn, items)
            todo = [i for i in items if i.outcome == "applied"]
            if todo:
                await self._apply(conn, todo)
            letters = [i for i in items if i.outcome == "dead-lettered"]
            if letters:
                await self._dead_letter(conn, letters)
        outcomes: dict[str, int] = {}
        by_topic: dict[tuple[str, str], int] = {}
        for item in items:
            outcomes[item.outcome] = outcomes.get(item.outcome, 0) + 1
            key = (item.record.topic, item.outcome)
            by_topic[key] = by_topic.get(key, 0) + 1
        for record_topic in {r.topic for r in records}:
            HANDLER_SECONDS.labels(self.service, record_topic).observe(time.perf_counter() - started)
        for (record_topic, outcome), n in by_topic.items():
            EVENTS_CONSUMED.labels(self.service, record_topic, outcome).inc(n)
        return outcomes

    def _decoded(self, record: ConsumerRecord) -> _Item:
        try:
            envelope, event = decode(record.value)
        except ContractError as exc:
            # undecodable records have no event id: their place on the topic identifies them
            place = uuid.uuid5(uuid.NAMESPACE_URL,
                               f"kafka:{record.topic}/{record.partition}/{record.offset}")
            return _Item(record, place, reason=exc.reason, outcome="dead-lettered")
        handler = self.handlers.get(envelope.event_type)
        return _Item(record, envelope.event_id, envelope, event, handler=handler,
                     outcome="applied" if handler else "ignored")

    async def _claim(self, conn: asyncpg.Connection, items: list[_Item]) -> None:
        """Insert the inbox rows of the batch in one statement; an item whose row existed
        already, or that repeats an earlier item of the batch, becomes a duplicate."""
        first: dict[uuid.UUID, _Item] = {}
        for item in items:
            if item.inbox_id in first:
                item.outcome = "duplicate"
            else:
                first[item.inbox_id] = item
        claimed = first.values()
        # rows carry the outcome expected; the handlers that fail are corrected in _apply
        fresh = {r["event_id"] for r in await conn.fetch(
            "INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, outcome) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[]) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            [i.inbox_id for i in claimed], [i.record.topic for i in claimed],
            [i.record.partition for i in claimed], [i.record.offset for i in claimed],
            [i.outcome for i in claimed])}
        for item in claimed:
            if item.inbox_id not in fresh:
                item.outcome = "duplicate"

    async def _apply(self, conn: asyncpg.Connection, todo: list[_Item]) -> None:
        """Run the handlers in order. The whole batch is tried in one savepoint; only when a
        handler fails is each event run in a savepoint of its own, retried, then dead-lettered,
        so a failure leaves no trace and the other events still apply once."""
        # the handler that failed the batch has had its first try
        failed_first: dict[uuid.UUID, Exception] = {}
        if len(todo) > 1:
            current = todo[0]
            try:
                async with conn.transaction():
                    for current in todo:
                        await self._handle(conn, current)
                return
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted out event by event below
                failed_first[current.inbox_id] = exc
                log.info("a handler failed in a batch of %d, applying one by one: %r",
                         len(todo), exc)
        failed = []
        for item in todo:
            error = failed_first.get(item.inbox_id)
            for _ in range(1 if error else 0, self.max_retries + 1):
                try:
                    async with conn.transaction():
                        await self._handle(conn, item)
                    error = None
                    break
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered
                    error = exc
            if error is not None:
                assert item.envelope is not None
                log.error("dead-lettering %s after %d tries: %r", item.envelope.event_type,
                          self.max_retries + 1, error)
                item.outcome, item.reason = "dead-lettered", str(error) or repr(error)
                item.error_type = type(error).__name__
                failed.append(item.inbox_id)
        if failed:
            await conn.execute("UPDATE inbox SET outcome = 'dead-lettered' "
                               "WHERE event_id = ANY($1::uuid[])", failed)

    async def _handle(self, conn: asyncpg.Connection, item: _Item) -> None:
        envelope, event, handler = item.envelope, item.event, item.handler
        assert envelope is not None and event is not None and handler is not None
        event_id_var.set(str(envelope.event_id))
        correlation_id_var.set(str(envelope.correlation_id))
        uow = UnitOfWork(conn, self.store, f"system:{self.service}", envelope.correlation_id,
                         causation_id=envelope.event_id, projector=self.projector)
        await handler(uow, envelope, event)

    async def _dead_letter(self, conn: asyncpg.Connection, items: list[_Item]) -> None:
        """DLQ messages carrying the reason and the original bytes, through the outbox."""
        letters = [{
            "dead_letter_id": str(i.inbox_id), "consumer": self.service, "reason": i.reason,
            "error_type": i.error_type, "failed_at": utcnow().isoformat(),
            "source": {"topic": i.record.topic, "partition": i.record.partition,
                       "offset": i.record.offset,
                       "key": i.record.key.decode(errors="replace") if i.record.key else None},
            "event_type": i.envelope.event_type if i.envelope else None,
            # a letter must stay publishable: past the cap, the source offset and the digest
            # find the original on its topic
            "original_value_base64": base64.b64encode(
                (i.record.value or b"")[:DLQ_ORIGINAL_CAP]).decode(),
            "original_truncated": len(i.record.value or b"") > DLQ_ORIGINAL_CAP,
            "original_sha256": hashlib.sha256(i.record.value or b"").hexdigest(),
        } for i in items]
        await conn.execute(
            "WITH o AS (INSERT INTO outbox (topic, message_key, event_id, value) "
            "SELECT $1, k, e, v FROM unnest($2::text[], $3::uuid[], $4::bytea[]) "
            "WITH ORDINALITY AS u(k, e, v, n) ORDER BY n) SELECT pg_notify($5, '')",
            self.dlq, [str(i.inbox_id) for i in items], [i.inbox_id for i in items],
            [json.dumps(letter).encode() for letter in letters], OUTBOX_CHANNEL)


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
