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
from collections.abc import Awaitable, Callable, Sequence
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
        history = await self.store.read_stream(self.conn, stream_id)
        if not history:
            return None
        return cls.from_history(stream_id, [e for _, e in history])

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
