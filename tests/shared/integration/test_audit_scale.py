"""The audit trail's query on a year's worth of events (100,000: 25,000 groups registered,
rostered, approved and funded across the 38 provinces by 50 admins): an inspector's questions
answer within a second and a half each (the first, unindexed province question took 8 s), and
answer right (the counts are known from how the rows were made)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import pytest

from shared import audit
from shared.eventstore import migrate
from shared.paging import PageParams
from shared.regions import provinces
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration

GROUPS = 25_000
ADMINS = 50
BUDGET_S = 1.5  # per question, on a loaded test machine (docs/audit.md: the times measured)

# group i: province PROVINCES[i % 38], registered and funded in 2026, ~20 minutes apart; its
# four events by admin i % 50 under one correlation id per command
_FILL = """
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                    occurred_at, correlation_id, actor, payload)
SELECT gen_random_uuid(), 'group-g' || i, v, t, 1,
       timestamptz '2026-01-01 00:00:00+00' + (i * interval '20 minutes') + v * interval '1 s',
       gen_random_uuid(), 'ministry_admin:' || lpad(to_hex(i % $2), 20, '0'),
       CASE v
         WHEN 1 THEN jsonb_build_object('group_id', 'g' || i, 'year', 2026, 'stage', 'pemula',
                     'province_code', p, 'regency_code', p || '01', 'business_type', 'tailoring',
                     'member_count', 10)
         WHEN 2 THEN jsonb_build_object('group_id', 'g' || i, 'name', 'KUB ' || i,
                     'members', jsonb_build_array(jsonb_build_object('nik', '3201', 'name', 'x')))
         WHEN 3 THEN jsonb_build_object('group_id', 'g' || i)
         ELSE jsonb_build_object('group_id', 'g' || i, 'tranche', 1, 'amount', 20000000,
                     'disbursed_on', '2026-03-01', 'budget_year', 2026, 'year', 2026,
                     'province_code', p, 'regency_code', p || '01', 'lpj_due_on', '2026-06-01')
       END
FROM generate_series(0, $1 - 1) AS i,
     LATERAL (SELECT ($3::text[])[1 + i % cardinality($3::text[])] AS p) AS prov,
     LATERAL (VALUES (1, 'GroupRegistered'), (2, 'groups.RosterRecorded'),
                     (3, 'GroupApproved'), (4, 'GroupFunded')) AS e(v, t)
"""


@pytest.fixture(scope="module")
async def filled(infra):
    url = await create_database(infra, "t_audit_scale")
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "groups")
        await audit.migrate(conn)
        codes = [p.code for p in provinces()]
        await conn.execute(_FILL, GROUPS, ADMINS, codes)
        await conn.execute("ANALYZE events")
        yield conn, codes
    finally:
        await conn.close()
        await drop_database(infra, url)


def _first_of_month(month: int) -> datetime:
    return datetime(2026, month, 1, tzinfo=UTC)


async def _timed(conn, filters: audit.AuditFilter, limit: int = 100):
    began = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        page = await audit.query(conn, "groups", filters, PageParams(limit, 0))
    return page, time.perf_counter() - began


async def test_one_province_s_funding_decisions_in_a_month(filled):
    conn, codes = filled
    papua_tengah = codes.index("94")
    march = audit.AuditFilter(province="94", types=["GroupFunded"], since=_first_of_month(3),
                              until=_first_of_month(4))
    page, seconds = await _timed(conn, march)
    in_march = [i for i in range(GROUPS) if i % len(codes) == papua_tengah
                and _first_of_month(3).timestamp() <= 1767225600 + i * 1200 + 4
                < _first_of_month(4).timestamp()]
    assert page["total"] == len(in_march) > 0
    assert [r["stream_id"] for r in page["items"]] == [f"group-g{i}" for i in in_march][:100]
    assert {r["province_code"] for r in page["items"]} == {"94"}
    assert all(r["summary"].startswith("amount=20000000 tranche=1") for r in page["items"])
    print(f"\nprovince + type + month over {4 * GROUPS} events: {seconds * 1000:.0f} ms")
    assert seconds < BUDGET_S


async def test_approvals_take_their_group_s_province(filled):
    conn, codes = filled
    page, seconds = await _timed(conn, audit.AuditFilter(province="94", types=["GroupApproved"]))
    assert page["total"] == len([i for i in range(GROUPS) if codes[i % len(codes)] == "94"])
    assert {r["province_code"] for r in page["items"]} == {"94"}
    print(f"\nprovince (through the stream) + type: {seconds * 1000:.0f} ms")
    assert seconds < BUDGET_S


async def test_one_actor_s_decisions_and_one_group_s_story(filled):
    conn, _ = filled
    actor = "0" * 19 + "7"
    page, by_actor = await _timed(conn, audit.AuditFilter(actor=actor, types=["GroupFunded"]))
    assert page["total"] == len([i for i in range(GROUPS) if i % ADMINS == 7])
    story, by_group = await _timed(conn, audit.AuditFilter(stream="g12345"))
    assert [r["event_type"] for r in story["items"]] == [
        "GroupRegistered", "groups.RosterRecorded", "GroupApproved", "GroupFunded"]
    assert story["items"][1]["summary"] == "group_id=g12345"  # the roster names no one
    everything, unfiltered = await _timed(conn, audit.AuditFilter(), limit=1000)
    assert everything["total"] == 4 * GROUPS
    print(f"\nactor + type: {by_actor * 1000:.0f} ms; one group: {by_group * 1000:.0f} ms; "
          f"first 1000 of all: {unfiltered * 1000:.0f} ms")
    assert max(by_actor, by_group, unfiltered) < BUDGET_S
