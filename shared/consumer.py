"""Idempotent consumption of the contract topics.

Guarantees, per batch of records:
- ONE Postgres transaction holds the inbox rows (event ids) and everything the handlers wrote;
  the Kafka offset is committed only after that transaction committed. A redelivered event finds
  its inbox row and is skipped, and an event repeated within a batch counts once, so its effects
  are applied once. Events are applied in the order of the batch.
- The handler is looked up from the envelope before the payload is parsed: an event type the
  consumer has no handler for is recorded as ignored, whatever its payload. Fields the consumer
  does not know, in the envelope or the payload, are ignored (see `shared.envelope`). A record
  of a handled type at its current version is decoded in one pass (`decode_wanted`).
- Set-based: a handler marked `batched` takes every event of a run of consecutive events of its
  type in one call (`(uow, [(envelope, event), ...])`) and writes them with a constant number of
  statements; the inbox rows of a batch are one statement, its dead letters another. A plain
  handler takes one event a call. When a run fails, its events are retried one by one (each in
  a run of its own), so one poison event is dead-lettered and the others still apply.
- An event of a handled type whose `schema_version` is newer than this process knows is never
  dead-lettered: it and every later record of its partition are held back (no inbox row), and
  `consume` reports the hold so the subscriber seeks the partition back to it, pauses it and
  commits only the offsets before it (`PartitionHolds`). An upgraded consumer, restarted or
  re-checked, reads it from there and applies it once.
- A record that cannot be decoded, or whose handled payload does not validate, or whose handler
  still fails after `max_retries` retries is dead-lettered: a DLQ message carrying the reason and
  the original bytes is written through the outbox in the same transaction, its inbox row says
  "dead-lettered", and the batch goes on; a failed handler leaves no trace of its own writes.
  `redrive` applies a dead letter later (`tkm dlq replay`), once, however often it is replayed.
- When the database is unreachable (`CONNECTION_ERRORS`), nothing is committed and the batch is
  retried after a pause, for as long as it takes: nothing is passed over or dead-lettered.
  Any other error that fails a whole batch (out of memory or locks, a lost race, a bug) is retried
  `split_after` times, then the batch is split in halves, down to single records, so one record
  cannot hold a partition for ever: a single record still failing is dead-lettered with the
  reason, except after a lost race (deadlock, serialization, stale version), which is retried.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition

from shared.aggregate import Projector, UnitOfWork
from shared.envelope import (
    ContractError,
    Envelope,
    Event,
    current_version,
    decode_envelope,
    decode_wanted,
    parse_payload,
    utcnow,
)
from shared.eventstore import OUTBOX_CHANNEL, ConcurrencyError, EventStore
from shared.observability import (
    CONSUMER_PAUSED,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    correlation_id_var,
    event_id_var,
)

log = logging.getLogger("tkm.consumer")
T = TypeVar("T")
DLQ_ORIGINAL_CAP = 256 * 1024  # bytes of the original record a dead letter carries
Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
# a handler marked `batched`: every event of a run of one type in one call
BatchHandler = Callable[[UnitOfWork, list[tuple[Envelope, Event]]], Awaitable[None]]
AnyHandler = Handler | BatchHandler
# The database cannot be reached: the event is not at fault and waiting is the only cure, so the
# batch is retried for as long as it takes and nothing is ever dead-lettered for these.
CONNECTION_ERRORS = (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.InternalClientError, asyncpg.CannotConnectNowError,
                     asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                     asyncpg.TooManyConnectionsError)
# The batch lost a race: it is rolled back and tried again; a single record is never
# dead-lettered for one.
CONTENTION_ERRORS = (asyncpg.TransactionRollbackError, asyncpg.LockNotAvailableError,
                     ConcurrencyError)
# Raised by a handler, these fail the whole batch (it may be its size: out of shared memory,
# too many locks, a statement timeout), which is rolled back, retried, then split.
TRANSIENT_ERRORS = (*CONNECTION_ERRORS, *CONTENTION_ERRORS, asyncpg.InsufficientResourcesError,
                    asyncpg.ProgramLimitExceededError, asyncpg.OperatorInterventionError)


def batched(fn: BatchHandler) -> BatchHandler:
    """Mark a handler as set-based: it is called with a list of (envelope, event) of its type,
    in the order of the batch, and must apply them as if one by one in that order (see
    `unique_runs` for upserts that may meet one key twice)."""
    fn.tkm_batched = True  # type: ignore[attr-defined]
    return fn


def is_batched(handler: AnyHandler) -> bool:
    return bool(getattr(handler, "tkm_batched", False))


def unique_runs(items: list[T], key: Callable[[T], Any]) -> list[list[T]]:
    """`items` cut, in order, into consecutive runs in which no key repeats: one set-based
    statement per run then applies them as if one by one (an upsert may touch a row once)."""
    runs: list[list[T]] = [[]]
    seen: set[Any] = set()
    for item in items:
        k = key(item)
        if k in seen:
            runs.append([])
            seen = set()
        seen.add(k)
        runs[-1].append(item)
    return [r for r in runs if r]


async def apply_handler(handler: AnyHandler, uow: UnitOfWork,
                        items: list[tuple[Envelope, Event]]) -> None:
    """Run `handler` over `items` (of its type, in order): in one call when it is batched."""
    if is_batched(handler):
        await handler(uow, items)  # type: ignore[call-arg, arg-type]
    else:
        for envelope, event in items:
            await handler(uow, envelope, event)  # type: ignore[call-arg]


class ReplayError(RuntimeError):
    """A dead letter could not be applied (nothing was changed); the reason says why."""


@dataclass(frozen=True)
class Held:
    """A record of a handled type, newer than this process knows: its partition waits there."""

    topic: str
    partition: int
    offset: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    known_version: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "event_id": str(self.event_id), "event_type": self.event_type,
                "schema_version": self.schema_version, "known_version": self.known_version}


@dataclass
class Consumed:
    """What `consume` did: counts by outcome, and the partitions held back (by (topic,
    partition)) at the record each must resume from."""

    outcomes: dict[str, int] = field(default_factory=dict)
    held: dict[tuple[str, int], Held] = field(default_factory=dict)

    def add(self, outcomes: dict[str, int]) -> None:
        for outcome, n in outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


@dataclass
class _Item:
    record: ConsumerRecord
    inbox_id: uuid.UUID  # the event id; for an undecodable record, one from its place
    envelope: Envelope | None = None
    event: Event | None = None
    reason: str = ""  # why it is dead-lettered
    error_type: str = "ContractError"
    handler: AnyHandler | None = None
    outcome: str = ""  # the one expected until the handlers ran, then the final one


class EventConsumer:
    """Applies consumed records to a service's database. `handlers` maps event types to
    functions; events of other types are recorded as ignored."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, service: str,
                 handlers: Mapping[str, AnyHandler], dead_letter_topic: str, *, max_retries: int = 3,
                 projector: Projector | None = None, split_after: int = 3,
                 retry_pause_s: float = 0.5):
        self.pool, self.store, self.service = pool, store, service
        self.projector = projector  # events a policy saves update the read models too
        self.handlers, self.dlq, self.max_retries = handlers, dead_letter_topic, max_retries
        self.split_after, self.retry_pause_s = max(1, split_after), retry_pause_s

    async def process(self, records: list[ConsumerRecord]) -> dict[str, int]:
        """Apply a batch in one transaction. Returns counts by outcome (applied, ignored,
        dead-lettered, duplicate, held). Raises one of TRANSIENT_ERRORS, or whatever a bug
        raises, when nothing was committed. Use `consume` to also learn what was held back."""
        return (await self._process(records))[0]

    async def consume(self, records: list[ConsumerRecord]) -> Consumed:
        """Apply a batch until every record is applied, ignored, dead-lettered or held back:
        waits out an unreachable database, splits a batch that keeps failing (see the module
        docstring). Returns only when the offsets of the records not held may be committed."""
        result = Consumed()
        await self._settle(list(records), result)
        return result

    async def _settle(self, records: list[ConsumerRecord], result: Consumed) -> None:
        # a partition held in an earlier part of the batch applies nothing after the hold
        records = [r for r in records if (r.topic, r.partition) not in result.held]
        if not records:
            return
        failures = waits = 0
        while True:
            try:
                outcomes, held = await self._process(records)
                result.add(outcomes)
                result.held.update(held)
                return
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                waits += 1
                log.warning("database unreachable, batch of %d will be retried: %r",
                            len(records), exc)
                await self._pause(waits)
                continue
            except Exception as exc:  # noqa: BLE001 - sorted out below: retry, split, DLQ
                failures += 1
                error = exc
            if failures < self.split_after:
                log.warning("batch of %d failed (attempt %d), will be retried: %r",
                            len(records), failures, error)
                await self._pause(failures)
            elif len(records) > 1:
                half = len(records) // 2
                log.warning("batch of %d failed %d times, splitting it: %r", len(records),
                            failures, error)
                await self._settle(records[:half], result)
                await self._settle(records[half:], result)
                return
            elif isinstance(error, CONTENTION_ERRORS):
                log.warning("record keeps losing races, will be retried: %r", error)
                await self._pause(failures)
            elif await self._dead_letter_alone(records[0], error, result):
                return
            else:
                await self._pause(failures)

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(min(30.0, self.retry_pause_s * 2 ** min(attempt - 1, 8)))

    async def _process(self, records: list[ConsumerRecord]
                       ) -> tuple[dict[str, int], dict[tuple[str, int], Held]]:
        started = time.perf_counter()
        items: list[_Item] = []
        held: dict[tuple[str, int], Held] = {}
        behind = 0  # records not looked at because their partition waits on an earlier one
        for record in records:
            if (record.topic, record.partition) in held:
                behind += 1
                continue
            item = self._decoded(record)
            if item.outcome == "held":
                held[(record.topic, record.partition)] = self._held(item)
                behind += 1
            else:
                items.append(item)
        if items:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._claim(conn, items)
                todo = [i for i in items if i.outcome == "applied"]
                if todo:
                    await self._apply(conn, todo)
                letters = [i for i in items if i.outcome == "dead-lettered"]
                if letters:
                    await self._dead_letter(conn, letters)
            self._log_letters(letters)  # committed
        outcomes = self._count(items, started)
        if behind:
            outcomes["held"] = behind
        return outcomes, held

    def _count(self, items: list[_Item], started: float) -> dict[str, int]:
        outcomes: dict[str, int] = {}
        by_topic: dict[tuple[str, str], int] = {}
        for item in items:
            outcomes[item.outcome] = outcomes.get(item.outcome, 0) + 1
            key = (item.record.topic, item.outcome)
            by_topic[key] = by_topic.get(key, 0) + 1
        for record_topic in {i.record.topic for i in items}:
            HANDLER_SECONDS.labels(self.service, record_topic).observe(time.perf_counter() - started)
        for (record_topic, outcome), n in by_topic.items():
            EVENTS_CONSUMED.labels(self.service, record_topic, outcome).inc(n)
        return outcomes

    def _decoded(self, record: ConsumerRecord) -> _Item:
        fast = decode_wanted(record.value, self.handlers)
        if fast is not None:
            envelope, event = fast
            return _Item(record, envelope.event_id, envelope, event,
                         handler=self.handlers[envelope.event_type], outcome="applied")
        try:
            envelope = decode_envelope(record.value)
        except ContractError as exc:
            # undecodable records have no event id: their place on the topic identifies them
            place = uuid.uuid5(uuid.NAMESPACE_URL,
                               f"kafka:{record.topic}/{record.partition}/{record.offset}")
            return _Item(record, place, reason=exc.reason, outcome="dead-lettered")
        handler = self.handlers.get(envelope.event_type)
        if handler is None:  # not ours to judge: its payload is never parsed
            return _Item(record, envelope.event_id, envelope, outcome="ignored")
        known = current_version(envelope.event_type)
        if known is not None and envelope.schema_version > known:
            return _Item(record, envelope.event_id, envelope, outcome="held")
        try:
            event = parse_payload(envelope)
        except ContractError as exc:
            return _Item(record, envelope.event_id, envelope, reason=exc.reason,
                         outcome="dead-lettered")
        return _Item(record, envelope.event_id, envelope, event, handler=handler,
                     outcome="applied")

    @staticmethod
    def _held(item: _Item) -> Held:
        envelope = item.envelope
        assert envelope is not None
        return Held(item.record.topic, item.record.partition, item.record.offset,
                    envelope.event_id, envelope.event_type, envelope.schema_version,
                    current_version(envelope.event_type) or 0)

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
        # the handler that failed the batch has had its first try (when it ran alone)
        failed_first: dict[uuid.UUID, Exception] = {}
        if len(todo) > 1:
            runs = self._runs(todo)
            current = runs[0]
            try:
                async with conn.transaction():
                    for current in runs:
                        await self._handle(conn, current)
                return
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted out event by event below
                if len(current) == 1:
                    failed_first[current[0].inbox_id] = exc
                log.info("a handler failed in a batch of %d, applying one by one: %r",
                         len(todo), exc)
        failed = []
        for item in todo:
            error = failed_first.get(item.inbox_id)
            for _ in range(1 if error else 0, self.max_retries + 1):
                try:
                    async with conn.transaction():
                        await self._handle(conn, [item])
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

    @staticmethod
    def _runs(todo: list[_Item]) -> list[list[_Item]]:
        """Consecutive items of one batched handler together; any other item alone."""
        runs: list[list[_Item]] = []
        for item in todo:
            if (runs and is_batched(item.handler) and runs[-1][-1].handler is item.handler):
                runs[-1].append(item)
            else:
                runs.append([item])
        return runs

    async def _handle(self, conn: asyncpg.Connection, run: list[_Item]) -> None:
        first, handler = run[0], run[0].handler
        envelope = first.envelope
        assert envelope is not None and handler is not None
        # a run's log lines and the events its handler saves name the run's first event
        event_id_var.set(str(envelope.event_id))
        correlation_id_var.set(str(envelope.correlation_id))
        uow = UnitOfWork(conn, self.store, f"system:{self.service}", envelope.correlation_id,
                         causation_id=envelope.event_id, projector=self.projector)
        items = [(i.envelope, i.event) for i in run]
        await apply_handler(handler, uow, items)  # type: ignore[arg-type]

    async def _dead_letter_alone(self, record: ConsumerRecord, error: Exception,
                                 result: Consumed) -> bool:
        """Dead-letter one record that failed its batch every time, in a transaction of its
        own. False when even that fails (the caller waits and tries the record again)."""
        started = time.perf_counter()
        try:
            item = self._decoded(record)
            item.outcome, item.error_type = "dead-lettered", type(error).__name__
            item.reason = f"{type(error).__name__}: {error}" if str(error) else repr(error)
            async with self.pool.acquire() as conn, conn.transaction():
                await self._claim(conn, [item])
                if item.outcome == "dead-lettered":
                    await self._dead_letter(conn, [item])
        except Exception:  # the record stays where it is and is tried again
            log.exception("could not dead-letter a record that keeps failing")
            return False
        log.error("dead-lettered a record that failed every batch it was in: %s", item.reason,
                  extra={"event_id": str(item.inbox_id)})
        result.add(self._count([item], started))
        return True

    def _log_letters(self, items: list[_Item]) -> None:
        """One WARNING line per committed dead letter (an undecodable record too)."""
        for i in items:
            log.warning("dead-lettered %s from %s[%d] at offset %d to %s: %s",
                        i.envelope.event_type if i.envelope else "an undecodable record",
                        i.record.topic, i.record.partition, i.record.offset, self.dlq, i.reason,
                        extra={"event_id": str(i.inbox_id), "error_type": i.error_type,
                               "dead_letter_topic": self.dlq})

    async def _dead_letter(self, conn: asyncpg.Connection, items: list[_Item]) -> None:
        """DLQ messages carrying the reason and the original bytes, through the outbox."""
        letters = [{
            "dead_letter_id": str(i.inbox_id), "consumer": self.service, "reason": i.reason,
            "error_type": i.error_type, "failed_at": utcnow().isoformat(),
            "source": {"topic": i.record.topic, "partition": i.record.partition,
                       "offset": i.record.offset,
                       "key": i.record.key.decode(errors="replace") if i.record.key else None},
            "event_type": i.envelope.event_type if i.envelope else None,
            "event_id": str(i.envelope.event_id) if i.envelope else None,
            "schema_version": i.envelope.schema_version if i.envelope else None,
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

    async def redrive(self, record: ConsumerRecord, letter_id: uuid.UUID) -> str:
        """Apply a dead-lettered record again, as the consumer that refused it: the original
        record rebuilt from its letter, at its original place. In ONE transaction the letter's
        inbox row ("dead-lettered") is released and the record is claimed and handled as if
        consumed for the first time, so its effects are applied once however often it is
        replayed. Returns "applied" or "ignored" (no handler for it any more), or "duplicate"
        (already applied: nothing done). Raises ReplayError, changing nothing and writing no
        new letter, when it still cannot be applied or its inbox has no row for it at all (a
        replayed row pruned by housekeeping); TRANSIENT_ERRORS pass through."""
        item = self._decoded(record)
        if item.outcome == "held":
            known = current_version(item.envelope.event_type) if item.envelope else None
            raise ReplayError(f"{item.envelope.event_type if item.envelope else '?'} version "
                              f"{item.envelope.schema_version if item.envelope else '?'} is "
                              f"newer than {known}: upgrade {self.service} first")
        if item.outcome == "dead-lettered":
            raise ReplayError(item.reason)
        async with self.pool.acquire() as conn, conn.transaction():
            # the row that makes redeliveries duplicates; the letter id can differ from the
            # event id (a record that could not be decoded when it failed)
            released = await conn.fetch("DELETE FROM inbox WHERE event_id = ANY($1::uuid[]) "
                                        "AND outcome = 'dead-lettered' RETURNING event_id",
                                        list({letter_id, item.inbox_id}))
            await self._claim(conn, [item])
            if not released and item.outcome != "duplicate":
                # no row at all: replayed long ago and pruned (applying it again would count it
                # twice), or not this service's database
                raise ReplayError(f"no dead-lettered inbox row for {letter_id}: nothing done")
            if item.outcome == "applied":
                try:
                    async with conn.transaction():
                        await self._handle(conn, [item])
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:  # the transaction rolls back: the row stays as it was
                    raise ReplayError(f"{type(exc).__name__}: {exc}") from exc
        EVENTS_CONSUMED.labels(self.service, record.topic, f"replayed-{item.outcome}").inc()
        return item.outcome


class PartitionHolds:
    """The partitions a service's consumer paused before an event of a version it does not know
    yet: logged as a warning, counted in tkm_consumer_paused_partitions, shown by /readyz
    ("degraded"), and resumed by `recheck` once this process knows the version (a restarted,
    upgraded process re-reads them from their committed offsets by itself)."""

    def __init__(self, service: str):
        self.service = service
        self.held: dict[tuple[str, int], Held] = {}
        self._consumer: Any = None
        self._topics: set[str] = set()

    def hold(self, consumer: Any, held: Held) -> None:
        """Seek the partition back to the held record and pause it, before the offsets are
        committed: the commit then stops just before that record."""
        tp = TopicPartition(held.topic, held.partition)
        consumer.seek(tp, held.offset)
        consumer.pause(tp)
        self._consumer = consumer
        if self.held.get((held.topic, held.partition)) != held:
            log.warning("paused %s[%d] at offset %d: %s version %d is newer than version %d "
                        "this consumer knows; upgrade %s to apply it and what follows",
                        held.topic, held.partition, held.offset, held.event_type,
                        held.schema_version, held.known_version, self.service,
                        extra={"event_id": str(held.event_id)})
        self.held[(held.topic, held.partition)] = held
        self._gauge()

    def recheck(self) -> list[Held]:
        """Resume the partitions whose held version this process now knows; forget those the
        consumer no longer has paused (a rebalance: their new owner starts from the committed
        offset and holds them again if it must). Returns the partitions resumed."""
        consumer, resumed = self._consumer, []
        if consumer is None or not self.held:
            return resumed
        paused = consumer.paused()
        for key, held in list(self.held.items()):
            tp = TopicPartition(*key)
            if tp not in paused:
                del self.held[key]
            elif (current_version(held.event_type) or 0) >= held.schema_version:
                consumer.seek(tp, held.offset)
                consumer.resume(tp)
                del self.held[key]
                resumed.append(held)
                log.info("resumed %s[%d] at offset %d: %s version %d is known now", held.topic,
                         held.partition, held.offset, held.event_type, held.schema_version)
        self._gauge()
        return resumed

    def report(self) -> dict[str, Any]:
        return {"status": "degraded" if self.held else "ok",
                "paused_partitions": [h.as_dict() for h in self.held.values()]}

    def _gauge(self) -> None:
        counts: dict[str, int] = dict.fromkeys(self._topics, 0)
        for topic, _ in self.held:
            counts[topic] = counts.get(topic, 0) + 1
        self._topics.update(counts)
        for topic, n in counts.items():
            CONSUMER_PAUSED.labels(self.service, topic).set(n)


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
