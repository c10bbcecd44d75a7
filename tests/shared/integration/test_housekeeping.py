import asyncio
import logging
import uuid

import asyncpg
import pytest

from shared.eventstore import migrate
from shared.housekeeping import prune
from shared.kafka_security import kafka_security
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from tests.support.kafka import eventually
from tests.support.sample import router

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kernel-test")
    await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _outbox(pool, label: str, *, sent: str | None, failed: str | None = None,
                  created: str = "0") -> int:
    """One outbox row; `sent` and `created` are ages ("8 days"), None for never sent."""
    return await pool.fetchval(
        "INSERT INTO outbox (topic, message_key, event_id, value, created_at, sent_at, "
        "failed_reason) VALUES ('tkm.test.v1', $1, $2, 'x', now() - $3::text::interval, "
        "now() - $4::text::interval, $5) RETURNING id",
        label, uuid.uuid4(), created, sent, failed)


async def _inbox(pool, outcome: str, age: str) -> uuid.UUID:
    event_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, outcome, "
        "processed_at) VALUES ($1, 'tkm.test.v1', 0, 0, $2, now() - $3::text::interval)",
        event_id, outcome, age)
    return event_id


class _Counting:
    """The pool, counting each statement and what it deleted."""

    def __init__(self, pool):
        self.pool, self.deleted = pool, []

    async def execute(self, sql, *args):
        status = await self.pool.execute(sql, *args)
        self.deleted.append((sql.split()[2], int(status.split()[-1])))
        return status


async def test_old_sent_outbox_and_old_applied_inbox_rows_go_in_batches_the_rest_stays(
        pool, database_url):
    old_sent = [await _outbox(pool, f"old-{i}", sent="8 days", created="8 days")
                for i in range(5)]
    recent = await _outbox(pool, "recent", sent="1 hour", created="1 hour")
    unsent = await _outbox(pool, "unsent", sent=None, created="30 days")
    failed = await _outbox(pool, "failed", sent=None, failed="too large", created="30 days")
    failed_sent = await _outbox(pool, "odd", sent="30 days", failed="too large",
                                created="30 days")
    old_done = [await _inbox(pool, "applied", "31 days") for _ in range(4)]
    old_done.append(await _inbox(pool, "ignored", "31 days"))
    dead = await _inbox(pool, "dead-lettered", "400 days")
    unknown = await _inbox(pool, "paused", "400 days")  # an outcome this code does not know
    young = await _inbox(pool, "applied", "29 days")

    settings = load_settings("groups", database_url=database_url, outbox_retention_hours=168,
                             inbox_retention_days=30, housekeeping_batch_size=2)
    counting = _Counting(pool)
    assert await prune(counting, settings) == {"outbox": 5, "inbox": 5}
    # each statement deletes at most one batch; a short batch ends the table's run
    assert counting.deleted == [("outbox", 2), ("outbox", 2), ("outbox", 1),
                                ("inbox", 2), ("inbox", 2), ("inbox", 1)]

    left = {r["id"] for r in await pool.fetch("SELECT id FROM outbox")}
    assert left == {recent, unsent, failed, failed_sent}
    assert not left & set(old_sent)
    assert {r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox")} == \
        {dead, unknown, young}
    assert await prune(pool, settings) == {"outbox": 0, "inbox": 0}

    # a shorter retention reaches the rows the longer one kept
    shorter = load_settings("groups", database_url=database_url, outbox_retention_hours=0.5,
                            inbox_retention_days=28)
    assert await prune(pool, shorter) == {"outbox": 1, "inbox": 1}
    assert {r["id"] for r in await pool.fetch("SELECT id FROM outbox")} == \
        {unsent, failed, failed_sent}


async def test_instances_pruning_at_once_delete_each_row_once(pool, database_url):
    await pool.execute(
        "INSERT INTO outbox (topic, message_key, event_id, value, sent_at) "
        "SELECT 'tkm.test.v1', 'k', gen_random_uuid(), 'x', now() - interval '8 days' "
        "FROM generate_series(1, 500)")
    settings = load_settings("groups", database_url=database_url, housekeeping_batch_size=7)
    runs = await asyncio.gather(*(prune(pool, settings) for _ in range(3)))
    assert sum(r["outbox"] for r in runs) == 500
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_every_service_prunes_in_the_background_and_logs_what_it_deleted(
        infra, database_url, pool):
    for i in range(3):
        await _outbox(pool, f"old-{i}", sent="8 days")
    recent = await _outbox(pool, "recent", sent="1 minute")
    await _inbox(pool, "applied", "40 days")
    fresh = await _inbox(pool, "applied", "1 day")

    spec = ServiceSpec(name="groups", topic=f"tkm.hktest-{uuid.uuid4().hex[:8]}.v1",
                       routers=[router])
    # a topic of the test's own: the admin creates it (the groups principal may not)
    app = create_app(spec, load_settings("groups", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         housekeeping_interval_s=0.2),
                     security=kafka_security(service="admin"))
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("tkm.housekeeping")
    logger.addHandler(handler)
    try:
        async with app.router.lifespan_context(app):
            async def logged(line: str):
                return line in lines

            await eventually(lambda: logged("pruned 3 sent outbox rows and 1 inbox rows"),
                             timeout=20)
            assert {r["id"] for r in await pool.fetch("SELECT id FROM outbox")} == {recent}
            assert {r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox")} \
                == {fresh}

            # it runs again on its interval, not only at start-up
            again = await _outbox(pool, "later", sent="9 days")
            await eventually(lambda: logged("pruned 1 sent outbox rows and 0 inbox rows"),
                             timeout=20)
            assert {r["id"] for r in await pool.fetch("SELECT id FROM outbox")} == {recent}
            assert again not in {r["id"] for r in await pool.fetch("SELECT id FROM outbox")}
    finally:
        logger.removeHandler(handler)
