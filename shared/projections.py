"""Rebuilding a service's read models while it keeps running: shadow tables, then a short swap.

Guarantees:
- The live tables are not locked while the replay runs. The replay writes copies of them
  (`CREATE TABLE <shadow>.<t> (LIKE <t> INCLUDING ALL)` in a schema of its own) through the
  service's unchanged projection code: the rebuild's connection puts that schema first on its
  search_path, so unqualified table names resolve to the copies.
- One short transaction swaps them in: it takes `events` (and `inbox`) in SHARE mode, which
  waits for the writers in flight and holds off new ones, replays whatever was committed since
  the last catch-up, and moves the copies into place (same table, index and constraint names).
  Readers and writers wait for that transaction only; until it commits they see the old tables.
- Nothing committed is skipped, whatever the insert order. Own events are told apart by
  transaction visibility: a pass replays the events visible in its snapshot and not in the
  previous pass's (`pg_visible_in_snapshot` on `events.tx_id`: a set difference, never "after
  position N"). Consumed events are the inbox rows recorded as applied and not yet replayed (an
  anti-join on `consumed_log`, the inbox's unpruned record), read back from their topics at
  the offsets recorded. So the copies end up reflecting exactly what the live tables reflect.
- The replay runs the projection side only: the event store, outbox, inbox and the service
  tables that decide commands (uniqueness, caseloads: never listed in `tables`) are not
  written; a consumed-event projection that tries to append events fails the rebuild.
- Memory is flat in the number of events: own events are read in keyset pages of
  `batch_size` (by global position), consumed events in keyset pages of their log (by topic,
  partition, offset; the pending set is kept in a table of the shadow schema, not in memory),
  each page read back from its partition by one Kafka reader moving forward; each page is
  applied and committed before the next is applied. A projector marked `across_transactions`
  in the plan takes a whole page in one call (it keeps every stream's order itself), so
  set-based projectors write a page in a few statements; the next page is then read before
  the current one is written and decoded while the database writes it (at most two pages in
  memory). Batched consumer handlers (`shared.consumer.batched`) take each run of their events
  in one call.
- Time is linear in the number of events: the copies are analyzed as they grow (after the 1st,
  16th, 256th... page), so a page's set-based statement finds its rows by key instead of
  scanning a copy the planner takes for small. What the first pass writes costs the database
  little: indexes a plan names in `indexes_after_fill` (read-side ones no replayed statement
  reads by) are built once after it, not maintained row by row; tables it names in
  `updated_in_place` are filled half full, so their rows' updates stay on their pages (HOT);
  the pages' commits do not wait for the disk (the copies die with a crash anyway), the
  swap's does.
- A replayed own event comes to the projector as (envelope, typed event), the envelope without
  its payload (the typed event is the payload: parsing it twice was a third of the decoding);
  a projector reading `envelope.payload` fails loudly (`ReplayedPayload`).
- Consumed events are replayed before own events, in each pass. A plan that consumes topics
  must argue (next to its `consumed` mapping) that its result does not depend on how the two
  interleaved live; `scratch` tables are written by the replayed code but thrown away (records
  of what happened live, such as events that came late, which a replay cannot reproduce).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError

from shared.aggregate import Projector, UnitOfWork
from shared.consumer import AnyHandler, apply_handler, is_batched
from shared.envelope import (
    ContractError,
    Envelope,
    Event,
    current_version,
    decode_envelope,
    decode_wanted,
    event_class,
    parse_payload,
)
from shared.eventstore import EventStore, event_from_row

SHADOW = "tkm_rebuild"
RETIRED = "tkm_rebuild_retired"
REPLAYED = "_rebuild_replayed_inbox"
PENDING = "_rebuild_pending_consumed"
# what the consumer applied, kept by a trigger on the inbox (which is pruned): each consuming
# service's migration `NNN_consumed_log.sql` creates it
CONSUMED_LOG = "consumed_log"
# the swap waits this long for the writers in flight (only writers queue behind it meanwhile)
# and this long for the readers of the live tables (everyone queues behind it meanwhile), then
# gives way (a writer may be waiting for it while holding a read model) and tries again
SWAP_WRITERS_WAIT = "2s"
SWAP_READERS_WAIT = "200ms"
SWAP_ATTEMPTS = 20
# from this attempt on the readers' lock is waited for past the server's deadlock_timeout: an
# autovacuum worker holding a live table (after a big swap, say) is cancelled by the server only
# once a lock waiter has waited that long, so short waits alone would never get past it
SWAP_PATIENT_FROM = 4
FILL_FACTOR = 50  # percent of a page the first pass fills in `updated_in_place` tables
CATCH_UP_PASSES = 3  # unlocked catch-ups before the swap, while each still finds work


@dataclass(frozen=True)
class RebuildPlan:
    """What `tkm rebuild` replays for a service. `tables` are swapped in; `projector` projects
    the service's own events into them; `consumed` maps consumed event types to the projection
    side of their consumer handlers (no policies); `scratch` tables are written by that code
    but discarded."""

    tables: tuple[str, ...]
    projector: Projector | None = None
    consumed: Mapping[str, AnyHandler] = field(default_factory=dict)
    scratch: tuple[str, ...] = ()
    # the projector may be given a page of events spanning many transactions (in store order):
    # it keeps each stream's order itself
    across_transactions: bool = False
    # live index names (non-unique) that no replayed statement reads by: the copies get them
    # built once after the first pass instead of maintained row by row
    indexes_after_fill: tuple[str, ...] = ()
    # tables whose rows the replay updates again and again: their copies keep half of each page
    # free while the first pass fills them, so an update stays on its row's page and adds no
    # index entry (a HOT update: the keys never change and the other indexes wait for the fill)
    updated_in_place: tuple[str, ...] = ()


@dataclass
class RebuildStats:
    own_events: int = 0
    consumed_events: int = 0
    caught_up: int = 0  # of those, replayed after the first pass
    in_swap: int = 0  # of those, replayed inside the swap transaction
    replay_seconds: float = 0.0
    swap_seconds: float = 0.0
    swap_attempts: int = 0

    @property
    def replayed(self) -> int:
        return self.own_events + self.consumed_events


class RebuildError(Exception):
    """The rebuild cannot give the same answer as the live tables (nothing was swapped)."""


class _NoAppendStore(EventStore):
    async def append_many(self, *args, **kwargs):
        raise RebuildError("a rebuild replays projections only: a handler tried to append events")


RECORDSET_LIMIT = 64  # the largest LIMIT `recordset` writes (the estimate is 100 without one)


def recordset(columns: str, count: int) -> str:
    """A subquery of the rows of JSON parameter `$1` (a list of `count` objects, as `json_text`
    writes them) whose row count the planner knows; `columns` as `jsonb_to_recordset` takes
    them (`name type, ...`). Use it as `FROM <this> AS r` or `WITH r AS <this>`.

    Postgres estimates any `jsonb_to_recordset` at 100 rows, whatever its parameter holds, so a
    one-event batch joined to a table by key was planned as a hash join over a seq scan of the
    whole table (approval_requests: every grant read every approval ever made, 0.8 ms at 1,839
    requests and growing with the table). A LIMIT caps the estimate: `LIMIT 1` plans one row
    as a nested loop over the table's primary key. The LIMIT is the count rounded up to a power
    of two (at most twice the real count, never less: every row is returned), written as a
    literal, not as a parameter: a parameter's value is planned in custom plans only, which a
    prepared statement would then make on every run (a one-row custom plan always looks
    cheaper than the generic one), and that re-plan costs more than the old plans once a table
    is big enough for them to use the index (0.1 ms more per approvals update at 20,000
    requests, 0.24 ms more per mentoring report filed at 50,000 groups). A literal plans the
    same, custom or generic, so the statement keeps its plan; a statement has at most 8 texts
    (LIMIT 1, 2, 4 ... 64, none). Above RECORDSET_LIMIT rows no LIMIT is written: the
    estimate stays 100, as before."""
    limit = 1 << max(count - 1, 0).bit_length()
    return (f"(SELECT * FROM jsonb_to_recordset($1::jsonb) AS r({columns})"
            + (f" LIMIT {limit})" if limit <= RECORDSET_LIMIT else ")"))


async def rebuild(conn: asyncpg.Connection, projector: Projector, tables: Sequence[str], *,
                  batch_size: int = 2000) -> int:
    """Rebuild `tables` from the service's own events (see `rebuild_plan`). Returns the number of
    events replayed."""
    stats = await rebuild_plan(conn, RebuildPlan(tuple(tables), projector),
                               batch_size=batch_size)
    return stats.own_events


async def rebuild_plan(conn: asyncpg.Connection, plan: RebuildPlan, *,
                       topics: Sequence[str] = (), bootstrap: str | None = None,
                       kafka_options: Mapping[str, Any] | None = None,
                       batch_size: int = 2000) -> RebuildStats:
    """Replay `plan` into shadow copies of its tables and swap them in (module docstring).
    Consumed events are read from `topics` on the Kafka cluster at `bootstrap` (with
    `kafka_options` for the consumer, e.g. its authentication, by default the environment's
    plain `KAFKA_*` settings of shared.kafka_security); it joins no group. Raises
    RebuildError when another rebuild of this database runs, or an applied event cannot be
    found on its topic; the live tables are untouched then."""
    if plan.consumed and not (topics and bootstrap):
        raise ValueError("a plan with consumed events needs the topics and a bootstrap server")
    if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('tkm-rebuild'))"):
        raise RebuildError("another rebuild of this database is running")
    live_schema = await conn.fetchval("SELECT current_schema()")
    search_path = await conn.fetchval("SHOW search_path")
    synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
    if plan.consumed and not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                                 CONSUMED_LOG):
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tkm-rebuild'))")
        raise RebuildError(f"no {CONSUMED_LOG} table: the service's migrations have not run")
    run = _Run(conn, plan, live_schema, tuple(topics) if plan.consumed else (), bootstrap,
               batch_size, dict(_kafka_options() if kafka_options is None and plan.consumed
                                else kafka_options or {}))
    try:
        deferred = await _create_shadow(conn, live_schema, plan)
        await conn.execute(f"SET search_path = {SHADOW}, {_quoted(live_schema)}")
        started = time.perf_counter()
        # the pages write only the copies, which a crash throws away with the rebuild: their
        # commits need not wait for the disk (the swap's does, and so everything before it)
        await conn.execute("SET synchronous_commit = off")
        with _fewer_collections():
            await run.catch_up()
            await _after_fill(conn, plan, deferred)
            run.stats.caught_up = 0
            for _ in range(CATCH_UP_PASSES):
                if not await run.catch_up():
                    break
        await run.analyze()
        run.stats.replay_seconds = time.perf_counter() - started
        await conn.execute(f"SET synchronous_commit = {_quoted_setting(synchronous_commit)}")
        await run.swap()
        return run.stats
    finally:
        await conn.execute(f"SET synchronous_commit = {_quoted_setting(synchronous_commit)}")
        await conn.execute(f"SET search_path = {search_path}")
        await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
        await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED} CASCADE")
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tkm-rebuild'))")


async def _create_shadow(conn: asyncpg.Connection, live: str, plan: RebuildPlan) -> list[str]:
    """The shadow schema and its copies; returns the definitions of the indexes left out of
    the copies until the first pass has filled them (`RebuildPlan.indexes_after_fill`)."""
    # what a crashed rebuild left is thrown away: nothing outside these schemas refers to it
    await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
    await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED} CASCADE")
    await conn.execute(f"CREATE SCHEMA {SHADOW}")
    deferred: list[str] = []
    for table in (*plan.tables, *plan.scratch):
        await conn.execute(f"CREATE TABLE {SHADOW}.{_quoted(table)} "
                           f"(LIKE {_quoted(live)}.{_quoted(table)} INCLUDING ALL)")
        if table in plan.updated_in_place:
            await conn.execute(f"ALTER TABLE {SHADOW}.{_quoted(table)} "
                               f"SET (fillfactor = {FILL_FACTOR})")
        if table not in plan.tables or not plan.indexes_after_fill:
            continue
        live_names = {key: name for key, name in (await _indexes(conn, live, table)).items()
                      if name in plan.indexes_after_fill}
        for key, name in (await _indexes(conn, SHADOW, table)).items():
            if key in live_names:
                if key.startswith("UNIQUE"):  # a constraint: a replayed write may rely on it
                    raise ValueError(f"{live_names[key]} is unique: it cannot wait for the fill")
                deferred.append(await conn.fetchval(
                    "SELECT pg_get_indexdef($1::text::regclass)",
                    f"{SHADOW}.{_quoted(name)}"))
                await conn.execute(f"DROP INDEX {SHADOW}.{_quoted(name)}")
    await conn.execute(f"CREATE TABLE {SHADOW}.{REPLAYED} (event_id uuid PRIMARY KEY)")
    return deferred


async def _after_fill(conn: asyncpg.Connection, plan: RebuildPlan,
                      definitions: Sequence[str]) -> None:
    # one sort of the filled table instead of an insertion per row version
    for definition in definitions:
        await conn.execute(definition)
    # the live tables' own setting (none) from here on: what the first pass left free on its
    # pages takes the later updates, live ones included
    for table in plan.updated_in_place:
        if table in plan.tables or table in plan.scratch:
            await conn.execute(f"ALTER TABLE {SHADOW}.{_quoted(table)} RESET (fillfactor)")


_replaying: list[tuple[int, int, int]] = []  # the thresholds before, once per replay running


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The cyclic garbage collector run less often while pages are replayed: a page's records
    and events hold no cycles (they go when their page does), but allocating them ran a
    collection every 700 objects, and a full one, over every object of the process, every
    few pages (a fifth of the replay's CPU). The process's own thresholds are back when the
    last replay running in it ends."""
    _replaying.append(gc.get_threshold())
    first = _replaying[0]
    gc.set_threshold(max(first[0], 50_000), *first[1:])
    try:
        yield
    finally:
        _replaying.pop()
        if not _replaying:
            gc.set_threshold(*first)


class _Run:
    def __init__(self, conn: asyncpg.Connection, plan: RebuildPlan, live: str,
                 topics: tuple[str, ...], bootstrap: str | None, batch_size: int,
                 kafka_options: dict[str, Any]):
        self.conn, self.plan, self.live, self.topics = conn, plan, live, topics
        self.bootstrap, self.batch_size, self.kafka_options = bootstrap, batch_size, kafka_options
        self.snapshot: str | None = None  # own events visible in it are replayed
        self.stats = RebuildStats()
        self.pages = 0  # committed outside the swap

    async def catch_up(self, *, in_swap: bool = False) -> int:
        """Replay what the last pass did not: consumed events first, then own events. Outside
        the swap each batch commits on its own (no long transaction holds back the server)."""
        snapshot = await self.conn.fetchval("SELECT pg_current_snapshot()::text")
        consumed = await self._replay_consumed(in_swap)
        own = await self._replay_own(self.snapshot, snapshot, in_swap)
        self.snapshot = snapshot
        self.stats.caught_up += consumed + own
        return consumed + own

    async def _replay_own(self, previous: str | None, current: str, in_swap: bool) -> int:
        if self.plan.projector is None:
            return 0
        # visible now and not in the previous pass's snapshot: committed in between, whatever
        # its position (a transaction may take a position early and commit late)
        where = "pg_visible_in_snapshot(tx_id, $2::text::pg_snapshot)"
        args: list = [current]
        if previous is not None:
            where += (" AND tx_id >= pg_snapshot_xmin($3::text::pg_snapshot)"
                      " AND NOT pg_visible_in_snapshot(tx_id, $3::text::pg_snapshot)")
            args.append(previous)
        sql = (f"SELECT * FROM {_quoted(self.live)}.events WHERE global_position > $1 "
               f"AND {where} ORDER BY global_position LIMIT {self.batch_size}")
        if self.plan.across_transactions:
            replayed = await self._replay_pages(sql, args, in_swap)
        else:
            position, replayed = 0, 0
            while True:
                async with self.conn.transaction():
                    rows = await self.conn.fetch(sql, position, *args)
                    if not rows:
                        break
                    # one call per transaction's run of events, as live (a projector may group
                    # a call's events by type, trusting that one save never records them out
                    # of order)
                    for _, run in itertools.groupby(rows, key=lambda r: r["tx_id"]):
                        await self.plan.projector(self.conn, [_replayed(r) for r in run])
                position, replayed = rows[-1]["global_position"], replayed + len(rows)
        self.stats.own_events += replayed
        if in_swap:
            self.stats.in_swap += replayed
        return replayed

    async def _replay_pages(self, sql: str, args: list, in_swap: bool) -> int:
        """Own events a page per call of an `across_transactions` projector, each page in a
        transaction of its own. The next page is read first (the same connection) and decoded
        in a task while the projector's statements run: the decoding's CPU overlaps the
        database's writing instead of following it. The copies are analyzed after the 1st,
        16th, 256th... page: a set-based statement joins a page's keys to a copy, and without
        statistics the planner misjudges its rows per page (a third of them, for the groups
        registry) and scans a copy of up to some 60,000 rows whole for every statement; with
        them it scales the count by the copy's current size itself."""
        assert self.plan.projector is not None
        rows = await self.conn.fetch(sql, 0, *args)
        position = rows[-1]["global_position"] if rows else 0
        items = await _decoded(rows)
        del rows
        replayed = 0
        spent: list[Any] = []  # the page written last
        while items:
            async with self.conn.transaction():
                following = await self.conn.fetch(sql, position, *args)
                if following:
                    position = following[-1]["global_position"]
                # the decoding task alone holds the records (freed as it ends) and the page
                # written last (freed on its first turn, while the projector's first statement
                # runs): freeing them overlaps the writing instead of coming between pages
                decoding = asyncio.ensure_future(_decoded(following, spent))
                del following
                spent = []
                try:
                    await self.plan.projector(self.conn, items)
                except BaseException:
                    decoding.cancel()
                    raise
                after = await decoding
            replayed += len(items)
            spent.append(items)
            items = after
            if not in_swap:
                self.pages += 1
                if self.pages & (self.pages - 1) == 0 and self.pages.bit_length() % 4 == 1:
                    await self.analyze()  # after the 1st, 16th, 256th... page
        return replayed

    async def analyze(self) -> None:
        for table in self.plan.tables:
            await self.conn.execute(f"ANALYZE {SHADOW}.{_quoted(table)}")

    async def _replay_consumed(self, in_swap: bool) -> int:
        if not self.topics:
            return 0
        # applied live and not replayed yet: the anti-join is the set difference, kept in a
        # table (indexed for the keyset pages) rather than in memory. Each partition's events
        # in its order; across partitions and topics the plan's argument says the order does
        # not matter
        await self.conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{PENDING}")
        pending = await self.conn.execute(
            f"CREATE UNLOGGED TABLE {SHADOW}.{PENDING} AS "
            f"SELECT event_id, topic, kafka_partition, kafka_offset "
            f"FROM {_quoted(self.live)}.{CONSUMED_LOG} i WHERE outcome = 'applied' "
            f"AND topic = ANY($1) AND NOT EXISTS "
            f"(SELECT 1 FROM {SHADOW}.{REPLAYED} r WHERE r.event_id = i.event_id)",
            list(self.topics))
        if pending.endswith(" 0"):
            return 0
        await self.conn.execute(f"CREATE INDEX ON {SHADOW}.{PENDING} "
                                "(topic, kafka_partition, kafka_offset)")
        replayed = 0
        reader = _PartitionReader(self.bootstrap or "", self.kafka_options, self.plan.consumed)
        store = _NoAppendStore("rebuild")
        try:
            after: tuple[str, int, int] = ("", -1, -1)
            while True:
                rows = await self.conn.fetch(
                    f"SELECT event_id, topic, kafka_partition, kafka_offset "
                    f"FROM {SHADOW}.{PENDING} WHERE (topic, kafka_partition, kafka_offset) > "
                    f"($1, $2, $3) ORDER BY topic, kafka_partition, kafka_offset "
                    f"LIMIT {self.batch_size}", *after)
                if not rows:
                    break
                found = await reader.read(rows)
                missing = [r["event_id"] for r in rows if r["event_id"] not in found]
                if missing:
                    raise RebuildError(f"{len(missing)} applied events are not on their topics "
                                       f"at the offsets recorded (first: {missing[0]})")
                async with self.conn.transaction():
                    await self._apply_consumed(store, [found[r["event_id"]] for r in rows])
                    await self.conn.execute(
                        f"INSERT INTO {SHADOW}.{REPLAYED} SELECT unnest($1::uuid[])",
                        [r["event_id"] for r in rows])
                replayed += len(rows)
                last = rows[-1]
                after = (last["topic"], last["kafka_partition"], last["kafka_offset"])
        finally:
            await reader.stop()
        self.stats.consumed_events += replayed
        if in_swap:
            self.stats.in_swap += replayed
        return replayed

    async def _apply_consumed(self, store: EventStore, page: list[tuple[Any, Any]]) -> None:
        """A page's events in order: each run of one batched handler in one call."""
        runs: list[tuple[AnyHandler, list[tuple[Any, Any]]]] = []
        for envelope, event in page:
            handler = self.plan.consumed.get(envelope.event_type)
            if handler is None:
                continue
            if runs and is_batched(handler) and runs[-1][0] is handler:
                runs[-1][1].append((envelope, event))
            else:
                runs.append((handler, [(envelope, event)]))
        for handler, items in runs:
            first = items[0][0]
            uow = UnitOfWork(self.conn, store, "system:rebuild", first.correlation_id,
                             causation_id=first.event_id)
            await apply_handler(handler, uow, items)

    async def swap(self) -> None:
        """Lock out the writers, replay the last events, move the copies into place. Retried
        when a lock is not granted in time (a long writer or reader, or a writer holding a read
        model while it waits for `events`) or a deadlock is broken against us; nothing of a
        failed attempt remains."""
        live, tables = _quoted(self.live), [_quoted(t) for t in self.plan.tables]
        # the inbox first: a consumer batch claims its inbox rows before it appends events
        writers = (f"{live}.inbox, " if self.topics else "") + f"{live}.events"
        patient = await self.conn.fetchval(
            "SELECT ((extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000)"
            "::int + 500)::text || 'ms'")
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            readers_wait = SWAP_READERS_WAIT if attempt < SWAP_PATIENT_FROM else patient
            started = time.perf_counter()
            saved = (self.snapshot, self.stats.own_events, self.stats.consumed_events,
                     self.stats.caught_up, self.stats.in_swap)
            try:
                async with self.conn.transaction():
                    await self.conn.execute(f"SET LOCAL lock_timeout = '{SWAP_WRITERS_WAIT}'")
                    # SHARE waits for the transactions inserting events (or inbox rows) to
                    # commit and holds off new ones until the swap commits
                    await self.conn.execute(f"LOCK TABLE {writers} IN SHARE MODE")
                    await self.conn.execute(f"SET LOCAL lock_timeout = '{readers_wait}'")
                    await self.conn.execute(
                        "LOCK TABLE " + ", ".join(f"{live}.{t}" for t in tables)
                        + " IN ACCESS EXCLUSIVE MODE")
                    await self.conn.execute("SET LOCAL lock_timeout = 0")
                    await self.catch_up(in_swap=True)
                    await self._move()
                self.stats.swap_seconds = time.perf_counter() - started
                self.stats.swap_attempts = attempt
                return
            except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
                (self.snapshot, self.stats.own_events, self.stats.consumed_events,
                 self.stats.caught_up, self.stats.in_swap) = saved
                if attempt == SWAP_ATTEMPTS:
                    raise
                await self.catch_up()  # keep the next attempt's share small

    async def _move(self) -> None:
        live = _quoted(self.live)
        await self.conn.execute(f"CREATE SCHEMA {RETIRED}")
        for table in self.plan.tables:
            old = await _indexes(self.conn, self.live, table)
            new = await _indexes(self.conn, SHADOW, table)
            await self.conn.execute(f"ALTER TABLE {live}.{_quoted(table)} SET SCHEMA {RETIRED}")
            await self.conn.execute(f"ALTER TABLE {SHADOW}.{_quoted(table)} SET SCHEMA {live}")
            # LIKE names the copies' indexes itself: give them the live names back (in two
            # steps, so no name is taken twice on the way)
            renames = [(name, old[key]) for key, name in new.items()
                       if key in old and old[key] != name]
            for i, (name, _) in enumerate(renames):
                await self.conn.execute(f"ALTER INDEX {live}.{_quoted(name)} "
                                        f"RENAME TO {_quoted(f'_rebuild_{i}')}")
            for i, (_, target) in enumerate(renames):
                await self.conn.execute(f"ALTER INDEX {live}.{_quoted(f'_rebuild_{i}')} "
                                        f"RENAME TO {_quoted(target)}")


_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)


class ReplayedPayload:
    """The payload of a replayed own event's envelope: not parsed (its typed event, beside it,
    is the payload). Reading it raises instead of answering empty; it is no dict, so neither
    `json.dumps` nor `dict()` takes it for an empty one."""

    __slots__ = ()

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("a replayed envelope carries no payload: read the typed event "
                           "handed beside it (shared.projections._replayed)")

    __getitem__ = __iter__ = __len__ = __contains__ = get = keys = items = values = _refuse
    copy = _refuse

    def __repr__(self) -> str:
        return "<replayed: see the typed event>"


_REPLAYED_PAYLOAD = ReplayedPayload()  # holds nothing: one serves every envelope
_DECODE_SLICE = 250  # rows decoded between two turns of the event loop


async def _decoded(rows: Sequence[asyncpg.Record],
                   spent: list[Any] | None = None) -> list[tuple[Envelope, Event]]:
    """`_replayed` of each row, yielding to the event loop between slices (so a projector's
    statements are sent as soon as the database answers the one before). What `spent` holds
    is let go first."""
    if spent:
        spent.clear()
    out: list[tuple[Envelope, Event]] = []
    validators: dict[tuple[str, int], Any] = {}
    for start in range(0, len(rows), _DECODE_SLICE):
        out.extend(_replayed(r, validators) for r in rows[start:start + _DECODE_SLICE])
        await asyncio.sleep(0)
    return out


_set = object.__setattr__
_new_envelope = Envelope.__new__


def _replayed(row: asyncpg.Record,
              validators: dict[tuple[str, int], Any] | None = None) -> tuple[Envelope, Event]:
    """(envelope, event) of a stored row, as `envelope_from_row` and `event_from_row` give them,
    without pydantic's construction machinery (rows were validated when written; a replay of a
    million events is mostly this). `validators` remembers, for one page, each (type, version)'s
    validator (None: not the current version, upcast by `event_from_row`)."""
    event_type, version = row["event_type"], row["schema_version"]
    validators = {} if validators is None else validators
    key = (event_type, version)
    if key not in validators:
        validators[key] = (event_class(event_type).__pydantic_validator__
                           if version == current_version(event_type) else None)
    validator = validators[key]
    event: Event | None = None
    if validator is not None:
        try:
            event = validator.validate_json(row["payload"])
        except ValidationError:  # event_from_row below names the error
            pass
    if event is None:
        event = event_from_row(row)
    envelope = _new_envelope(Envelope)
    _set(envelope, "__dict__", {
        "event_id": row["event_id"], "event_type": event_type, "schema_version": version,
        "occurred_at": row["occurred_at"], "stream_id": row["stream_id"],
        "stream_version": row["stream_version"], "correlation_id": row["correlation_id"],
        "causation_id": row["causation_id"], "producer": "store", "actor": row["actor"],
        "payload": _REPLAYED_PAYLOAD})
    _set(envelope, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    _set(envelope, "__pydantic_extra__", None)
    _set(envelope, "__pydantic_private__", None)
    return envelope, event


_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ (USING .*)$")


async def _indexes(conn: asyncpg.Connection, schema: str, table: str) -> dict[str, str]:
    """The table's indexes by their definition without names: {definition: index name}."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(c.oid) AS def FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = $1::text::regclass",
        f"{_quoted(schema)}.{_quoted(table)}")
    named = {}
    for row in rows:
        match = _INDEX_DEF.match(row["def"])
        if match:
            named[(match.group(1) or "") + match.group(2)] = row["relname"]
    return named


def _kafka_options() -> dict[str, Any]:
    from shared.kafka_security import kafka_security

    return kafka_security().consumer_kwargs()


class _PartitionReader:
    """Reads pages of consumed-log rows back from their partitions with one Kafka consumer (it
    joins no group), moving forward: a page starting where the last one stopped goes on from
    there without a seek, and what was fetched beyond a page waits for the next one. Holds at
    most one fetch beyond the page."""

    IDLE_S = 30.0  # no record for this long: what is still missing is reported by the caller

    def __init__(self, bootstrap: str, options: dict[str, Any], wanted: Mapping[str, Any]):
        self.bootstrap, self.options, self.wanted = bootstrap, options, wanted
        self.consumer: Any = None
        self.tp: Any = None
        self.ahead: list[Any] = []  # records fetched beyond the last page, in offset order
        self.next_offset = -1  # where the consumer's next fetch starts

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def read(self, rows: Sequence[asyncpg.Record]) -> dict[uuid.UUID, tuple[Any, Any]]:
        """{event_id: (envelope, event or None)} for the rows (in the order of their partition
        and offset), read between their lowest and highest offset of each partition (a record
        elsewhere is not the one applied)."""
        from aiokafka import TopicPartition

        found: dict[uuid.UUID, tuple[Any, Any]] = {}
        for (topic, partition), part in itertools.groupby(
                rows, key=lambda r: (r["topic"], r["kafka_partition"])):
            part = list(part)
            await self._read_range(TopicPartition(topic, partition), part[0]["kafka_offset"],
                                   part[-1]["kafka_offset"], {r["event_id"] for r in part},
                                   found)
        return found

    async def _read_range(self, tp: Any, low: int, high: int, ids: set[uuid.UUID],
                          found: dict) -> None:
        await self._position(tp, low)
        idle_since = time.monotonic()
        while True:
            if self.ahead:
                records, self.ahead = self.ahead, []
            else:
                batches = await self.consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                records = batches.get(tp, [])
                if not records:
                    if time.monotonic() - idle_since > self.IDLE_S:
                        return
                    continue
                idle_since = time.monotonic()
                self.next_offset = records[-1].offset + 1
            for n, record in enumerate(records):
                if record.offset < low:
                    continue
                if record.offset > high:
                    self.ahead = records[n:]
                    return
                self._decode(record, ids, found)
            if records[-1].offset >= high:
                return

    async def _position(self, tp: Any, low: int) -> None:
        from aiokafka import AIOKafkaConsumer

        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", client_id=f"tkm-rebuild-{uuid.uuid4().hex[:8]}",
                **self.options)
            await self.consumer.start()
        start = self.ahead[0].offset if self.ahead else self.next_offset
        if tp == self.tp and 0 <= start <= low:
            return  # going on forward from where the last page stopped
        if tp != self.tp:
            self.consumer.assign([tp])
            self.tp = tp
        self.consumer.seek(tp, low)
        self.ahead, self.next_offset = [], low

    def _decode(self, record: Any, ids: set[uuid.UUID], found: dict) -> None:
        fast = decode_wanted(record.value, self.wanted)
        if fast is not None:
            if fast[0].event_id in ids:
                found.setdefault(fast[0].event_id, fast)
            return
        try:
            envelope = decode_envelope(record.value)
        except ContractError:
            return  # dead-lettered live, never applied: not wanted here
        if envelope.event_id in ids and envelope.event_id not in found:
            found[envelope.event_id] = (
                envelope, parse_payload(envelope) if envelope.event_type in self.wanted else None)


def _quoted_setting(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {name!r}")
    return f'"{name}"'
