"""Postgres event store with a transactional outbox, and versioned migrations.

Guarantees:
- `append` (one stream) and `append_many` (many streams, set-based) write new events and, for
  events that have a topic, their outbox rows in the caller's transaction: all commit or none do.
- A stream's versions are gapless; appending at a stale expected version raises
  `ConcurrencyError` and writes nothing, for any stream of an `append_many` (the unique
  (stream_id, stream_version) key decides races).
- `read_all` follows (transaction id, position) and only returns rows of transactions older than
  every transaction still in flight, so a late-committing transaction is never skipped. Postgres
  transaction ids are server-wide: a long transaction in another database on the same server
  delays what `read_all` returns (never skips it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from shared.idempotency import SCHEMA as IDEMPOTENCY_SCHEMA
from shared.idempotency import ClaimLostError, marking_claim
from shared.idempotency import SCHEMA_2 as IDEMPOTENCY_SCHEMA_2
from shared.rules import RULES_SCHEMA
from shared.envelope import (
    Envelope,
    Event,
    current_version,
    encode,
    event_class,
    json_text,
    parse_payload,
    utcnow,
)

KERNEL_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    global_position bigserial PRIMARY KEY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    stream_version integer NOT NULL,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    correlation_id uuid NOT NULL,
    causation_id uuid,
    actor text NOT NULL,
    payload jsonb NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX IF NOT EXISTS events_tx_order ON events (tx_id, global_position);
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    message_key text NOT NULL,
    event_id uuid,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS inbox (
    event_id uuid PRIMARY KEY,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    outcome text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"""
# a row the broker can never take (too large) is set aside with the reason instead of
# blocking every row behind it
KERNEL_SCHEMA_2 = """
ALTER TABLE outbox ADD COLUMN failed_reason text;
DROP INDEX IF EXISTS outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND failed_reason IS NULL;
"""
# what shared.housekeeping prunes, found without scanning the tables (built once at start-up;
# on a large existing outbox that start takes a little longer)
KERNEL_SCHEMA_3 = """
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at)
    WHERE sent_at IS NOT NULL AND failed_reason IS NULL;
CREATE INDEX IF NOT EXISTS inbox_prunable ON inbox (processed_at)
    WHERE outcome IN ('applied', 'ignored');
"""
# the outbox relay's leadership: a lease with a fencing token, not a session lock a frozen
# process could hold for ever (shared.outbox)
KERNEL_SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS relay_lease (
    service text PRIMARY KEY,
    holder text,
    fencing_token bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
"""
# an aggregate's state at a version, so that loading it reads only the events after that
# version (shared.aggregate: aggregates with `snapshot_every`); `kind` names the aggregate class
# and the shape of its state, `event_id` the event at `version`: a snapshot whose kind or event
# does not match the stream is never used
KERNEL_SCHEMA_5 = """
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id text PRIMARY KEY,
    kind text NOT NULL,
    version integer NOT NULL,
    event_id uuid NOT NULL,
    state jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
"""
OUTBOX_CHANNEL = "tkm_outbox"

# one statement per append (`EventStore.append_many`): the first stream not at its expected
# version, if any (then nothing is inserted); else the events and their outbox rows, in the
# order given, the snapshots of the streams that take one (an older one replaced), and the
# relay's wake-up (delivered at commit)
_APPEND_CTES = """
WITH stale AS MATERIALIZED (
    SELECT s, actual FROM (
        SELECT x.s, x.v, coalesce((SELECT max(stream_version) FROM events
                                   WHERE stream_id = x.s), 0) AS actual
        FROM unnest($11::text[], $12::int[]) AS x(s, v)) AS c
    WHERE actual <> v LIMIT 1),
ev AS (
    INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                        occurred_at, correlation_id, causation_id, actor, payload)
    SELECT e, s, v, t, sv, $6, $7, c, $9, p
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $10::jsonb[],
                $8::uuid[])
         WITH ORDINALITY AS u(e, s, v, t, sv, p, c, n)
    WHERE NOT EXISTS (SELECT 1 FROM stale) ORDER BY n),
ob AS (
    INSERT INTO outbox (topic, message_key, event_id, value)
    SELECT t, k, e, v FROM unnest($13::text[], $14::text[], $15::uuid[], $16::bytea[])
         WITH ORDINALITY AS u(t, k, e, v, n)
    WHERE NOT EXISTS (SELECT 1 FROM stale) ORDER BY n),
sn AS (
    INSERT INTO snapshots AS n (stream_id, kind, version, event_id, state)
    SELECT s, k, v, e, st FROM unnest($18::text[], $19::text[], $20::int[], $21::uuid[],
                                      $22::jsonb[]) AS u(s, k, v, e, st)
    WHERE NOT EXISTS (SELECT 1 FROM stale) ORDER BY s
    ON CONFLICT (stream_id) DO UPDATE SET kind = excluded.kind, version = excluded.version,
        event_id = excluded.event_id, state = excluded.state, taken_at = now()
    WHERE n.version < excluded.version OR n.kind <> excluded.kind)"""
_APPEND_RESULT = """
SELECT (SELECT s FROM stale) AS stale, (SELECT actual FROM stale) AS actual,
       CASE WHEN cardinality($13::text[]) > 0 AND NOT EXISTS (SELECT 1 FROM stale)
            THEN pg_notify($17, '') END"""
_APPEND_SQL = _APPEND_CTES + _APPEND_RESULT
# the same, also marking the claim of the idempotent request whose command this is ($23-$26:
# actor, route, key, owner) committed (shared.idempotency.recording), instead of a statement
# of its own; `claimed` is 0 when a retry took the claim over meanwhile
_APPEND_CLAIMING_SQL = (
    _APPEND_CTES + ",\n"
    + marking_claim("$23", "$24", "$25", "$26", guard="NOT EXISTS (SELECT 1 FROM stale)")
    + "\nSELECT (SELECT count(*) FROM ef) AS claimed," + _APPEND_RESULT.removeprefix("\nSELECT"))


class ConcurrencyError(Exception):
    """The stream moved on since it was loaded: reload and decide again."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None):
        super().__init__(f"stream {stream_id} is not at version {expected} (now {actual})")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


@dataclass
class History:
    """A stream as its aggregate loads it: the snapshot's state it starts from (None: the
    stream's beginning) and the events after it; `version` and `last_event_id` are the
    stream's last."""

    events: list[Event]
    version: int
    snapshot: Any = None
    snapshot_version: int = 0
    last_event_id: uuid.UUID | None = None


# one statement: the optional try-lock ($3), the snapshot of kind $2 whose event is still the
# stream's event at its version, and the events after it (part 0: a row saying the lock was
# taken by another transaction)
_HISTORY_SQL = """
WITH l AS MATERIALIZED (
    SELECT CASE WHEN $3::text IS NULL THEN true
                ELSE pg_try_advisory_xact_lock(hashtextextended($3::text, 0)) END AS locked),
s AS MATERIALIZED (
    SELECT n.stream_id, n.version, n.event_id, n.state FROM snapshots n
    WHERE n.stream_id = ANY($1::text[]) AND n.kind = $2::text AND (SELECT locked FROM l)
      AND EXISTS (SELECT 1 FROM events e WHERE e.stream_id = n.stream_id
                  AND e.stream_version = n.version AND e.event_id = n.event_id))
SELECT 0 AS part, NULL::text AS stream_id, NULL::int AS stream_version,
       NULL::text AS event_type, NULL::int AS schema_version, NULL::text AS payload,
       NULL::uuid AS event_id
WHERE NOT (SELECT locked FROM l)
UNION ALL
SELECT 1, stream_id, version, NULL, NULL, state::text, event_id FROM s
UNION ALL
SELECT 2, e.stream_id, e.stream_version, e.event_type, e.schema_version, e.payload::text,
       e.event_id
FROM events e LEFT JOIN s ON s.stream_id = e.stream_id
WHERE e.stream_id = ANY($1::text[]) AND (SELECT locked FROM l)
  AND e.stream_version > coalesce(s.version, 0)
ORDER BY part, stream_id, stream_version
"""
# the same for one stream (what every single command loads): `stream_id = $1` instead of
# `= ANY($1)`. Postgres then plans it once for every call (a generic plan). With an array of
# unknown length the generic plan's estimate is several times the custom plan's for one id, so
# the server planned the statement again at every call, about half a millisecond a command
# (bench, issue 16); pg_prepared_statements shows which plans a statement gets.
_HISTORY_ONE_SQL = _HISTORY_SQL.replace("= ANY($1::text[])", "= $1::text")


@dataclass(frozen=True)
class Recorded:
    position: int
    envelope: Envelope


async def migrate(conn: asyncpg.Connection, component: str, migrations: Path | None = None) -> list[str]:
    """Apply the kernel schema and then `migrations/NNN_name.sql` files not applied yet, each in
    its own transaction, under an advisory lock so concurrent starts apply each file once.
    Returns the names applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock(hashtext('tkm-migrations'))")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component text, version integer, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (component, version))")
        steps = [("kernel", 1, "event store, outbox, inbox", KERNEL_SCHEMA),
                 ("kernel", 2, "outbox rows the broker refuses", KERNEL_SCHEMA_2),
                 ("kernel", 3, "indexes for pruning outbox and inbox", KERNEL_SCHEMA_3),
                 ("kernel", 4, "outbox relay lease", KERNEL_SCHEMA_4),
                 ("kernel", 5, "aggregate snapshots", KERNEL_SCHEMA_5),
                 ("idempotency", 1, "Idempotency-Key claims and answers", IDEMPOTENCY_SCHEMA),
                 ("idempotency", 2, "a committed claim is never taken over", IDEMPOTENCY_SCHEMA_2),
                 ("rules", 1, "programme rules per year (shared.rules)", RULES_SCHEMA)]
        for path in sorted(migrations.glob("*.sql")) if migrations else []:
            number = int(path.name.split("_", 1)[0])
            steps.append((component, number, path.stem, path.read_text()))
        applied_now = await _apply_steps(conn, steps)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tkm-migrations'))")
    return applied_now


async def apply_steps(conn: asyncpg.Connection,
                      steps: Sequence[tuple[str, int, str, str]]) -> list[str]:
    """Apply the (component, version, name, sql) steps not applied yet, each in its own
    transaction, under the migrations' advisory lock (after `migrate`: `schema_migrations`
    exists). A kernel module with tables of its own (audit, privacy) migrates through it.
    Returns the names applied now, `component:name`."""
    await conn.execute("SELECT pg_advisory_lock(hashtext('tkm-migrations'))")
    try:
        return await _apply_steps(conn, steps)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tkm-migrations'))")


async def _apply_steps(conn: asyncpg.Connection,
                       steps: Sequence[tuple[str, int, str, str]]) -> list[str]:
    applied_now: list[str] = []
    done = {(r["component"], r["version"]) for r in
            await conn.fetch("SELECT component, version FROM schema_migrations")}
    for comp, version, name, sql in steps:
        if (comp, version) in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (component, version, name) "
                               "VALUES ($1, $2, $3)", comp, version, name)
        applied_now.append(f"{comp}:{name}")
    return applied_now


class EventStore:
    def __init__(self, producer: str):
        self.producer = producer

    async def append(self, conn: asyncpg.Connection, stream_id: str, expected_version: int,
                     events: Sequence[Event], *, actor: str, correlation_id: uuid.UUID,
                     causation_id: uuid.UUID | None = None) -> list[Envelope]:
        """Append `events` after `expected_version` inside the caller's open transaction.
        Raises ConcurrencyError when the stream is elsewhere; RuntimeError outside a transaction."""
        return await self.append_many(conn, [(stream_id, expected_version, events)], actor=actor,
                                      correlation_id=correlation_id, causation_id=causation_id)

    async def append_many(self, conn: asyncpg.Connection,
                          items: Sequence[tuple[str, int, Sequence[Event]]], *, actor: str,
                          correlation_id: uuid.UUID,
                          causation_id: uuid.UUID | None = None,
                          cause: Callable[[Event], uuid.UUID | None] | None = None,
                          snapshots: Mapping[str, tuple[str, Any]] | None = None,
                          claim: tuple[str, str, str, uuid.UUID] | None = None
                          ) -> list[Envelope]:
        """Append each item's events after its expected version, all or nothing, inside the
        caller's open transaction, in one statement. Returns the envelopes in item order.
        `cause(event)`, when given, is each event's causation id (one statement may carry what
        many requests caused), else `causation_id` for all. `snapshots`: {stream id: (kind,
        JSON state)} of streams whose state after these events is kept as their snapshot
        (shared.aggregate), written by the same statement. `claim`: (actor, route, key, owner)
        of the idempotent request whose command this is, marked committed by the same statement
        (shared.idempotency.recording). Raises ConcurrencyError when any stream is elsewhere
        (nothing is written), ClaimLostError when the claim was taken over, ValueError when a
        stream appears twice, RuntimeError outside a transaction."""
        if not conn.is_in_transaction():
            raise RuntimeError("append must run inside a transaction")
        items = [(s, v, events) for s, v, events in items if events]
        if not items:
            return []
        if len({s for s, _, _ in items}) != len(items):
            raise ValueError("a stream appears twice in one append")
        now = utcnow()
        pairs = [
            (Envelope(event_id=uuid.uuid4(), event_type=e.event_type,
                      schema_version=e.schema_version, occurred_at=now, stream_id=stream_id,
                      stream_version=expected + i, correlation_id=correlation_id,
                      causation_id=cause(e) if cause else causation_id,
                      producer=self.producer, actor=actor,
                      payload=e.model_dump(mode="json")), e)
            for stream_id, expected, events in items
            for i, e in enumerate(events, start=1)
        ]
        envelopes = [v for v, _ in pairs]
        published = [(e.topic, v) for v, e in pairs if e.topic]
        last = {v.stream_id: v for v in envelopes}  # each stream's last event
        kept = [(stream_id, kind, state) for stream_id, (kind, state)
                in (snapshots or {}).items() if stream_id in last]
        try:
            # one statement: the version check, the events, their outbox rows and the relay's
            # wake-up (a stale stream writes nothing: the rows are inserted only when every
            # stream is at its expected version; a writer racing past the check is stopped by
            # the unique (stream_id, stream_version) key)
            found = await conn.fetchrow(
                _APPEND_SQL if claim is None else _APPEND_CLAIMING_SQL,
                [v.event_id for v in envelopes], [v.stream_id for v in envelopes],
                [v.stream_version for v in envelopes], [v.event_type for v in envelopes],
                [v.schema_version for v in envelopes], now, correlation_id,
                [v.causation_id for v in envelopes], actor, [json_text(v.payload) for v in envelopes],
                [s for s, _, _ in items], [x for _, x, _ in items],
                [t for t, _ in published], [v.stream_id for _, v in published],
                [v.event_id for _, v in published], [encode(v) for _, v in published],
                OUTBOX_CHANNEL, [x for x, _, _ in kept], [k for _, k, _ in kept],
                [last[x].stream_version for x, _, _ in kept],
                [last[x].event_id for x, _, _ in kept],
                [json_text(st) for _, _, st in kept], *(claim or ()))
        except asyncpg.UniqueViolationError as exc:
            # a writer that did not hold the stream lock committed first: the key decided
            stream_id, expected, _ = _raced(exc, items)
            raise ConcurrencyError(stream_id, expected) from exc
        if found["stale"] is not None:
            expected = next(x for s, x, _ in items if s == found["stale"])
            raise ConcurrencyError(found["stale"], expected, found["actual"])
        if claim is not None and not found["claimed"]:
            raise ClaimLostError()
        return envelopes

    async def stream_versions(self, conn: asyncpg.Connection,
                              stream_ids: Sequence[str]) -> dict[str, int]:
        """The current version of each non-empty stream among `stream_ids` (absent: empty)."""
        rows = await conn.fetch(
            "SELECT stream_id, max(stream_version) AS version FROM events "
            "WHERE stream_id = ANY($1::text[]) GROUP BY stream_id", list(stream_ids))
        return {r["stream_id"]: r["version"] for r in rows}

    async def read_streams(self, conn: asyncpg.Connection,
                           stream_ids: Sequence[str]) -> dict[str, list[Event]]:
        """The typed events of each non-empty stream among `stream_ids`, in version order and
        upcast to their current schema version, in one query. Raises ContractError for a stored
        event no registered model accepts."""
        histories = await self.read_histories(conn, stream_ids)
        assert histories is not None
        return {s: h.events for s, h in histories.items()}

    async def read_histories(self, conn: asyncpg.Connection, stream_ids: Sequence[str], *,
                             snapshot_kind: str | None = None,
                             try_lock: str | None = None) -> dict[str, History] | None:
        """Each non-empty stream among `stream_ids` as its aggregate needs it, in one query:
        the latest snapshot of `snapshot_kind` (when there is one whose event is still the
        stream's event at its version) and the typed events after it, in version order.
        `try_lock`: a stream whose writer's lock (`shared.aggregate.lock_stream`) is taken in
        the same statement without waiting; None is returned when another transaction holds it
        (the caller then waits for the lock and reads again)."""
        ids = list(stream_ids)
        if len(ids) == 1:
            rows = await conn.fetch(_HISTORY_ONE_SQL, ids[0], snapshot_kind, try_lock)
        else:
            rows = await conn.fetch(_HISTORY_SQL, ids, snapshot_kind, try_lock)
        if rows and rows[0]["part"] == 0:
            return None
        histories: dict[str, History] = {}
        for row in rows:
            history = histories.get(row["stream_id"])
            if history is None:
                history = histories[row["stream_id"]] = History([], 0)
            if row["part"] == 1:
                history.snapshot = orjson.loads(row["payload"])
                history.snapshot_version = row["stream_version"]
            else:
                history.events.append(event_from_row(row))
            history.version, history.last_event_id = row["stream_version"], row["event_id"]
        return histories

    async def read_stream(self, conn: asyncpg.Connection, stream_id: str) -> list[tuple[Envelope, Event]]:
        rows = await conn.fetch("SELECT * FROM events WHERE stream_id = $1 ORDER BY stream_version",
                                stream_id)
        return [_typed(envelope_from_row(r)) for r in rows]

    async def read_all(self, conn: asyncpg.Connection, after: tuple[int, int] = (0, 0),
                       limit: int = 1000) -> tuple[list[Recorded], tuple[int, int]]:
        """Events after the cursor `after` = (tx_id, position), in commit-safe order, and the
        cursor to pass next time."""
        rows = await conn.fetch(
            "SELECT *, tx_id::text::bigint AS tx FROM events "
            "WHERE (tx_id::text::bigint, global_position) > ($1, $2) "
            "AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
            "ORDER BY tx_id, global_position LIMIT $3", after[0], after[1], limit)
        cursor = (rows[-1]["tx"], rows[-1]["global_position"]) if rows else after
        return [Recorded(r["global_position"], envelope_from_row(r)) for r in rows], cursor


def envelope_from_row(row: asyncpg.Record) -> Envelope:
    # rows were validated when written; rebuilding them unchecked keeps replays fast
    return Envelope.model_construct(
        event_id=row["event_id"], event_type=row["event_type"],
        schema_version=row["schema_version"], occurred_at=row["occurred_at"],
        stream_id=row["stream_id"], stream_version=row["stream_version"],
        correlation_id=row["correlation_id"], causation_id=row["causation_id"],
        producer="store", actor=row["actor"], payload=orjson.loads(row["payload"]))


def event_from_row(row: asyncpg.Record) -> Event:
    """The typed event of a stored row (needs its event_type, schema_version and payload)."""
    if row["schema_version"] == current_version(row["event_type"]):
        # the stored JSON validated directly: replaying long histories is mostly this
        with contextlib.suppress(ValidationError):  # parse_payload below names the error
            return event_class(row["event_type"]).model_validate_json(row["payload"])
    return parse_payload(Envelope.model_construct(
        event_type=row["event_type"], schema_version=row["schema_version"],
        payload=orjson.loads(row["payload"])))


def _raced(exc: asyncpg.UniqueViolationError,
           items: list[tuple[str, int, Sequence[Event]]]) -> tuple[str, int, Sequence[Event]]:
    # the detail names the key: "Key (stream_id, stream_version)=(tks-1, 3) already exists."
    detail = exc.detail or ""
    return next((item for item in items if f"=({item[0]}, " in detail), items[0])


def _typed(envelope: Envelope) -> tuple[Envelope, Event]:
    return envelope, parse_payload(envelope)
