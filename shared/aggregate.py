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
from shared.eventstore import ConcurrencyError, EventStore, History


class Aggregate:
    """Subclasses implement `apply(event)` (state only, no rules) and command methods.

    Snapshots (opt-in, for streams whose histories grow without bound): a subclass setting
    `snapshot_every` (events) and `snapshot_kind`, and implementing `snapshot_state()` (its
    state as JSON) and `restore(state)`, has its state saved with its events (in the append's
    own statement) once that many events followed the last snapshot; loading it then reads the
    snapshot and only the events after it. Change `snapshot_kind` whenever `apply` or the
    state's shape change meaning: a snapshot of another kind is ignored (a full replay, and a
    new snapshot), as is one whose last event is no longer the stream's event at its
    version."""

    snapshot_every: int = 0
    snapshot_kind: str = ""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id
        self.version = 0
        self.pending: list[Event] = []
        self.snapshot_version = 0  # the version of the snapshot loaded or saved last
        self.loaded_event_id: uuid.UUID | None = None  # the stream's last event when loaded

    def snapshot_state(self) -> Any:  # pragma: no cover - overridden with snapshot_every
        raise TypeError(f"{type(self).__name__} takes no snapshots")

    def restore(self, state: Any) -> None:  # pragma: no cover - overridden with snapshot_every
        raise TypeError(f"{type(self).__name__} takes no snapshots")

    @classmethod
    def snapshot_key(cls) -> str | None:
        """What its snapshots are stored under (None: it takes none)."""
        return f"{cls.__qualname__}:{cls.snapshot_kind}" if cls.snapshot_every else None

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

    @classmethod
    def from_loaded(cls, stream_id: str, history: History) -> Self:
        """The aggregate from its snapshot (if any) and the events after it."""
        agg = cls(stream_id)
        if history.snapshot is not None:
            agg.restore(history.snapshot)
            agg.version = agg.snapshot_version = history.snapshot_version
        for event in history.events:
            agg.apply(event)
            agg.version += 1
        agg.loaded_event_id = history.last_event_id
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
    # (actor, route, key, owner) of the idempotent request this command runs for, until its
    # first append has marked the claim committed (shared.idempotency.recording)
    claim: tuple[str, str, str, uuid.UUID] | None = None

    async def load(self, cls: type[A], stream_id: str, *,
                   from_snapshot: bool = True) -> A | None:
        """The aggregate rebuilt from its stream (from its snapshot and the events after it;
        `from_snapshot=False`: from every event, for a decision that needs what a light
        snapshot leaves out), or None when the stream is empty. Writers of one stream queue on
        a transaction-scoped advisory lock instead of failing on each other: taken in the
        statement that reads the stream when it is free, else waited for and the stream read
        again."""
        kind = cls.snapshot_key() if from_snapshot else None
        histories = await self.store.read_histories(self.conn, [stream_id], snapshot_kind=kind,
                                                    try_lock=stream_id)
        if histories is None:  # another writer holds it: queue, then read what it wrote
            await lock_stream(self.conn, stream_id)
            histories = await self.store.read_histories(self.conn, [stream_id],
                                                        snapshot_kind=kind)
        assert histories is not None
        if stream_id not in histories:
            return None
        return cls.from_loaded(stream_id, histories[stream_id])

    async def load_many(self, cls: type[A], stream_ids: Iterable[str], *,
                        lock: bool = True) -> dict[str, A]:
        """The aggregates of the non-empty streams among `stream_ids` (empty ones are absent),
        read in one query after taking every stream's lock (`lock_streams`). `lock=False` is
        for a caller already excluding the streams' writers another way (too many streams for
        the lock table): an unexcluded writer makes `save_many` raise ConcurrencyError."""
        ids = sorted(set(stream_ids))
        if lock:
            await lock_streams(self.conn, ids)
        histories = await self.store.read_histories(self.conn, ids,
                                                    snapshot_kind=cls.snapshot_key())
        assert histories is not None
        return {s: cls.from_loaded(s, h) for s, h in histories.items()}

    async def save(self, agg: Aggregate) -> list[Envelope]:
        """Append the aggregate's pending events at the version it was loaded at (and its
        snapshot when one is due). Raises ConcurrencyError when its stream moved on."""
        events, snapshots = agg.pending, _snapshots_due([agg])
        envelopes = await self.store.append_many(
            self.conn, [(agg.stream_id, agg.version, events)], actor=self.actor,
            correlation_id=self.correlation_id, causation_id=self.causation_id,
            snapshots=snapshots, claim=self._claim(events))
        agg.pending = []
        agg.version += len(events)
        if agg.stream_id in snapshots:
            agg.snapshot_version = agg.version
        if self.projector and envelopes:
            await self.projector(self.conn, list(zip(envelopes, events, strict=True)))
        self.saved.extend(envelopes)
        return envelopes

    def _claim(self, events: Sequence[Event]) -> tuple[str, str, str, uuid.UUID] | None:
        """The claim for the append about to write `events` to mark committed (taken: the
        next appends need not), or None."""
        claim = self.claim if events else None
        if claim is not None:
            self.claim = None  # a failed append fails the whole transaction
        return claim

    async def save_many(self, aggregates: Iterable[Aggregate], *,
                        cause: Callable[[Event], uuid.UUID | None] | None = None
                        ) -> list[Envelope]:
        """Append every aggregate's pending events at the version it was loaded at, set-based
        (`EventStore.append_many`), and run the projector once over all of them, in the order
        given. `cause(event)`: each event's causation id when they differ (what many granted
        requests carried out), else the unit's. Raises ConcurrencyError when any stream moved
        on; nothing is written then."""
        aggs = [a for a in {id(a): a for a in aggregates}.values() if a.pending]
        snapshots = _snapshots_due(aggs)
        envelopes = await self.store.append_many(
            self.conn, [(a.stream_id, a.version, a.pending) for a in aggs], actor=self.actor,
            correlation_id=self.correlation_id, causation_id=self.causation_id, cause=cause,
            snapshots=snapshots, claim=self._claim([e for a in aggs for e in a.pending]))
        events = [e for a in aggs for e in a.pending]
        for agg in aggs:
            agg.version, agg.pending = agg.version + len(agg.pending), []
            if agg.stream_id in snapshots:
                agg.snapshot_version = agg.version
        if self.projector and envelopes:
            await self.projector(self.conn, list(zip(envelopes, events, strict=True)))
        self.saved.extend(envelopes)
        return envelopes


def _snapshots_due(aggs: Iterable[Aggregate]) -> dict[str, tuple[str, Any]]:
    """{stream id: (kind, state)} of the aggregates whose snapshot is due once their pending
    events are saved: written by the append's own statement (`EventStore.append_many`)."""
    due = {}
    for agg in aggs:
        if agg.snapshot_every and agg.version + len(agg.pending) - agg.snapshot_version \
                >= agg.snapshot_every:
            due[agg.stream_id] = (type(agg).snapshot_key() or "", agg.snapshot_state())
    return due


async def run_command(pool: asyncpg.Pool, store: EventStore, decide: Callable[[UnitOfWork], Awaitable[Any]],
                      *, actor: str, correlation_id: uuid.UUID | None = None,
                      projector: Projector | None = None, attempts: int = 8,
                      isolation: str | None = None) -> Any:
    """Run `decide(uow)` in one transaction and commit. On ConcurrencyError the transaction is
    rolled back and `decide` runs again on fresh state, up to `attempts` times; then the
    ConcurrencyError propagates. Domain errors propagate at once and nothing is written.
    `decide` changes nothing of the session beyond its transaction (no LISTEN, session SET or
    session advisory lock): in steady state a command is 4 statements (BEGIN, lock and read,
    write, COMMIT), without the pool's reset query."""
    correlation_id = correlation_id or uuid.uuid4()
    for attempt in range(attempts):
        try:
            async with pool.acquire() as conn:
                async with conn.transaction(isolation=isolation):
                    uow = UnitOfWork(conn, store, actor, correlation_id, projector=projector)
                    result = await decide(uow)
                # nothing outlives the transaction: the pool may skip its reset query
                # (shared.shedding.Connection)
                mark = getattr(conn, "transaction_only", None)
                if mark is not None:
                    mark()
                return result
        except (ConcurrencyError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
    raise AssertionError("unreachable")
