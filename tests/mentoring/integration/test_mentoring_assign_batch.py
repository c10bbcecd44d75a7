"""POST /assignments/batch: many explicit mentor assignments under the single route's rules, a
result per item in input order (issue 16 item 6, issue 17 item 2). The test config writes two
groups per transaction, so every batch here spans several."""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta

import pytest

from shared.auth import Role
from tests.mentoring.integration.mentoring_helpers import (
    ADMIN,
    fresh,
    headers,
    running_mentoring,
    tks_headers,
)
from tests.support.databases import create_database

pytestmark = pytest.mark.integration

ON = date(2023, 3, 1)


def item(group_id: str, tks_id: str, on: date = ON) -> dict:
    return {"group_id": group_id, "tks_id": tks_id, "assigned_on": on.isoformat()}


async def batch(m, items: list[dict], who: dict[str, str] = ADMIN, **extra):
    return await m.client.post("/assignments/batch", headers={**who, **extra},
                               json={"assignments": items})


async def set_cap(m, cap: int, year: int = 2023) -> None:
    r = await m.client.put(f"/rules/{year}", headers=ADMIN, json={
        "rules": {"assignment": {"caseload_cap": cap, "allow_same_province": False}}})
    assert r.status_code < 300, r.text


async def assignments(m) -> list[tuple]:
    async with m.db() as conn:
        rows = await conn.fetch("SELECT group_id, stream_version, tks_id, assigned_on, "
                                "unassigned_on, reason FROM mentor_assignments "
                                "ORDER BY group_id, stream_version")
    return [tuple(r) for r in rows]


async def caseloads(m, tks: list[str]) -> dict[str, int]:
    async with m.db() as conn:
        rows = await conn.fetch("SELECT tks_id, caseload FROM mentors WHERE tks_id = ANY($1)",
                                tks)
    return {r["tks_id"]: r["caseload"] for r in rows}


async def test_each_item_gets_its_own_result_and_a_bad_one_spares_its_neighbours(mentoring):
    m = mentoring
    a, far = fresh("tks"), fresh("tks")
    g = sorted(fresh("grp") for _ in range(4))
    await m.recruit(a, "3201")
    await m.recruit(far, "3171")
    for group in g:
        await m.fund(group, "3201", date(2023, 2, 20))
    await m.known(tks=(a, far), groups=tuple(g))
    assert (await m.assign(g[3], a, ON)).status_code == 201

    tomorrow = date.today() + timedelta(days=2)
    r = await batch(m, [item(g[0], a), item("grp-unknown", a), item(g[1], far),
                        item(g[1], a, date(2023, 3, 2)), item(g[0], a), item(g[2], "tks-none"),
                        item(g[2], a, tomorrow), item(g[3], a)])
    assert r.status_code == 200, r.text
    body = r.json()
    got = [(x["index"], x["group_id"], x["status"], (x["error"] or {}).get("status"),
            (x["error"] or {}).get("field")) for x in body["results"]]
    assert got == [(0, g[0], "assigned", None, None),
                   (1, "grp-unknown", "refused", 404, "group_id"),
                   (2, g[1], "refused", 422, "tks_id"),       # outside the group's regency
                   (3, g[1], "assigned", None, None),          # the neighbour still goes in
                   (4, g[0], "refused", 409, "tks_id"),        # a mentors it since item 0
                   (5, g[2], "refused", 404, "tks_id"),
                   (6, g[2], "refused", 400, "assigned_on"),   # in the future
                   (7, g[3], "refused", 409, "tks_id")]        # already mentors it
    assert (body["assigned"], body["refused"]) == (2, 6)
    assert [x["caseload"] for x in body["results"] if x["status"] == "assigned"] == [2, 3]
    current = {row[0]: (row[2], row[3]) for row in await assignments(m) if row[4] is None}
    assert current == {g[0]: (a, ON), g[1]: (a, date(2023, 3, 2)), g[3]: (a, ON)}
    assert await caseloads(m, [a, far]) == {a: 3, far: 0}

    too_many = await batch(m, [item(fresh("grp"), a) for _ in range(5_001)])
    assert too_many.status_code == 400
    assert too_many.json()["error"]["field"] == "assignments"


async def test_the_cap_holds_within_a_batch_and_a_reassignment_frees_a_place(mentoring):
    m = mentoring
    a, b = fresh("tks"), fresh("tks")
    g = sorted(fresh("grp") for _ in range(4))
    await m.recruit(a, "3201")
    await m.recruit(b, "3201")
    for group in g:
        await m.fund(group, "3201", date(2023, 2, 20))
    await m.known(tks=(a, b), groups=tuple(g))
    await set_cap(m, 2)

    r = (await batch(m, [item(g[0], a), item(g[1], a), item(g[2], a)])).json()
    assert [x["status"] for x in r["results"]] == ["assigned", "assigned", "refused"]
    assert "the cap is 2" in r["results"][2]["error"]["reason"]
    # in one transaction: g0 leaves a for b, so a takes g2; then a is full again for g3
    r = (await batch(m, [item(g[0], b, date(2023, 4, 1)), item(g[2], a, date(2023, 4, 1)),
                         item(g[3], a, date(2023, 4, 1))])).json()
    assert [(x["status"], x.get("previous_tks_id")) for x in r["results"]] == [
        ("assigned", a), ("assigned", None), ("refused", None)]
    assert await caseloads(m, [a, b]) == {a: 2, b: 1}


async def test_two_racing_batches_never_push_a_tks_past_its_cap(mentoring):
    m = mentoring
    a = fresh("tks")
    g = sorted(fresh("grp") for _ in range(4))
    await m.recruit(a, "3201")
    for group in g:
        await m.fund(group, "3201", date(2023, 2, 20))
    await m.known(tks=(a,), groups=tuple(g))
    await set_cap(m, 3)

    # hold the TKS's row so that both batches have read their groups and wait on it together
    async with m.db() as held:
        tx = held.transaction()
        await tx.start()
        await held.execute("SELECT 1 FROM mentors WHERE tks_id = $1 FOR UPDATE", a)
        first = asyncio.create_task(batch(m, [item(g[0], a), item(g[1], a)]))
        second = asyncio.create_task(batch(m, [item(g[2], a), item(g[3], a)]))
        deadline = time.monotonic() + 15
        while await held.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'") < 2:
            assert time.monotonic() < deadline, "the two batches never raced"
            await asyncio.sleep(0.05)
        await tx.rollback()
        answers = [(await first).json(), (await second).json()]

    statuses = sorted(x["status"] for r in answers for x in r["results"])
    assert statuses == ["assigned"] * 3 + ["refused"]
    assert await caseloads(m, [a]) == {a: 3}
    assert sum(row[4] is None for row in await assignments(m)) == 3


async def test_a_retried_batch_applies_nothing_twice(mentoring):
    m = mentoring
    a = fresh("tks")
    g = sorted(fresh("grp") for _ in range(3))
    await m.recruit(a, "3201")
    for group in g:
        await m.fund(group, "3201", date(2023, 2, 20))
    await m.known(tks=(a,), groups=tuple(g))
    items = [item(group, a) for group in g]
    key = {"Idempotency-Key": fresh("key")}

    first = await batch(m, items, **key)
    again = await batch(m, items, **key)
    assert first.status_code == again.status_code == 200
    assert first.json()["assigned"] == 3 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = await batch(m, items[:1], **key)
    assert other.status_code == 422
    async with m.db() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE event_type = "
                                   "'MentorAssigned'") == 3
    assert await caseloads(m, [a]) == {a: 3}
    # without the key a repeat is refused item by item, not applied
    plain = (await batch(m, items)).json()
    assert {x["error"]["status"] for x in plain["results"]} == {409}


async def test_roles_and_province_scope_are_those_of_the_single_route(mentoring):
    m = mentoring
    west, south = fresh("tks"), fresh("tks")
    gw, gs = fresh("grp"), fresh("grp")
    await m.recruit(west, "3201")
    await m.recruit(south, "7371")
    await m.fund(gw, "3201", date(2023, 2, 20))
    await m.fund(gs, "7371", date(2023, 2, 20))
    await m.known(tks=(west, south), groups=(gw, gs))

    for who in (tks_headers(west), headers(Role.AGENCY, "bps")):
        r = await batch(m, [item(gw, west)], who)
        assert r.status_code == 403, r.text
    officer = headers(Role.PROVINCE, "officer-32", province_code="32")
    r = (await batch(m, [item(gs, south), item(gw, west)], officer)).json()
    assert [(x["status"], (x["error"] or {}).get("status"), (x["error"] or {}).get("field"))
            for x in r["results"]] == [("refused", 403, "province_code"),
                                       ("assigned", None, None)]
    single = await m.assign(gs, south, ON, officer)
    assert (single.status_code, single.json()["error"]["field"]) == (403, "province_code")
    current = {row[0]: row[2] for row in await assignments(m) if row[4] is None}
    assert current == {gw: west}


async def test_a_batch_leaves_the_same_assignments_as_the_same_single_calls(infra, database_url):
    """The same script of assignments, reassignments and refusals through single calls in one
    database and through batches in another: the two assignment tables are identical."""
    other_url = await create_database(infra)
    async with running_mentoring(infra.kafka_bootstrap, database_url) as one, \
            running_mentoring(infra.kafka_bootstrap, other_url) as many:
        tks = [fresh("tks") for _ in range(3)]
        g = [fresh("grp") for _ in range(7)]
        for t in tks:
            await one.recruit(t, "3201")  # both services consume the same topics
        for group in g:
            await one.fund(group, "3201", date(2023, 2, 20))
        for m in (one, many):
            await m.known(tks=tuple(tks), groups=tuple(g))
            await set_cap(m, 3)
        rounds = [
            [item(g[i], tks[i % 2]) for i in range(7)],  # tks[0] takes 3, then is full
            [item(g[0], tks[2], date(2023, 5, 1)), item(g[6], tks[0], date(2023, 5, 1)),
             item(g[1], tks[1], date(2023, 5, 2)), item(g[2], tks[0], date(2023, 2, 1)),
             item(g[3], tks[2], date(2023, 5, 3)), item(g[3], tks[1], date(2023, 5, 4)),
             item(g[5], tks[2], date(2023, 5, 4)), item(g[4], tks[2], date(2023, 2, 1))],
        ]
        for script in rounds:
            singles = [await one.assign(x["group_id"], x["tks_id"],
                                        date.fromisoformat(x["assigned_on"]))
                       for x in script]
            results = (await batch(many, script)).json()["results"]
            assert [x["status"] == "assigned" for x in results] == [
                s.status_code == 201 for s in singles]
            assert [(x["error"] or {}).get("reason") for x in results] == [
                None if s.status_code == 201 else s.json()["error"]["reason"] for s in singles]
        table = await assignments(one)
        assert len(table) >= 11
        assert table == await assignments(many)
        assert await caseloads(one, tks) == await caseloads(many, tks)
