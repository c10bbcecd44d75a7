"""`tkm rebuild groups` after a concurrent history: the read models come back identical, and the
one-group-per-person rule (a service table) is neither replayed nor touched."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import date

import asyncpg
import httpx
import pytest

from services.groups.app import build_spec
from services.groups.domain import RosterRecorded
from services.groups.projections import REBUILD, MembershipTakenError, project
from shared.contracts.groups import GroupRejected
from shared.projections import RebuildPlan, rebuild_plan
from shared.service import create_app
from shared.settings import load_settings
from tests.groups import groups_support as support
from tests.groups.groups_support import ADMIN, member_inputs, registration
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration


async def test_a_membership_race_committed_out_of_insert_order_rebuilds_the_same(infra):
    """Group B takes a member group A frees: B's events are inserted before A's rejection but
    commit after it. Replaying the rule in insert order would refuse B; the rebuild does not
    replay the rule at all, and gives the live tables back."""
    b_name, reached, release = "KUB Rebuild B", asyncio.Event(), asyncio.Event()

    async def paused_for_b(conn: asyncpg.Connection, items) -> None:
        # B has appended its events (taken its positions) and waits before projecting
        if any(isinstance(e, RosterRecorded) and e.name == b_name for _, e in items):
            reached.set()
            await release.wait()
        await project(conn, items)

    database_url = await create_database(infra, "t_groups")
    spec = dataclasses.replace(build_spec(), projector=paused_for_b)
    app = create_app(spec, load_settings("groups", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap))
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://groups",
                timeout=60) as client:
            post = client.post
            a_body = registration("3201")
            a_created = await post("/groups", json=a_body, headers=ADMIN)
            assert a_created.status_code == 201, a_created.text
            a_id = a_created.json()["group_id"]
            b_body = registration("3201", name=b_name)
            b_body["members"][0] = a_body["members"][0]
            b = asyncio.create_task(post("/groups", json=b_body, headers=ADMIN))
            await asyncio.wait_for(reached.wait(), 30)
            rejected = await post(f"/groups/{a_id}/rejection", headers=ADMIN,
                                  json={"reason_code": "duplicate_proposal"})
            assert rejected.status_code == 200, rejected.text
            release.set()
            b_response = await b
            assert b_response.status_code == 201, b_response.text
            b_id = b_response.json()["group_id"]

            # an ordinary concurrent history around it: registrations racing for shared
            # members (one of each pair wins), approvals and fundings in parallel
            shared = member_inputs(6, "3201")
            bodies = []
            for member in shared:
                for _ in range(2):
                    body = registration("3201")
                    body["members"][0] = member
                    bodies.append(body)
            answers = await asyncio.gather(*(post("/groups", json=b, headers=ADMIN)
                                             for b in bodies))
            codes = [r.status_code for r in answers]
            assert (codes.count(201), codes.count(409)) == (6, 6), [r.text for r in answers]
            created = [r.json()["group_id"] for r in answers if r.status_code == 201]
            await asyncio.gather(*(post(f"/groups/{g}/approval", headers=ADMIN)
                                   for g in created))
            funded = await asyncio.gather(*(support.fund(client, g, {
                "tranche": 1, "amount": 20_000_000, "disbursed_on": date(2023, 6, 1).isoformat(),
                "budget_year": 2023}) for g in created))
            assert all(r["status"] == "funded" for r in funded), funded

        conn = await asyncpg.connect(database_url)
        try:
            roster_b, rejection_a = [await conn.fetchval(
                "SELECT global_position FROM events WHERE stream_id = $1 AND event_type = $2",
                stream, event_type) for stream, event_type in (
                    (f"group-{b_id}", RosterRecorded.event_type),
                    (f"group-{a_id}", GroupRejected.event_type))]
            assert roster_b < rejection_a  # inserted first, committed last

            live = await table_rows(conn, [*REBUILD.tables, "active_memberships"])
            shapes = await table_shapes(conn, REBUILD.tables)
            assert any(r[2] == b_id for r in live["active_memberships"])
            # the old way (the rule replayed as a read model, in insert order) refuses B, and a
            # failed rebuild leaves the live tables as they were
            with pytest.raises(MembershipTakenError):
                await rebuild_plan(conn, RebuildPlan(
                    (*REBUILD.tables, "active_memberships"), project))
            assert await table_rows(conn, [*REBUILD.tables, "active_memberships"]) == live
            await conn.execute("DELETE FROM group_members; UPDATE people_reached "
                               "SET members_registered = 0")  # damage: the replay repairs
            stats = await rebuild_plan(conn, REBUILD)
            assert stats.own_events == await conn.fetchval("SELECT count(*) FROM events")
            assert await table_rows(conn, [*REBUILD.tables, "active_memberships"]) == live
            assert await table_shapes(conn, REBUILD.tables) == shapes
            assert await leftovers(conn) == []
        finally:
            await conn.close()
    finally:
        await drop_database(infra, database_url)


async def test_commands_during_a_rebuild_reach_the_swapped_in_tables(groups):
    """A slow replay (each projector call delayed) while registrations race for members, and
    groups are rejected and funded: what committed meanwhile is caught up, so the swapped-in
    tables equal what a second, quiet rebuild gives."""
    post = groups.client.post

    async def register(body: dict) -> httpx.Response:
        return await post("/groups", json=body, headers=ADMIN)

    async def fund(group_id: str) -> None:
        assert (await post(f"/groups/{group_id}/approval", headers=ADMIN)).status_code == 200
        funded = await support.fund(groups.client, group_id, {
            "tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01",
            "budget_year": 2023})
        assert funded["status"] == "funded", funded

    before = [r.json()["group_id"] for r in await asyncio.gather(
        *(register(registration("3201")) for _ in range(8)))]
    await asyncio.gather(*(fund(g) for g in before[:4]))

    async def slow(conn: asyncpg.Connection, items) -> None:
        await asyncio.sleep(0.1)
        await REBUILD.projector(conn, items)

    conn = await asyncpg.connect(groups.database_url)
    reader = await asyncpg.connect(groups.database_url)
    reads: list[float] = []

    async def read_while(task: asyncio.Task) -> None:
        while not task.done():
            started = time.perf_counter()
            await reader.fetchval("SELECT count(*) FROM group_registry g JOIN people_reached p "
                                  "USING (year, province_code)")
            reads.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    try:
        started = time.perf_counter()
        rebuilding = asyncio.create_task(
            # pages of one event: the set-based replay would take the whole history at once
            rebuild_plan(conn, dataclasses.replace(REBUILD, projector=slow), batch_size=1))
        reading = asyncio.create_task(read_while(rebuilding))
        await asyncio.sleep(0.3)
        shared = member_inputs(3, "3201")
        racing = []
        for member in shared:
            for _ in range(2):
                body = registration("3201")
                body["members"][0] = member
                racing.append(body)
        answers = await asyncio.gather(*(register(b) for b in racing))
        assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 3
        rejected = await post(f"/groups/{before[5]}/rejection", headers=ADMIN,
                              json={"reason_code": "duplicate_proposal"})
        assert rejected.status_code == 200, rejected.text
        await asyncio.gather(*(fund(r.json()["group_id"]) for r in answers
                               if r.status_code == 201))
        assert not rebuilding.done(), "the replay ended before the commands: nothing to catch up"
        stats = await rebuilding
        took = time.perf_counter() - started
        await reading
        assert stats.caught_up > 0
        print(f"\ngroups rebuild while commands ran: {took:.2f}s, swap "
              f"{stats.swap_seconds * 1000:.0f} ms, {stats.caught_up} events caught up; "
              f"{len(reads)} reads of group_registry, worst {max(reads) * 1000:.1f} ms")
        assert max(reads) < took / 5
        swapped_in = await table_rows(conn, [*REBUILD.tables, "active_memberships"])
        await rebuild_plan(conn, REBUILD)
        assert await table_rows(conn, [*REBUILD.tables, "active_memberships"]) == swapped_in
    finally:
        await conn.close()
        await reader.close()
