"""shared.rules on a real Postgres: shipped rules adopted once by instances starting together,
adoption as an event with its actor, versions, and a second instance's cache seeing an adoption
made by the first (LISTEN/NOTIFY) without reading the table for every command."""

from __future__ import annotations

import asyncio

from pathlib import Path

import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict, Field

from shared.aggregate import run_command
from shared.auth import Actor, Role
from shared.eventstore import EventStore, migrate
from shared.rules import ProgrammeRulesAdopted, RuleBook
from shared.errors import RuleViolationError

pytestmark = pytest.mark.integration


class YearRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_members: int = Field(ge=1)
    amount: int = Field(gt=0)


class Ctx:
    """What RuleBook.adopt needs of a ServiceContext: `command`."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool, self.store = pool, EventStore("rulestest")

    async def command(self, decide, actor: Actor):
        return await run_command(self.pool, self.store, decide, actor=actor.id)


ADMIN = Actor("admin@kemnaker.go.id", Role.ADMIN, alias="a1b2c3")


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    (tmp_path / "2021.toml").write_text("max_members = 16\namount = 10_000_000\n")
    (tmp_path / "2023.toml").write_text("max_members = 10\namount = 20_000_000\n")
    return tmp_path


@pytest.fixture
async def pool(database_url: str):
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "rulestest")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    yield pool
    await pool.close()


async def test_instances_starting_together_adopt_the_shipped_rules_once(pool, shipped):
    books = [RuleBook("rulestest", YearRules, shipped) for _ in range(4)]
    adopted = await asyncio.gather(*(b.seed(pool) for b in books))
    assert sorted(y for years in adopted for y in years) == [2021, 2023]
    rows = await pool.fetch("SELECT year, version, actor FROM programme_rules ORDER BY year")
    assert [tuple(r) for r in rows] == [(2021, 1, "system"), (2023, 1, "system")]
    events = await pool.fetch("SELECT stream_id, stream_version, actor FROM events "
                              "ORDER BY stream_id")
    assert [tuple(e) for e in events] == [("rules-2021", 1, "system"), ("rules-2023", 1, "system")]
    assert await books[0].seed(pool) == []
    rules, year, version = await books[0].in_force(pool, 2022)
    assert (rules.max_members, year, version) == (16, 2021, 1)


async def test_first_use_adopts_the_shipped_rules(pool, shipped):
    book = RuleBook("rulestest", YearRules, shipped)
    async with pool.acquire() as conn, conn.transaction():
        rules, year, _ = await book.in_force(conn, 2025)
    assert (rules.amount, year) == (20_000_000, 2023)
    assert await pool.fetchval("SELECT count(*) FROM programme_rules") == 2


async def test_adoption_is_an_event_with_its_actor_and_a_new_version(pool, shipped):
    book = RuleBook("rulestest", YearRules, shipped)
    await book.seed(pool)
    adopted = await book.adopt(Ctx(pool), ADMIN, 2023, {"max_members": 12, "amount": 15_000_000},
                               "  Kepmen   2024 ")
    assert (adopted.version, adopted.actor, adopted.note) == (2, "ministry_admin:a1b2c3",
                                                              "Kepmen 2024")
    row = await pool.fetchrow("SELECT payload, actor FROM events WHERE stream_id = 'rules-2023' "
                              "AND stream_version = 2")
    assert row["actor"] == "ministry_admin:a1b2c3"
    assert ProgrammeRulesAdopted.model_validate_json(row["payload"]).rules == {
        "max_members": 12, "amount": 15_000_000}
    assert [v.version for v in await book.versions(pool, 2023)] == [1, 2]
    rules, year, version = await book.in_force(pool, 2024)
    assert (rules.max_members, year, version) == (12, 2023, 2)
    assert (await book.in_force(pool, 2021)).rules.max_members == 16  # 2021 untouched


async def test_invalid_rules_change_nothing(pool, shipped):
    book = RuleBook("rulestest", YearRules, shipped)
    await book.seed(pool)
    before = await pool.fetchval("SELECT count(*) FROM events")
    with pytest.raises(RuleViolationError) as info:
        await book.adopt(Ctx(pool), ADMIN, 2023, {"max_members": 0, "amount": 1})
    assert info.value.field == "rules.max_members"
    with pytest.raises(RuleViolationError) as info:
        await book.adopt(Ctx(pool), ADMIN, 1999, {"max_members": 1, "amount": 1})
    assert info.value.field == "year"
    assert await pool.fetchval("SELECT count(*) FROM events") == before
    assert await pool.fetchval("SELECT max(version) FROM programme_rules") == 1


async def test_concurrent_adoptions_get_consecutive_versions(pool, shipped):
    book = RuleBook("rulestest", YearRules, shipped)
    await book.seed(pool)
    done = await asyncio.gather(*(book.adopt(Ctx(pool), ADMIN, 2030, {"max_members": n,
                                                                      "amount": 1})
                                  for n in range(1, 6)))
    assert sorted(a.version for a in done) == [1, 2, 3, 4, 5]
    last = await book.in_force(pool, 2030)
    assert last.version == 5
    assert last.rules.max_members == next(a.rules.max_members for a in done if a.version == 5)


async def test_instance_b_sees_instance_a_adoption(pool, shipped, database_url):
    a = RuleBook("rulestest", YearRules, shipped)
    b = RuleBook("rulestest", YearRules, shipped)
    await a.seed(pool)
    stop = asyncio.Event()
    listener = asyncio.create_task(b.listen(database_url, stop))
    try:
        for _ in range(200):
            if b.listening:
                break
            await asyncio.sleep(0.01)
        assert b.listening
        assert (await b.in_force(pool, 2023)).rules.max_members == 10
        loads = b.loads
        for _ in range(20):  # cached: no statement per command
            assert (await b.in_force(pool, 2023)).version == 1
        assert b.loads == loads
        await a.adopt(Ctx(pool), ADMIN, 2023, {"max_members": 11, "amount": 1})
        for _ in range(200):
            if (await b.in_force(pool, 2023)).version == 2:
                break
            await asyncio.sleep(0.01)
        rules, _, version = await b.in_force(pool, 2023)
        assert (rules.max_members, version) == (11, 2)
        assert b.loads == loads + 1  # read again once, after the notification
    finally:
        stop.set()
        await listener
    assert not b.listening


async def test_without_a_listener_nothing_is_cached(pool, shipped):
    a = RuleBook("rulestest", YearRules, shipped)
    b = RuleBook("rulestest", YearRules, shipped)
    assert (await b.in_force(pool, 2023)).version == 1
    await a.adopt(Ctx(pool), ADMIN, 2023, {"max_members": 9, "amount": 1})
    assert (await b.in_force(pool, 2023)).rules.max_members == 9


