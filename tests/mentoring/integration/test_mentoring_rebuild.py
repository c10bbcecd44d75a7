"""`tkm rebuild mentoring`: read models fed by recruitment's and groups' topics and by the
service's own events come back identical, with the service running; `mentors` (the caseload
rule) is left alone."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from datetime import date

import pytest
from typer.testing import CliRunner

from scripts.cli import app
from services.mentoring.app import build_spec
from services.mentoring.projections import REBUILD
from shared.projections import rebuild_plan
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, report
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes
from tests.support.kafka import kafka_client, eventually

pytestmark = pytest.mark.integration


async def test_the_rebuilt_tables_equal_the_live_ones_after_a_concurrent_history(mentoring):
    regency, funded = "3273", date(2023, 3, 1)
    first, second = fresh("tks"), fresh("tks")
    groups = [fresh("grp") for _ in range(6)]
    await asyncio.gather(mentoring.recruit(first, regency), mentoring.recruit(second, regency),
                         *(mentoring.fund(g, regency, funded) for g in groups))
    await mentoring.known(tks=(first, second), groups=tuple(groups))

    assigned = await asyncio.gather(*(
        mentoring.assign(g, first if i < 3 else second, date(2023, 3, 5))
        for i, g in enumerate(groups)))
    assert all(r.status_code == 201 for r in assigned), [r.text for r in assigned]

    async def file(group: str, tks: str, **changes):
        return await mentoring.client.post(f"/groups/{group}/reports", headers=ADMIN, json=report(
            "2023-04", tks_id=tks, filed_on="2023-05-05", **changes))

    # two filings race for each of five groups: one wins, one is refused
    filed = await asyncio.gather(*(file(g, t, revenue=1_000_000 * (i + 1))
                                   for i, g in enumerate(groups[:5]) for t in (first, second)))
    assert sorted(r.status_code for r in filed).count(201) == 5, [r.text for r in filed]
    amended = await mentoring.client.put(
        f"/groups/{groups[0]}/reports/2023-04", headers=ADMIN,
        json={k: v for k, v in report("2023-04", revenue=9_000_000).items() if k != "period"})
    assert amended.status_code == 200, amended.text
    closed = await mentoring.client.post("/periods/2023-04/close", headers=ADMIN)
    assert closed.status_code in (200, 201) and closed.json()["overdue"] >= 1, closed.text

    # consumed events whose policies append own events, and one arriving afterwards
    late_group = fresh("grp")
    await asyncio.gather(mentoring.dissolve(groups[1]),
                         mentoring.release(second, regency, date(2023, 6, 1)),
                         mentoring.fund(late_group, regency, date(2023, 6, 2)))

    async def settled() -> bool:
        async with mentoring.db() as conn:
            return await conn.fetchval(
                "SELECT (SELECT dissolved_on IS NOT NULL AND tks_id IS NULL "
                "        FROM mentored_groups WHERE group_id = $1) "
                "AND (SELECT count(*) = 0 FROM mentored_groups WHERE tks_id = $2) "
                "AND (SELECT NOT active FROM mentors WHERE tks_id = $2) "
                "AND EXISTS (SELECT 1 FROM mentored_groups WHERE group_id = $3)",
                groups[1], second, late_group)
    await eventually(settled)

    # topics are shared with every test running meanwhile: their groups and TKS reach this
    # service too, so the tables fed by topics are compared on this test's rows
    ours = {*groups, late_group, first, second}

    def of_ours(tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
        return {t: [r for r in rows if t not in ("mentored_groups", "mentors") or r[0] in ours]
                for t, rows in tables.items()}

    async with mentoring.db() as conn:
        live = of_ours(await table_rows(conn, [*REBUILD.tables, "mentors"]))
        shapes = await table_shapes(conn, REBUILD.tables)
        assert len(live["mentored_groups"]) == 7 and len(live["mentors"]) == 2
        assert {r[0]: r[6] for r in live["mentors"]} == {first: 2, second: 0}  # caseloads
        assert len([r for r in live["monthly_reports"] if r[0] in ours]) == 5
        # damage: the groups (from the topics) and the totals (from own events) are replayed
        await conn.execute("DELETE FROM mentored_groups; UPDATE report_totals SET filed = 0")
        stats = await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                                   bootstrap=mentoring.kafka, kafka_options=kafka_client("mentoring"))
        assert of_ours(await table_rows(conn, [*REBUILD.tables, "mentors"])) == live
        assert await table_shapes(conn, REBUILD.tables) == shapes
        assert await leftovers(conn) == []
        # 2 TKS recruited, 7 groups funded, a dissolution, a release (and whatever other tests
        # published meanwhile); own: assignments, filings, an amendment, overdue marks and the
        # close, the unassignments the policies recorded
        assert stats.consumed_events >= 11
        assert stats.own_events == await conn.fetchval("SELECT count(*) FROM events")


async def test_events_consumed_and_commands_during_a_rebuild_reach_the_swapped_in_tables(
        mentoring):
    regency, tks = "3204", fresh("tks")
    groups = [fresh("grp") for _ in range(3)]
    await asyncio.gather(mentoring.recruit(tks, regency),
                         *(mentoring.fund(g, regency, date(2023, 3, 1)) for g in groups))
    await mentoring.known(tks=(tks,), groups=tuple(groups))
    for g in groups:
        assert (await mentoring.assign(g, tks, date(2023, 3, 5))).status_code == 201

    async def slowly(handler):
        @functools.wraps(handler)  # a batched handler stays batched
        async def slow(*args) -> None:
            await asyncio.sleep(0.1)
            await handler(*args)
        return slow

    plan = dataclasses.replace(
        REBUILD, projector=await slowly(REBUILD.projector),
        consumed={t: await slowly(h) for t, h in REBUILD.consumed.items()})
    later = [fresh("grp") for _ in range(2)]
    async with mentoring.db() as conn:
        rebuilding = asyncio.create_task(rebuild_plan(
            conn, plan, topics=build_spec().consumes, bootstrap=mentoring.kafka,
            kafka_options=kafka_client("mentoring")))
        await asyncio.sleep(0.2)
        await asyncio.gather(*(mentoring.fund(g, regency, date(2023, 4, 1)) for g in later))
        await mentoring.known(groups=tuple(later))
        for g in later:
            assert (await mentoring.assign(g, tks, date(2023, 4, 2))).status_code == 201
        assert not rebuilding.done(), "the replay ended before the new events: nothing to catch up"
        stats = await rebuilding
        assert stats.caught_up >= 4  # two fundings, two assignments at least
        ours = {*groups, *later, tks}

        def of_ours(tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
            return {t: [r for r in rows if t not in ("mentored_groups", "mentors")
                        or r[0] in ours] for t, rows in tables.items()}

        swapped_in = of_ours(await table_rows(conn, [*REBUILD.tables, "mentors"]))
        assert len(swapped_in["mentored_groups"]) == 5
        assert all(r[6] == tks for r in swapped_in["mentored_groups"])  # the mentor column
        await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                           bootstrap=mentoring.kafka, kafka_options=kafka_client("mentoring"))
        assert of_ours(await table_rows(conn, [*REBUILD.tables, "mentors"])) == swapped_in


async def test_tkm_rebuild_mentoring_replays_the_topics_and_the_store(mentoring, monkeypatch):
    regency, tks, group = "3205", fresh("tks"), fresh("grp")
    await asyncio.gather(mentoring.recruit(tks, regency),
                         mentoring.fund(group, regency, date(2023, 3, 1)))
    await mentoring.known(tks=(tks,), groups=(group,))
    assert (await mentoring.assign(group, tks, date(2023, 3, 5))).status_code == 201
    async with mentoring.db() as conn:
        before = await conn.fetchrow("SELECT * FROM mentored_groups WHERE group_id = $1", group)
        await conn.execute("DELETE FROM mentored_groups WHERE group_id = $1", group)
    monkeypatch.setenv("MENTORING_DATABASE_URL", mentoring.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", mentoring.kafka)
    result = await asyncio.to_thread(CliRunner().invoke, app, ["rebuild", "mentoring"])
    assert result.exit_code == 0, result.output
    assert "events replayed into mentored_groups" in result.output
    async with mentoring.db() as conn:
        after = await conn.fetchrow("SELECT * FROM mentored_groups WHERE group_id = $1", group)
    assert dict(after) == dict(before) and after["tks_id"] == tks
