"""Set-based loading and saving of many streams in one unit of work (batch filing, bulk
assignment, period close): a constant number of statements per batch instead of several per
stream. Same guarantees as `UnitOfWork.load/save`: per-stream advisory locks taken in one sorted
order, gapless versions enforced by the (stream_id, stream_version) key, outbox rows in the same
transaction and the service's projector run inside it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import TypeVar

import asyncpg

from shared.aggregate import Aggregate, UnitOfWork
from shared.envelope import Envelope, Event, encode, event_class, parse_payload, utcnow
from shared.eventstore import OUTBOX_CHANNEL, ConcurrencyError

A = TypeVar("A", bound=Aggregate)


async def lock_streams(uow: UnitOfWork, stream_ids: Iterable[str]) -> None:
    # the same lock key as UnitOfWork.load; one order for everyone, so batches cannot deadlock
    await uow.conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(s, 0)) "
        "FROM (SELECT DISTINCT s FROM unnest($1::text[]) AS s ORDER BY s) AS ordered",
        list(stream_ids))


async def load_many(uow: UnitOfWork, cls: type[A], stream_ids: Iterable[str], *,
                    lock: bool = True) -> dict[str, A]:
    """Every stream rebuilt (an empty stream gives a fresh aggregate at version 0). Without
    `lock`, a writer that moves a stream meanwhile makes the save raise ConcurrencyError."""
    ids = sorted(set(stream_ids))
    if lock:
        await lock_streams(uow, ids)
    rows = await uow.conn.fetch(
        "SELECT stream_id, event_type, schema_version, payload FROM events "
        "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version", ids)
    history: dict[str, list[Event]] = {s: [] for s in ids}
    for row in rows:
        history[row["stream_id"]].append(_event(row))
    return {s: cls.from_history(s, events) for s, events in history.items()}


def _event(row: asyncpg.Record) -> Event:
    cls = event_class(row["event_type"])
    if cls.schema_version == row["schema_version"]:
        # the stored JSON validated straight away: this is most of the cost of a batch
        return cls.model_validate_json(row["payload"])
    envelope = Envelope.model_construct(event_type=row["event_type"],
                                        schema_version=row["schema_version"],
                                        payload=json.loads(row["payload"]))
    return parse_payload(envelope)


async def save_many(uow: UnitOfWork, aggregates: Iterable[Aggregate]) -> list[Envelope]:
    """Append every aggregate's pending events at the version it was loaded at.
    Raises ConcurrencyError when any of the streams moved on (nothing is kept: the caller's
    transaction is rolled back)."""
    now = utcnow()
    pairs: list[tuple[Envelope, Event]] = []
    for agg in aggregates:
        events, agg.pending = agg.pending, []
        for i, event in enumerate(events, start=1):
            pairs.append((Envelope(
                event_id=uuid.uuid4(), event_type=event.event_type,
                schema_version=event.schema_version, occurred_at=now, stream_id=agg.stream_id,
                stream_version=agg.version + i, correlation_id=uow.correlation_id,
                causation_id=uow.causation_id, producer=uow.store.producer, actor=uow.actor,
                payload=event.model_dump(mode="json")), event))
        agg.version += len(events)
    if not pairs:
        return []
    envelopes = [e for e, _ in pairs]
    try:
        await uow.conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
            "schema_version, occurred_at, correlation_id, causation_id, actor, payload) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], "
            "$6::timestamptz[], $7::uuid[], $8::uuid[], $9::text[], $10::jsonb[])",
            [v.event_id for v in envelopes], [v.stream_id for v in envelopes],
            [v.stream_version for v in envelopes], [v.event_type for v in envelopes],
            [v.schema_version for v in envelopes], [v.occurred_at for v in envelopes],
            [v.correlation_id for v in envelopes], [v.causation_id for v in envelopes],
            [v.actor for v in envelopes], [json.dumps(v.payload) for v in envelopes])
    except asyncpg.UniqueViolationError as exc:
        raise ConcurrencyError(str(exc.detail or exc), -1) from exc
    published = [(e.topic, v) for v, e in pairs if e.topic]
    if published:
        await uow.conn.execute(
            "INSERT INTO outbox (topic, message_key, event_id, value) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[])",
            [t for t, _ in published], [v.stream_id for _, v in published],
            [v.event_id for _, v in published], [encode(v) for _, v in published])
        await uow.conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    if uow.projector:
        await uow.projector(uow.conn, pairs)
    uow.saved.extend(envelopes)
    return envelopes
