"""Postgres event store with a transactional outbox, and versioned migrations.

Guarantees:
- `append` writes a stream's new events and, for events that have a topic, their outbox rows in
  the caller's transaction: both commit or neither does.
- A stream's versions are gapless; appending at a stale expected version raises
  `ConcurrencyError` and writes nothing (the unique (stream_id, stream_version) key decides races).
- `read_all` follows (transaction id, position) and only returns rows of transactions older than
  every transaction still in flight, so a late-committing transaction is never skipped. Postgres
  transaction ids are server-wide: a long transaction in another database on the same server
  delays what `read_all` returns (never skips it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.envelope import Envelope, Event, encode, parse_payload, utcnow

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
        steps = [("kernel", 1, "event store, outbox, inbox", KERNEL_SCHEMA)]
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
        if not conn.is_in_transaction():
            raise RuntimeError("append must run inside a transaction")
        if not events:
            return []
        actual = await conn.fetchval(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1", stream_id)
        if actual != expected_version:
            raise ConcurrencyError(stream_id, expected_version, actual)
        now = utcnow()
        envelopes = [
            Envelope(event_id=uuid.uuid4(), event_type=e.event_type, schema_version=e.schema_version,
                     occurred_at=now, stream_id=stream_id, stream_version=expected_version + i,
                     correlation_id=correlation_id, causation_id=causation_id,
                     producer=self.producer, actor=actor, payload=e.model_dump(mode="json"))
            for i, e in enumerate(events, start=1)
        ]
        try:
            await conn.executemany(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
                "schema_version, occurred_at, correlation_id, causation_id, actor, payload) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [(v.event_id, v.stream_id, v.stream_version, v.event_type, v.schema_version,
                  v.occurred_at, v.correlation_id, v.causation_id, v.actor, json.dumps(v.payload))
                 for v in envelopes])
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrencyError(stream_id, expected_version) from exc
        published = [(e.topic, v) for e, v in zip(events, envelopes, strict=True) if e.topic]
        if published:
            await conn.executemany(
                "INSERT INTO outbox (topic, message_key, event_id, value) VALUES ($1, $2, $3, $4)",
                [(topic, v.stream_id, v.event_id, encode(v)) for topic, v in published])
            await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        return envelopes

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


def _typed(envelope: Envelope) -> tuple[Envelope, Event]:
    return envelope, parse_payload(envelope)
