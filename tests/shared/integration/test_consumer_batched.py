"""Set-based consumption: a `batched` handler takes a run of its events in one call, so a batch
costs a constant number of statements; a poison event in a run is still dead-lettered alone,
and the rest of the run applied once."""

import json
import uuid

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from shared.consumer import EventConsumer, batched, unique_runs
from shared.envelope import Envelope, encode, utcnow
from shared.eventstore import EventStore, migrate
from tests.support.sample import TOTALS_SQL, AmountRecorded

pytestmark = pytest.mark.integration
DLQ = "tkm.kerneltest.dlq.v1"


def _envelope(stream: str, n: int, amount: int) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=AmountRecorded.event_type,
                    schema_version=1, occurred_at=utcnow(), stream_id=stream, stream_version=n,
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload={"amount": amount})


def _record(envelope: Envelope, offset: int) -> ConsumerRecord:
    value = encode(envelope)
    return ConsumerRecord(topic="tkm.kerneltest.v1", partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=b"k", value=value, checksum=None,
                          serialized_key_size=1, serialized_value_size=len(value), headers=())


class Totals:
    """A set-based handler of AmountRecorded: one upsert per run of distinct streams."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the size of each call's run
        self.statements = 0

    def handler(self):
        @batched
        async def on_amounts(uow, items) -> None:
            self.calls.append(len(items))
            if any(event.amount < 0 for _, event in items):
                raise ValueError("a negative amount cannot be totalled")
            for run in unique_runs(items, lambda item: item[0].stream_id):
                self.statements += 1
                await uow.conn.execute(
                    "INSERT INTO sample_totals SELECT s, a, 1 FROM unnest($1::text[], "
                    "$2::bigint[]) AS u(s, a) ON CONFLICT (stream_id) DO UPDATE "
                    "SET total = sample_totals.total + excluded.total, "
                    "events = sample_totals.events + 1",
                    [e.stream_id for e, _ in run], [ev.amount for _, ev in run])
        return on_amounts


async def _pool(database_url: str) -> asyncpg.Pool:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "kerneltest")
        await conn.execute(TOTALS_SQL)
    finally:
        await conn.close()
    return await asyncpg.create_pool(database_url, min_size=1, max_size=2)


def test_unique_runs_cut_where_a_key_repeats():
    assert unique_runs([1, 2, 3, 1, 4, 1], lambda x: x) == [[1, 2, 3], [1, 4], [1]]
    assert unique_runs([], lambda x: x) == []


async def test_a_batch_is_one_call_and_a_redelivery_changes_nothing(database_url):
    streams = [f"batched-{uuid.uuid4()}" for _ in range(50)]
    # every stream twice: two upserts (a row is touched once per statement), not 100
    envelopes = [_envelope(s, n, 10 * n + i) for n in (1, 2) for i, s in enumerate(streams)]
    totals = Totals()
    pool = await _pool(database_url)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: totals.handler()}, DLQ)
        batch = [_record(e, offset) for offset, e in enumerate(envelopes)]
        assert (await consumer.consume(batch)).outcomes == {"applied": 100}
        assert totals.calls == [100] and totals.statements == 2
        rows = {r["stream_id"]: (r["total"], r["events"]) for r in await pool.fetch(
            "SELECT * FROM sample_totals WHERE stream_id = ANY($1)", streams)}
        assert rows == {s: (10 + i + 20 + i, 2) for i, s in enumerate(streams)}
        assert (await consumer.consume(batch)).outcomes == {"duplicate": 100}
        assert totals.calls == [100]
    finally:
        await pool.close()


async def test_a_poison_event_in_a_run_is_dead_lettered_alone(database_url):
    stream = f"batched-{uuid.uuid4()}"
    envelopes = [_envelope(stream, n, n) for n in range(1, 11)]
    poison = _envelope(stream, 99, -5)
    envelopes.insert(4, poison)
    totals = Totals()
    pool = await _pool(database_url)
    try:
        consumer = EventConsumer(pool, EventStore("kerneltest"), "kerneltest",
                                 {AmountRecorded.event_type: totals.handler()}, DLQ,
                                 max_retries=1)
        batch = [_record(e, offset) for offset, e in enumerate(envelopes)]
        assert (await consumer.consume(batch)).outcomes == {"applied": 10, "dead-lettered": 1}
        # the run once, then each event in a run of its own (the poison twice: max_retries=1)
        assert totals.calls == [11] + [1] * (10 + 2)
        row = await pool.fetchrow("SELECT total, events FROM sample_totals WHERE stream_id = $1",
                                  stream)
        assert (row["total"], row["events"]) == (sum(range(1, 11)), 10)
        [letter] = [json.loads(r["value"]) for r in await pool.fetch(
            "SELECT value FROM outbox WHERE topic = $1", DLQ)]
        assert letter["dead_letter_id"] == str(poison.event_id)
        assert "negative amount" in letter["reason"]
        assert await pool.fetchval("SELECT outcome FROM inbox WHERE event_id = $1",
                                   poison.event_id) == "dead-lettered"
    finally:
        await pool.close()
