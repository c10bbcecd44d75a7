"""`tkm rebuild evaluation`: the facts consumed from three topics and the service's own results
come back identical with the service running; `late_events` (how the live interleaving went)
is kept as it is."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import uuid
from datetime import date

import asyncpg
import pytest

from services.evaluation.app import REBUILD, build_spec
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.projections import rebuild_plan
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    at,
    close_year,
    envelope,
    publish,
    running_service,
)
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes
from tests.support.kafka import kafka_client, eventually

pytestmark = pytest.mark.integration


def _report(group_id: str, tks_id: str, period: str, revenue: int) -> m.ReportFiled:
    return m.ReportFiled(group_id=group_id, tks_id=tks_id, period=period, revenue=revenue,
                         production_units=40, production_unit="kg", members_active=10,
                         new_workers=1, on_time=True)


async def test_the_rebuilt_tables_equal_the_live_ones_after_a_concurrent_history(
        infra, database_url):
    year, run = random.randint(2030, 2090), uuid.uuid4().hex[:8]
    tks = [f"tks-{i}-{run}" for i in range(4)]
    grp = [f"grp-{i}-{run}" for i in range(4)]
    ours = {*tks, *grp}
    per_topic = {
        "recruitment": [envelope(r.TksRecruited(
            tks_id=t, round_id=f"round-{year}", year=year, stage=1, province_code="32",
            regency_code="3273", contract_start=date(year, 1, 1),
            contract_end=date(year, 12, 31)), f"tks-{t}") for t in tks],
        "groups": [envelope(g.GroupFunded(
            group_id=x, tranche=1, amount=20_000_000, disbursed_on=date(year, 2, 1),
            budget_year=year, year=year, province_code="32", regency_code="3273",
            lpj_due_on=date(year, 8, 1)), f"group-{x}") for x in grp]
        + [envelope(g.AccountabilityReportAccepted(group_id=grp[0], report_id="lpj-1"),
                    f"group-{grp[0]}", at(year, 7, 15))],
        "mentoring": [envelope(m.MentorAssigned(
            group_id=x, tks_id=t, province_code="32", regency_code="3273",
            assigned_on=date(year, 1, 5)), f"group-{x}") for x, t in zip(grp, tks, strict=True)]
        + [envelope(_report(x, t, f"{year}-{month:02d}", 1_000_000 * (i + 1)), f"group-{x}")
           for i, (x, t) in enumerate(zip(grp, tks, strict=True)) for month in range(1, 13)
           if month % (i + 1) == 0],
    }

    async with running_service(infra.kafka_bootstrap, database_url) as (_, client):
        opened = await client.post(f"/evaluations/{year}/open", headers=ADMIN)
        assert opened.status_code == 201, opened.text
        # the three topics at once, as the other services publish them
        await asyncio.gather(*(publish(infra.kafka_bootstrap, envs)
                               for envs in per_topic.values()))
        total = sum(len(envs) for envs in per_topic.values())

        async def consumed() -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM inbox WHERE event_id = ANY($1) AND outcome = 'applied'",
                    [e.event_id for envs in per_topic.values() for e in envs]) == total
            finally:
                await conn.close()
        await eventually(consumed)
        await close_year(client, year)
        # news about the closed year: kept as late
        late = envelope(_report(grp[3], tks[3], f"{year}-12", 5_000_000), f"group-{grp[3]}")
        await publish(infra.kafka_bootstrap, [late])

        async def noted() -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                return bool(await conn.fetchval(
                    "SELECT count(*) FROM late_events WHERE event_id = $1", late.event_id))
            finally:
                await conn.close()
        await eventually(noted)

        def of_ours(tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
            # topics are shared with every test running meanwhile: compare this test's rows
            return {t: [row for row in rows if row[0] in ours or row[0] == year
                        or str(row[0]).startswith(f"{year}-")
                        or (t == "approval_requests" and row[2] == f"evaluation-{year}")]
                    for t, rows in tables.items()}

        conn = await asyncpg.connect(database_url)
        try:
            live = of_ours(await table_rows(conn, REBUILD.tables))
            shapes = await table_shapes(conn, REBUILD.tables)
            assert len(live["report_facts"]) == 12 + 6 + 4 + 3
            assert len(live["evaluation_results"]) == 4
            # the close's approval request, granted by another admin, with the close's result
            [request] = live["approval_requests"]
            assert "granted" in request and "close_year" in request
            assert await conn.fetchval("SELECT count(*) FROM late_events WHERE year = $1",
                                       year) == 1
            late_before = await table_rows(conn, ["late_events"])
            await conn.execute("DELETE FROM report_facts; DELETE FROM evaluation_results; "
                               "DELETE FROM approval_requests; "
                               "UPDATE group_facts SET tranches = 0")  # the replay repairs
            # housekeeping prunes the inbox: the rebuild goes by the consumed log
            await conn.execute("DELETE FROM inbox")
            # as the service: its principal may read the topics it consumes (no group)
            stats = await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                                       bootstrap=infra.kafka_bootstrap,
                                       kafka_options=kafka_client("evaluation"))
            assert of_ours(await table_rows(conn, REBUILD.tables)) == live
            assert await table_shapes(conn, REBUILD.tables) == shapes
            # the replay's own notes of lateness went to a scratch copy: none added, none lost
            late_after = await table_rows(conn, ["late_events"])
            assert {x[0] for x in late_before["late_events"]} <= {
                x[0] for x in late_after["late_events"]}
            assert await conn.fetchval("SELECT count(*) FROM late_events WHERE year = $1",
                                       year) == 1
            assert await leftovers(conn) == []
            assert stats.consumed_events >= total + 1
            assert stats.own_events == await conn.fetchval("SELECT count(*) FROM events")

            # again in pages of 5: the consumed log and the topics are read page by page, and
            # no handler call ever gets more than a page
            sizes: list[int] = []

            def recorded(handler):
                @functools.wraps(handler)  # a batched handler stays batched
                async def record(uow, *args):
                    sizes.append(len(args[0]) if len(args) == 1 else 1)
                    await handler(uow, *args)
                return record

            plan = dataclasses.replace(REBUILD, consumed={
                t: recorded(h) for t, h in REBUILD.consumed.items()})
            await conn.execute("DELETE FROM report_facts; UPDATE group_facts SET tranches = 0")
            paged = await rebuild_plan(conn, plan, topics=build_spec().consumes,
                                       bootstrap=infra.kafka_bootstrap,
                                       kafka_options=kafka_client("evaluation"), batch_size=5)
            assert of_ours(await table_rows(conn, REBUILD.tables)) == live
            assert paged.consumed_events >= stats.consumed_events
            assert sizes and max(sizes) <= 5 and sum(sizes) == paged.consumed_events
            assert await leftovers(conn) == []
        finally:
            await conn.close()
