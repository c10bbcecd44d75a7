"""Dead letters: reading a service's dead-letter topic and replaying its letters.

A letter (written by `shared.consumer`) carries the reason, the source topic/partition/offset
and the original bytes (or, past the cap, their digest: the original is then read back from its
topic). Letters are never deleted (the topics keep them for ever); whether one is still pending
is the inbox's answer: its row says "dead-lettered" until a replay applied it.

Replay runs the service's own `EventConsumer` on the original record rebuilt from the letter
(`EventConsumer.redrive`), in one transaction with the release of its inbox row. Re-producing
the bytes to the source topic instead was rejected: the topic belongs to another service (its
principal may not write there), every other consumer group and agency would read the event a
second time, and it would land after newer events of its stream. Redriving in place touches only
the refusing service's database, and the inbox keeps it exactly once however often it runs.

Who reads: the operator's admin principal (`ADMIN_KAFKA_*`, shared.kafka_security), not the
service's. A service only writes its dead letters; reading them back is an operator's act
(`tkm dlq`), so the service principal gets no Read on its dead-letter topic nor a right it would
use only under an operator's hand (shared/kafka_acls.py stays minimal).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.consumer import EventConsumer, ReplayError
from shared.eventstore import EventStore
from shared.topics import dead_letter_topic

READ_TIMEOUT_S = 60.0


class DeadLetterError(RuntimeError):
    """What an operator asked for cannot be done; the message says why, in one line."""


@dataclass
class Letter:
    id: uuid.UUID  # the inbox id of the refused record (its event id, or one from its place)
    event_id: uuid.UUID | None
    event_type: str | None
    reason: str
    error_type: str
    failed_at: str
    topic: str
    partition: int
    offset: int
    key: str | None
    original: bytes
    truncated: bool
    sha256: str
    dlq_partition: int
    dlq_offset: int
    status: str = "unknown"  # pending (still dead-lettered), replayed, or unknown (no inbox row)

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> Letter:
        body = json.loads(record.value)
        source = body["source"]
        return cls(uuid.UUID(body["dead_letter_id"]),
                   uuid.UUID(body["event_id"]) if body.get("event_id") else None,
                   body.get("event_type"), body.get("reason", ""), body.get("error_type", ""),
                   body.get("failed_at", ""), source["topic"], source["partition"],
                   source["offset"], source.get("key"),
                   base64.b64decode(body.get("original_value_base64", "")),
                   bool(body.get("original_truncated")), body.get("original_sha256", ""),
                   record.partition, record.offset)

    def summary(self) -> dict[str, Any]:
        return {"id": str(self.id), "status": self.status, "event_type": self.event_type,
                "reason": self.reason, "error_type": self.error_type,
                "failed_at": self.failed_at,
                "source": f"{self.topic}[{self.partition}]@{self.offset}"}

    def detail(self) -> dict[str, Any]:
        original: Any
        try:
            original = json.loads(self.original)
        except ValueError:
            original = base64.b64encode(self.original).decode()
        return {**self.summary(), "event_id": str(self.event_id) if self.event_id else None,
                "key": self.key, "original_truncated": self.truncated,
                "original_sha256": self.sha256,
                "dead_letter_topic_place": f"[{self.dlq_partition}]@{self.dlq_offset}",
                "original": original}


def _admin_client() -> dict[str, Any]:
    from shared.kafka_security import kafka_security

    return kafka_security(service="admin").client_kwargs()


async def read_letters(bootstrap: str, service: str,
                       client: dict[str, Any] | None = None) -> list[Letter]:
    """Every letter of the service's dead-letter topic, from offset 0 to its current end, in
    the order they were written (per partition). A letter repeated for the same record keeps
    its latest copy. Raises DeadLetterError when the topic does not exist."""
    topic = dead_letter_topic(service)
    records = await _read_all(bootstrap, topic, _admin_client() if client is None else client)
    letters: dict[uuid.UUID, Letter] = {}
    for record in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        try:
            letter = Letter.from_record(record)
        except (ValueError, KeyError, TypeError):
            continue  # not a letter of ours
        letters.pop(letter.id, None)
        letters[letter.id] = letter
    return list(letters.values())


async def with_status(database_url: str, letters: list[Letter]) -> list[Letter]:
    """Each letter's status from the service's inbox: pending while its row says
    "dead-lettered", replayed once the record (by its letter or its event id) was applied."""
    ids = list({i for letter in letters for i in (letter.id, letter.event_id) if i})
    conn = await asyncpg.connect(database_url)
    try:
        rows = {r["event_id"]: r["outcome"] for r in await conn.fetch(
            "SELECT event_id, outcome FROM inbox WHERE event_id = ANY($1::uuid[])", ids)}
    except asyncpg.UndefinedTableError:
        raise DeadLetterError("that database has no inbox: is it the service's own?") from None
    finally:
        await conn.close()
    for letter in letters:
        outcomes = {rows.get(letter.id), rows.get(letter.event_id) if letter.event_id else None}
        if outcomes & {"applied", "ignored"}:
            letter.status = "replayed"
        elif "dead-lettered" in outcomes:
            letter.status = "pending"
        else:
            letter.status = "unknown"
    return letters


def find(letters: list[Letter], letter_id: str) -> Letter:
    """The letter with this id (or of the event with this id). Raises DeadLetterError."""
    try:
        wanted = uuid.UUID(letter_id)
    except ValueError:
        raise DeadLetterError(f"{letter_id!r} is not an id (a UUID)") from None
    for letter in reversed(letters):
        if wanted in (letter.id, letter.event_id):
            return letter
    raise DeadLetterError(f"no dead letter {letter_id}")


async def replay(letter: Letter, consumer: EventConsumer, bootstrap: str,
                 client: dict[str, Any] | None = None) -> str:
    """Apply one letter through the service's consumer (see the module docstring). Returns the
    outcome: applied, ignored, or duplicate (already applied: nothing done). Raises
    DeadLetterError when it cannot be applied (nothing changed)."""
    original = letter.original
    if letter.truncated:
        original = await _read_one(bootstrap, letter.topic, letter.partition, letter.offset,
                                   _admin_client() if client is None else client)
    if hashlib.sha256(original).hexdigest() != letter.sha256:
        raise DeadLetterError(f"letter {letter.id}: the original bytes do not match its digest")
    record = ConsumerRecord(topic=letter.topic, partition=letter.partition, offset=letter.offset,
                            timestamp=0, timestamp_type=0,
                            key=letter.key.encode() if letter.key is not None else None,
                            value=original, checksum=None,
                            serialized_key_size=len(letter.key or ""),
                            serialized_value_size=len(original), headers=())
    try:
        return await consumer.redrive(record, letter.id)
    except ReplayError as exc:
        raise DeadLetterError(f"letter {letter.id} still fails: {exc}") from exc


def consumer_for(pool: asyncpg.Pool, service: str, handlers: dict, projector: Any,
                 max_retries: int = 0) -> EventConsumer:
    """The service's consumer, as its process builds it, for replays."""
    return EventConsumer(pool, EventStore(service), service, handlers, dead_letter_topic(service),
                         max_retries=max_retries, projector=projector)


async def _read_all(bootstrap: str, topic: str, client: dict[str, Any]) -> list[ConsumerRecord]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **client)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for t in described if t["topic"] == topic and not t["error_code"]
                  for p in t["partitions"]]
    if not partitions:
        raise DeadLetterError(f"no dead-letter topic {topic} (has the service ever run?)")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, request_timeout_ms=15000,
                                auto_offset_reset="earliest", **client)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        # explicit positions: a reset requested by seek_to_beginning can lose the race with the
        # reset the fresh assignment starts by itself
        for tp, first in (await consumer.beginning_offsets(assigned)).items():
            consumer.seek(tp, first)
        records: list[ConsumerRecord] = []
        deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_S
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            if asyncio.get_running_loop().time() > deadline:
                raise DeadLetterError(f"{topic}: not read to its end in {READ_TIMEOUT_S:.0f}s")
            batch = await consumer.getmany(*assigned, timeout_ms=1000)
            for tp, recs in batch.items():
                records.extend(r for r in recs if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


async def _read_one(bootstrap: str, topic: str, partition: int, offset: int,
                    client: dict[str, Any]) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, request_timeout_ms=15000, **client)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        try:
            record = await asyncio.wait_for(consumer.getone(tp), READ_TIMEOUT_S)
        except TimeoutError:
            raise DeadLetterError(f"{topic}[{partition}]@{offset} could not be read") from None
        if record.offset != offset:
            raise DeadLetterError(f"{topic}[{partition}]@{offset} is no longer on its topic")
        return record.value or b""
    finally:
        await consumer.stop()
