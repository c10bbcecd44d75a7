"""The command path in-process: `run_command` (shared.aggregate) creating a stream and then
updating it, against the ceiling of raw asyncpg BEGIN/INSERT/COMMIT and the `eventsourcing`
peer (9.x, PostgreSQL persistence) doing the same work, at c concurrent writers.

One command = one transaction: a create (an empty stream gets its first event) or an update (the
stream is loaded, one more event appended). Each writer alternates the two. Ours writes the
event's outbox row too (a published type), as every service command does; the peer has no
outbox. Statements per command are counted with asyncpg's query logger on a one-connection pool
(everything the connection sends: BEGIN, locks, reads, inserts, COMMIT, the pool's reset)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench.common import BenchEnv, repeat
from shared import shedding
from shared.aggregate import Aggregate, UnitOfWork, run_command
from shared.envelope import Event, register
from shared.eventstore import EventStore

TOPIC = "tkm.bench-commands.v1"  # never relayed: the outbox rows are part of the work


@register
class BenchOpened(Event):
    event_type = "bench.Opened"
    topic = TOPIC
    item_id: str
    label: str  # not `name`: no event on a topic carries a field named like personal data


@register
class BenchBumped(Event):
    event_type = "bench.Bumped"
    topic = TOPIC
    item_id: str
    by: int


class Item(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.count = -1

    def apply(self, event: Event) -> None:
        match event:
            case BenchOpened():
                self.count = 0
            case BenchBumped():
                self.count += event.by

    def open(self, label: str) -> None:
        if self.count >= 0:
            raise ValueError("already open")
        self.record(BenchOpened(item_id=self.stream_id, label=label))

    def bump(self, by: int) -> None:
        if self.count < 0:
            raise ValueError("not open")
        self.record(BenchBumped(item_id=self.stream_id, by=by))


async def _create(pool: asyncpg.Pool, store: EventStore, stream: str) -> None:
    async def decide(uow: UnitOfWork) -> None:
        item = await uow.load(Item, stream) or Item(stream)
        item.open("bench item")
        await uow.save(item)

    await run_command(pool, store, decide, actor="system:bench")


async def _update(pool: asyncpg.Pool, store: EventStore, stream: str) -> None:
    async def decide(uow: UnitOfWork) -> None:
        item = await uow.load(Item, stream)
        assert item is not None
        item.bump(1)
        await uow.save(item)

    await run_command(pool, store, decide, actor="system:bench")


async def ours(pool: asyncpg.Pool, concurrency: int, commands: int) -> float:
    """Commands per second through run_command, `concurrency` writers."""
    store = EventStore("bench")
    per_writer = max(2, commands // concurrency // 2 * 2)

    async def writer() -> None:
        for _ in range(per_writer // 2):
            stream = f"item-{uuid.uuid4()}"
            await _create(pool, store, stream)
            await _update(pool, store, stream)

    began = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return per_writer * concurrency / (time.perf_counter() - began)


async def raw(pool: asyncpg.Pool, concurrency: int, commands: int) -> float:
    """The ceiling: BEGIN, one INSERT of an event row, COMMIT (no read, no lock, no outbox,
    no pool reset where the pool can skip it)."""
    per_writer = max(2, commands // concurrency)
    now = datetime.now(UTC)
    payload = json.dumps({"item_id": "x", "by": 1})

    async def writer() -> None:
        stream = f"raw-{uuid.uuid4()}"
        for version in range(1, per_writer + 1):
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
                        "schema_version, occurred_at, correlation_id, actor, payload) "
                        "VALUES ($1, $2, $3, 'bench.Bumped', 1, $4, $5, 'system:bench', $6)",
                        uuid.uuid4(), stream, version, now, uuid.uuid4(), payload)
                # as run_command: no session state outlives the transaction, so a pool that
                # can skip its reset query (shared.shedding) is told so
                mark = getattr(conn, "transaction_only", None)
                if mark is not None:
                    mark()

    began = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return per_writer * concurrency / (time.perf_counter() - began)


async def statements(dsn: str, commands: int = 20) -> tuple[dict[str, float],
                                                             dict[str, list[str]]]:
    """Statements the connection sends per command (ours, create and update alike, and raw),
    and the statements of one command of each kind."""
    pool = await shedding.create_pool(dsn, min_size=1, max_size=1, acquire_timeout=30)
    sent: list[str] = []
    try:
        holders = getattr(pool, "_holders", [])
        conns = [h._con for h in holders if getattr(h, "_con", None) is not None]
        if not conns:
            raise RuntimeError("cannot reach the pool's connection to count its statements")
        for conn in conns:
            conn.add_query_logger(lambda record: sent.append(record.query))
        store = EventStore("bench")
        await _create(pool, store, "item-warm-up")  # statement cache, type introspection
        await _update(pool, store, "item-warm-up")
        await raw(pool, 1, 2)
        await asyncio.sleep(0.05)
        figures: dict[str, float] = {}
        seen: dict[str, list[str]] = {}
        for name, run in (("create", _create), ("update", _update)):
            sent.clear()
            streams = [f"item-{uuid.uuid4()}" for _ in range(commands)]
            if name == "update":
                for s in streams:
                    await _create(pool, store, s)
                await asyncio.sleep(0.05)
                sent.clear()
            for s in streams:
                await run(pool, store, s)
            await asyncio.sleep(0.05)  # the logger runs on the loop's next turns
            figures[name] = len(sent) / commands
            seen[name] = [" ".join(q.split())[:70] for q in sent[:round(figures[name])]]
        sent.clear()
        await raw(pool, 1, commands)
        await asyncio.sleep(0.05)
        figures["raw"] = len(sent) / commands
        seen["raw"] = [" ".join(q.split())[:70] for q in sent[:round(figures["raw"])]]
        figures["ours"] = (figures["create"] + figures["update"]) / 2
        return figures, seen
    finally:
        await pool.close()


# ---------------------------------------------------------------- the eventsourcing peer

def _peer_app(dsn: str, pool_size: int) -> Any:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate as EsAggregate
    from eventsourcing.domain import event

    class PeerItem(EsAggregate):
        @event("Opened")
        def __init__(self, label: str):
            self.label, self.count = label, 0

        @event("Bumped")
        def bump(self, by: int) -> None:
            self.count += by

    class Items(Application):
        def open(self, label: str) -> uuid.UUID:
            item = PeerItem(label)
            self.save(item)
            return item.id

        def bump(self, item_id: uuid.UUID) -> None:
            item = self.repository.get(item_id)
            item.bump(1)
            self.save(item)

    url = urlsplit(dsn)
    return Items(env={
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "CREATE_TABLE": "y",
        "POSTGRES_DBNAME": url.path.lstrip("/"), "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432), "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "", "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0"})


def peer(app: Any, concurrency: int, commands: int) -> float:
    """Commands per second through the peer's Application (open, then bump), in threads: its
    API is synchronous (psycopg 3 with a connection pool)."""
    per_writer = max(2, commands // concurrency // 2 * 2)

    def writer() -> None:
        for _ in range(per_writer // 2):
            item = app.open("bench item")
            app.bump(item)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        for future in [threads.submit(writer) for _ in range(concurrency)]:
            future.result()
    return per_writer * concurrency / (time.perf_counter() - began)


async def run(env: BenchEnv, *, concurrencies: tuple[int, ...], commands: int,
              repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dsn = await env.fresh_database("cmd", "bench")
    peer_dsn = await env.fresh_database("peer")
    app = await asyncio.to_thread(_peer_app, peer_dsn, max(concurrencies))
    pool = await shedding.create_pool(dsn, min_size=2, max_size=max(concurrencies),
                                      acquire_timeout=60)
    try:
        await ours(pool, 2, 20)  # warm-up: connections, statement caches
        await raw(pool, 2, 20)
        await asyncio.to_thread(peer, app, 2, 20)
        for c in concurrencies:
            n = commands * (1 if c == 1 else 2)
            ours_s = await repeat(repeats, lambda c=c, n=n: ours(pool, c, n))
            raw_s = await repeat(repeats, lambda c=c, n=n: raw(pool, c, n))
            peer_s = await repeat(repeats, lambda c=c, n=n: asyncio.to_thread(peer, app, c, n))
            env.log(f"command path c={c}: ours {ours_s['median']:,.0f}/s, raw "
                    f"{raw_s['median']:,.0f}/s, eventsourcing {peer_s['median']:,.0f}/s")
            rows.append({"path": f"command in-process c={c}", "unit": "commands/s",
                         "value": ours_s, "ceiling_name": "raw asyncpg BEGIN/INSERT/COMMIT",
                         "ceiling": raw_s, "peer_name": "eventsourcing", "peer": peer_s})
    finally:
        await pool.close()
        await asyncio.to_thread(app.close) if hasattr(app, "close") else None
    counted, seen = await statements(await env.fresh_database("stmts", "bench"))
    env.log(f"statements per command: create {counted['create']:.1f}, update "
            f"{counted['update']:.1f}, raw {counted['raw']:.1f}")
    rows.append({"path": "statements per command", "unit": "statements",
                 "value": {"median": counted["ours"], "min": counted["create"],
                           "max": counted["update"], "runs": [counted["create"], counted["update"]]},
                 "ceiling_name": "raw BEGIN/INSERT/COMMIT",
                 "ceiling": {"median": counted["raw"], "min": counted["raw"],
                             "max": counted["raw"], "runs": [counted["raw"]]},
                 "lower_is_better": True,
                 "note": f"create {counted['create']:.0f}, update {counted['update']:.0f}",
                 "statements": seen})
    return rows
