"""The audit trail's query on a year's worth of events (100,000: 25,000 groups registered,
rostered, approved and funded across the 38 provinces by 50 admins): an inspector's questions
answer right (the counts are known from how the rows were made), and every filtered question
reaches its rows through an index, never a read of the whole store (the first, unindexed
province question took 8 s). How long each takes is measured by `make bench` (bench/audit_path.py,
docs/audit.md), not asserted here: a timed test fails on a loaded machine, not on a slow query."""

from __future__ import annotations

import asyncpg
import pytest

from bench.audit_path import ADMINS, ask, fill, first_of_month, questions
from shared import audit
from shared.audit import _TRAIL, _page_sql
from shared.paging import PageParams
from shared.regions import provinces
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration

GROUPS = 25_000


@pytest.fixture(scope="module")
async def filled(infra):
    url = await create_database(infra, "t_audit_scale")
    conn = await asyncpg.connect(url)
    try:
        await fill(conn, GROUPS)
        yield conn, [p.code for p in provinces()]
    finally:
        await conn.close()
        await drop_database(infra, url)


async def _plans(conn: asyncpg.Connection, filters: audit.AuditFilter) -> str:
    """EXPLAIN of the question's count and page, as `audit.query` sends them."""
    args: list = []
    where = filters.where(args)
    page_args = list(args)
    page_sql = _page_sql(where, PageParams(100, 0).window(page_args))
    plans = [await conn.fetch(f"EXPLAIN SELECT count(*) FROM ({_TRAIL}) u WHERE {where}", *args),
             await conn.fetch(f"EXPLAIN {page_sql}", *page_args)]
    return "\n".join(r[0] for plan in plans for r in plan)


async def _asked(conn: asyncpg.Connection, question: str):
    """One of the bench's questions (bench/audit_path.py), asked as the API asks it."""
    filters, limit = questions()[question]
    return await ask(conn, filters, limit)


async def test_every_filtered_question_reads_through_an_index(filled):
    conn, _ = filled
    for name, (filters, _) in questions().items():
        if name.startswith("everything"):
            continue
        plan = await _plans(conn, filters)
        assert "Seq Scan on events" not in plan, (name, plan)
        assert "Index" in plan, (name, plan)


async def test_one_province_s_funding_decisions_in_a_month(filled):
    conn, codes = filled
    papua_tengah = codes.index("94")
    page, _ = await _asked(conn, "province + GroupFunded + one month")
    in_march = [i for i in range(GROUPS) if i % len(codes) == papua_tengah
                and first_of_month(3).timestamp() <= 1767225600 + i * 1200 + 4
                < first_of_month(4).timestamp()]
    assert page["total"] == len(in_march) > 0
    assert [r["stream_id"] for r in page["items"]] == [f"group-g{i}" for i in in_march][:100]
    assert {r["province_code"] for r in page["items"]} == {"94"}
    assert all(r["summary"].startswith("amount=20000000 tranche=1") for r in page["items"])


async def test_approvals_take_their_group_s_province(filled):
    conn, codes = filled
    page, _ = await _asked(conn, "province + GroupApproved")
    assert page["total"] == len([i for i in range(GROUPS) if codes[i % len(codes)] == "94"])
    assert {r["province_code"] for r in page["items"]} == {"94"}


async def test_one_actor_s_decisions_and_one_group_s_story(filled):
    conn, _ = filled
    page, _ = await _asked(conn, "one actor + GroupFunded")  # admin 7
    assert page["total"] == len([i for i in range(GROUPS) if i % ADMINS == 7])
    story, _ = await _asked(conn, "one group's story")  # g12345
    assert [r["event_type"] for r in story["items"]] == [
        "GroupRegistered", "groups.RosterRecorded", "GroupApproved", "GroupFunded"]
    assert story["items"][1]["summary"] == "group_id=g12345"  # the roster names no one
    everything, _ = await _asked(conn, "everything, first 1000")
    assert everything["total"] == 4 * GROUPS
    assert len(everything["items"]) == 1000
    assert [r["stream_id"] for r in everything["items"][:5]] == [
        "group-g0", "group-g0", "group-g0", "group-g0", "group-g1"]
