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
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from shared.idempotency import SCHEMA as IDEMPOTENCY_SCHEMA
from shared.envelope import (
    Envelope,
    Event,
    current_version,
    encode,
    event_class,
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
OUTBOX_CHANNEL = "tkm_outbox"


class ConcurrencyError(Exception):
    """The stream moved on since it was loaded: reload and decide again."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None):
        super().__init__(f"stream {stream_id} is not at version {expected} (now {actual})")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


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
                 ("idempotency", 1, "Idempotency-Key claims and answers", IDEMPOTENCY_SCHEMA)]
        for path in sorted(migrations.glob("*.sql")) if migrations else []:
            number = int(path.name.split("_", 1)[0])
            steps.append((component, number, path.stem, path.read_text()))
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
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tkm-migrations'))")
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
                          causation_id: uuid.UUID | None = None) -> list[Envelope]:
        """Append each item's events after its expected version, all or nothing, inside the
        caller's open transaction, in a constant number of statements. Returns the envelopes in
        item order. Raises ConcurrencyError when any stream is elsewhere (nothing is written),
        ValueError when a stream appears twice, RuntimeError outside a transaction."""
        if not conn.is_in_transaction():
            raise RuntimeError("append must run inside a transaction")
        items = [(s, v, events) for s, v, events in items if events]
        if not items:
            return []
        if len({s for s, _, _ in items}) != len(items):
            raise ValueError("a stream appears twice in one append")
        actual = await self.stream_versions(conn, [s for s, _, _ in items])
        for stream_id, expected, _ in items:
            if actual.get(stream_id, 0) != expected:
                raise ConcurrencyError(stream_id, expected, actual.get(stream_id, 0))
        now = utcnow()
        pairs = [
            (Envelope(event_id=uuid.uuid4(), event_type=e.event_type,
                      schema_version=e.schema_version, occurred_at=now, stream_id=stream_id,
                      stream_version=expected + i, correlation_id=correlation_id,
                      causation_id=causation_id, producer=self.producer, actor=actor,
                      payload=e.model_dump(mode="json")), e)
            for stream_id, expected, events in items
            for i, e in enumerate(events, start=1)
        ]
        envelopes = [v for v, _ in pairs]
        try:
            # WITH ORDINALITY: positions (and outbox ids below) follow the order given
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
                "schema_version, occurred_at, correlation_id, causation_id, actor, payload) "
                "SELECT e, s, v, t, sv, o, c, ca, a, p FROM unnest($1::uuid[], $2::text[], "
                "$3::int[], $4::text[], $5::int[], $6::timestamptz[], $7::uuid[], $8::uuid[], "
                "$9::text[], $10::jsonb[]) WITH ORDINALITY AS u(e, s, v, t, sv, o, c, ca, a, p, n) "
                "ORDER BY n",
                [v.event_id for v in envelopes], [v.stream_id for v in envelopes],
                [v.stream_version for v in envelopes], [v.event_type for v in envelopes],
                [v.schema_version for v in envelopes], [now] * len(envelopes),
                [correlation_id] * len(envelopes), [causation_id] * len(envelopes),
                [actor] * len(envelopes), [json.dumps(v.payload) for v in envelopes])
        except asyncpg.UniqueViolationError as exc:
            # a writer that did not hold the stream lock committed first: the key decided
            stream_id, expected, _ = _raced(exc, items)
            raise ConcurrencyError(stream_id, expected) from exc
        published = [(e.topic, v) for v, e in pairs if e.topic]
        if published:
            # the notify rides in the same statement: one round trip for the relay's wake-up
            await conn.execute(
                "WITH o AS (INSERT INTO outbox (topic, message_key, event_id, value) "
                "SELECT t, k, e, v FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[]) "
                "WITH ORDINALITY AS u(t, k, e, v, n) ORDER BY n) SELECT pg_notify($5, '')",
                [t for t, _ in published], [v.stream_id for _, v in published],
                [v.event_id for _, v in published], [encode(v) for _, v in published],
                OUTBOX_CHANNEL)
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
        rows = await conn.fetch(
            "SELECT stream_id, event_type, schema_version, payload FROM events "
            "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
            list(stream_ids))
        history: dict[str, list[Event]] = {}
        for row in rows:
            history.setdefault(row["stream_id"], []).append(event_from_row(row))
        return history

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
        producer="store", actor=row["actor"], payload=json.loads(row["payload"]))


def event_from_row(row: asyncpg.Record) -> Event:
    """The typed event of a stored row (needs its event_type, schema_version and payload)."""
    if row["schema_version"] == current_version(row["event_type"]):
        # the stored JSON validated directly: replaying long histories is mostly this
        with contextlib.suppress(ValidationError):  # parse_payload below names the error
            return event_class(row["event_type"]).model_validate_json(row["payload"])
    return parse_payload(Envelope.model_construct(
        event_type=row["event_type"], schema_version=row["schema_version"],
        payload=json.loads(row["payload"])))


def _raced(exc: asyncpg.UniqueViolationError,
           items: list[tuple[str, int, Sequence[Event]]]) -> tuple[str, int, Sequence[Event]]:
    # the detail names the key: "Key (stream_id, stream_version)=(tks-1, 3) already exists."
    detail = exc.detail or ""
    return next((item for item in items if f"=({item[0]}, " in detail), items[0])


def _typed(envelope: Envelope) -> tuple[Envelope, Event]:
    return envelope, parse_payload(envelope)
