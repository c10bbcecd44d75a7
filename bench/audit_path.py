"""The audit trail's questions on a year's worth of events (`GROUPS` groups registered,
rostered, approved and funded across the 38 provinces by `ADMINS` admins, four events each):
how long an inspector waits for each (count and page together, docs/audit.md), beside a plain
page of the same number of events read in time order with no filter. The fill is shared with
tests/shared/integration/test_audit_scale.py, which checks the answers and the plans."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.common import BenchEnv, summary
from shared import audit
from shared.eventstore import migrate
from shared.paging import PageParams
from shared.regions import provinces

ADMINS = 50

# group i: province PROVINCES[i % 38], registered and funded in 2026, ~20 minutes apart; its
# four events by admin i % 50 under one correlation id per command
FILL = """
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


def first_of_month(month: int) -> datetime:
    return datetime(2026, month, 1, tzinfo=UTC)


def questions() -> dict[str, tuple[audit.AuditFilter, int]]:
    """The inspector's questions of docs/audit.md: a filter and the page size."""
    return {
        "province + GroupFunded + one month": (audit.AuditFilter(
            province="94", types=["GroupFunded"], since=first_of_month(3),
            until=first_of_month(4)), 100),
        "province + GroupApproved": (audit.AuditFilter(province="94",
                                                       types=["GroupApproved"]), 100),
        "one actor + GroupFunded": (audit.AuditFilter(actor="0" * 19 + "7",
                                                      types=["GroupFunded"]), 100),
        "one group's story": (audit.AuditFilter(stream="g12345"), 100),
        "everything, first 1000": (audit.AuditFilter(), 1000),
    }


async def fill(conn: asyncpg.Connection, groups: int) -> None:
    """The groups service's schema and audit tables with `groups` groups' four events each."""
    await migrate(conn, "groups")
    await audit.migrate(conn)
    await conn.execute(FILL, groups, ADMINS, [p.code for p in provinces()])
    await conn.execute("ANALYZE events")


async def ask(conn: asyncpg.Connection, filters: audit.AuditFilter,
              limit: int) -> tuple[dict[str, Any], float]:
    """One question as the API asks it (a read-only snapshot): its page and the seconds taken."""
    began = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        page = await audit.query(conn, "groups", filters, PageParams(limit, 0))
    return page, time.perf_counter() - began


async def run(env: BenchEnv, groups: int, repeats: int) -> list[dict[str, Any]]:
    url = await env.fresh_database("audit")
    conn = await asyncpg.connect(url)
    try:
        await fill(conn, groups)
        env.log(f"audit: {4 * groups:,} events")
        plain = []
        for _ in range(repeats):
            began = time.perf_counter()
            await conn.fetch("SELECT * FROM events ORDER BY occurred_at, global_position "
                             "LIMIT 1000")
            plain.append((time.perf_counter() - began) * 1000)
        rows = []
        for name, (filters, limit) in questions().items():
            runs = [(await ask(conn, filters, limit))[1] * 1000 for _ in range(repeats)]
            rows.append({"path": f"audit {name}, {4 * groups:,} events", "unit": "ms",
                         "value": summary(runs), "lower_is_better": True,
                         "ceiling_name": "1000 events in time order, no filter",
                         "ceiling": summary(plain)})
        return rows
    finally:
        await conn.close()
