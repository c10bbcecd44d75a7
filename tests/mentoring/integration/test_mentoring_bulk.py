"""A report batch interrupted by a database outage says per item what was filed (earlier
chunks stay committed), in a 503 JSON answer with Retry-After; never a 500 hiding writes."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import asyncpg
import pytest

from services.mentoring.domain import GroupMentoring
from tests.mentoring.integration.mentoring_helpers import (
    ADMIN,
    fresh,
    report,
    running_mentoring,
)
from tests.support.outage import CuttableProxy, via

pytestmark = pytest.mark.integration


async def filed(conn: asyncpg.Connection, groups: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'ReportFiled' AND "
        "stream_id = ANY($1::text[]) GROUP BY stream_id",
        [GroupMentoring.stream(g) for g in groups])
    counts = {r["stream_id"]: r["n"] for r in rows}
    return {g: counts.get(GroupMentoring.stream(g), 0) for g in groups}


async def test_a_report_batch_during_an_outage_says_what_was_filed(infra, database_url):
    proxy = CuttableProxy.to(database_url)
    await proxy.start()
    held = await asyncpg.connect(database_url)  # not through the proxy
    try:
        async with running_mentoring(infra.kafka_bootstrap, via(proxy, database_url)) as m:
            tks, groups = fresh("tks"), sorted(fresh("grp") for _ in range(6))
            await m.recruit(tks, "3201")
            for g in groups:
                await m.fund(g, "3201", date(2023, 3, 1))
            await m.known(tks=(tks,), groups=tuple(groups))
            for g in groups:
                assert (await m.assign(g, tks, date(2023, 3, 1))).status_code == 201
            # two groups a transaction: the second chunk waits on a lock of one of its
            # groups while the first commits, then the database goes away under it
            lock = held.transaction()
            await lock.start()
            await held.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               GroupMentoring.stream(groups[2]))
            batch = asyncio.create_task(m.client.post("/reports/batch", headers=ADMIN, json={
                "reports": [{**report("2023-04"), "group_id": g, "tks_id": tks}
                            for g in groups]}))
            deadline = time.monotonic() + 15
            while sum((await filed(held, groups[:2])).values()) < 2:
                assert time.monotonic() < deadline, "the first chunk never committed"
                await asyncio.sleep(0.05)
            await proxy.cut()
            answer = await asyncio.wait_for(batch, 20)
            await lock.rollback()

            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) > 0
            error = answer.json()["error"]
            assert (error["status"], error["filed"]) == (503, 2)
            assert [r["status"] for r in error["results"]] == ["filed"] * 2 + ["not_filed"] * 4
            assert await filed(held, groups) == {**dict.fromkeys(groups[:2], 1),
                                                 **dict.fromkeys(groups[2:], 0)}
            await proxy.start()  # back, so the service stops cleanly
    finally:
        await held.close()
