"""Aggregates and the unit of work that loads, decides and saves them in one transaction.

An aggregate's command methods check the rules and `record` events; its state changes only in
`apply`, so replaying its history rebuilds it. `UnitOfWork` gives a command handler one Postgres
transaction in which it loads aggregates, saves their new events (plus outbox rows) and lets the
service update its inline read models; `run_command` retries the whole decision when another
writer moved a stream in between.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import asyncpg

from shared.envelope import Envelope, Event
from shared.eventstore import ConcurrencyError, EventStore


class Aggregate:
    """Subclasses implement `apply(event)` (state only, no rules) and command methods."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id
        self.version = 0
        self.pending: list[Event] = []

    def apply(self, event: Event) -> None:  # pragma: no cover - every subclass overrides
        raise TypeError(f"{type(self).__name__} cannot apply {event.event_type}")

    def record(self, event: Event) -> None:
        self.apply(event)
        self.pending.append(event)

    @classmethod
    def from_history(cls, stream_id: str, events: Sequence[Event]) -> Self:
        agg = cls(stream_id)
        for event in events:
            agg.apply(event)
            agg.version += 1
        return agg


A = TypeVar("A", bound=Aggregate)


async def lock_stream(conn: asyncpg.Connection, stream_id: str, *, shared: bool = False) -> None:
    """Take the stream's transaction-scoped advisory lock: exclusive for writers (what
    `UnitOfWork.load` takes), shared for readers that must not interleave with a writer."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {fn}(hashtextextended($1, 0))", stream_id)


async def lock_streams(conn: asyncpg.Connection, stream_ids: Iterable[str], *,
                       shared: bool = False) -> None:
    """`lock_stream` for many streams in one statement, taken in one order (byte order of the
    ids) for every caller, so two batches over overlapping streams queue instead of
    deadlocking. Each stream holds one entry of the server's lock table until commit."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    # sorted here, not by the database's collation; a subquery with ORDER BY is kept as it is,
    # so the locks are taken row by row in that order
    await conn.execute(
        f"SELECT {fn}(hashtextextended(s, 0)) FROM (SELECT s FROM unnest($1::text[]) "
        "WITH ORDINALITY AS u(s, n) ORDER BY n) AS ordered", sorted(set(stream_ids)))


Projector = Callable[[asyncpg.Connection, list[tuple[Envelope, Event]]], Awaitable[None]]


@dataclass
class UnitOfWork:
    conn: asyncpg.Connection
    store: EventStore
    actor: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    projector: Projector | None = None
    saved: list[Envelope] = field(default_factory=list)

    async def load(self, cls: type[A], stream_id: str) -> A | None:
        """The aggregate rebuilt from its stream, or None when the stream is empty. Writers of one
        stream queue on a transaction-scoped advisory lock instead of failing on each other."""
        await lock_stream(self.conn, stream_id)
        history = await self.store.read_streams(self.conn, [stream_id])
        if stream_id not in history:
            return None
        return cls.from_history(stream_id, history[stream_id])

    async def load_many(self, cls: type[A], stream_ids: Iterable[str], *,
                        lock: bool = True) -> dict[str, A]:
        """The aggregates of the non-empty streams among `stream_ids` (empty ones are absent),
        read in one query after taking every stream's lock (`lock_streams`). `lock=False` is
        for a caller already excluding the streams' writers another way (too many streams for
        the lock table): an unexcluded writer makes `save_many` raise ConcurrencyError."""
        ids = sorted(set(stream_ids))
        if lock:
            await lock_streams(self.conn, ids)
        history = await self.store.read_streams(self.conn, ids)
        return {s: cls.from_history(s, events) for s, events in history.items()}

    async def save(self, agg: Aggregate) -> list[Envelope]:
        """Append the aggregate's pending events at the version it was loaded at.
        Raises ConcurrencyError when its stream moved on."""
        events, agg.pending = agg.pending, []
        envelopes = await self.store.append(
            self.conn, agg.stream_id, agg.version, events, actor=self.actor,
            correlation_id=self.correlation_id, causation_id=self.causation_id)
        agg.version += len(events)
        if self.projector and envelopes:
            await self.projector(self.conn, list(zip(envelopes, events, strict=True)))
        self.saved.extend(envelopes)
        return envelopes

    async def save_many(self, aggregates: Iterable[Aggregate]) -> list[Envelope]:
        """Append every aggregate's pending events at the version it was loaded at, set-based
        (`EventStore.append_many`), and run the projector once over all of them, in the order
        given. Raises ConcurrencyError when any stream moved on; nothing is written then."""
        aggs = [a for a in {id(a): a for a in aggregates}.values() if a.pending]
        envelopes = await self.store.append_many(
            self.conn, [(a.stream_id, a.version, a.pending) for a in aggs], actor=self.actor,
            correlation_id=self.correlation_id, causation_id=self.causation_id)
        events = [e for a in aggs for e in a.pending]
        for agg in aggs:
            agg.version, agg.pending = agg.version + len(agg.pending), []
        if self.projector and envelopes:
            await self.projector(self.conn, list(zip(envelopes, events, strict=True)))
        self.saved.extend(envelopes)
        return envelopes


async def run_command(pool: asyncpg.Pool, store: EventStore, decide: Callable[[UnitOfWork], Awaitable[Any]],
                      *, actor: str, correlation_id: uuid.UUID | None = None,
                      projector: Projector | None = None, attempts: int = 8,
                      isolation: str | None = None) -> Any:
    """Run `decide(uow)` in one transaction and commit. On ConcurrencyError the transaction is
    rolled back and `decide` runs again on fresh state, up to `attempts` times; then the
    ConcurrencyError propagates. Domain errors propagate at once and nothing is written."""
    correlation_id = correlation_id or uuid.uuid4()
    for attempt in range(attempts):
        try:
            async with pool.acquire() as conn, conn.transaction(isolation=isolation):
                uow = UnitOfWork(conn, store, actor, correlation_id, projector=projector)
                return await decide(uow)
        except (ConcurrencyError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
    raise AssertionError("unreachable")
