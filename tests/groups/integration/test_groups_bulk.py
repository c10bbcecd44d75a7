"""Bulk requests tell the truth about what they wrote: a bad item changes nothing of its own
and hides nothing of the others; a database that goes away part-way gives a 503 JSON answer
(with Retry-After) that says per item what was written, never a 500 hiding writes. Bulk
fundings are asked for by a maker and granted by a checker (four eyes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.groups import bulk
from services.groups.app import build_spec
from shared.service import create_app
from shared.settings import load_settings
from tests.groups.groups_support import (
    ADMIN,
    CHECKER,
    csv_file,
    csv_rows,
    registration,
    through_checker,
)
from tests.support.databases import create_database, drop_database
from tests.support.kafka import eventually
from tests.support.outage import CuttableProxy, via

pytestmark = pytest.mark.integration


def funding(group_id: str, tranche: int = 1) -> dict:
    return {"group_id": group_id, "tranche": tranche, "amount": 20_000_000,
            "disbursed_on": "2023-06-01", "budget_year": 2023}


async def registered(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        answer = await client.post("/groups", json=registration(), headers=ADMIN)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["group_id"])
    return ids


async def approved(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = await registered(client, n)
    answer = await client.post("/groups/approvals", json={"group_ids": ids}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return ids


async def events_of(database_url: str, event_type: str, group_ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT stream_id, count(*) AS n FROM events WHERE event_type = $1 AND "
            "stream_id = ANY($2::text[]) GROUP BY stream_id", event_type,
            [f"group-{g}" for g in group_ids])
    finally:
        await conn.close()
    counts = {r["stream_id"].removeprefix("group-"): r["n"] for r in rows}
    return {g: counts.get(g, 0) for g in group_ids}


async def requests_of(database_url: str, group_ids: list[str],
                      command_type: str | None = None) -> dict[str, int]:
    """Four-eyes requests asked for each group (their own streams, `approval-<id>`), of one
    command type or all."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT payload->>'target' AS target, count(*) AS n FROM events WHERE event_type = "
            "'approvals.ApprovalRequested' AND payload->>'target' = ANY($1::text[]) AND "
            "($2::text IS NULL OR payload->>'command_type' = $2) GROUP BY 1",
            [f"group-{g}" for g in group_ids], command_type)
    finally:
        await conn.close()
    counts = {r["target"].removeprefix("group-"): r["n"] for r in rows}
    return {g: counts.get(g, 0) for g in group_ids}


async def test_approvals_with_one_bad_id_write_exactly_what_they_report(groups):
    good = await registered(groups.client, 3)
    bad = "bad\x00id"
    answer = await groups.client.post("/groups/approvals", headers=ADMIN,
                                      json={"group_ids": [*good, bad]})
    approvals = await events_of(groups.database_url, "GroupApproved", good)
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:  # per item: the good ones approved, the bad one refused
        results = {r["group_id"]: r["status"] for r in answer.json()["results"]}
        assert [results[g] for g in good] == [200, 200, 200]
        assert results[bad] >= 400
        assert approvals == dict.fromkeys(good, 1)
    else:  # refused as a whole: nothing approved
        assert answer.json()["error"]["status"] == answer.status_code
        assert approvals == dict.fromkeys(good, 0)


async def test_fundings_with_one_refused_item_fund_the_others_once(groups):
    ids = await approved(groups.client, 3)
    unapproved = (await registered(groups.client, 1))[0]
    results = await through_checker(groups.client, "/groups/fundings",
                                    [funding(g) for g in (*ids, unapproved)], 201)
    assert [r["status"] for r in results] == [201, 201, 201, 422]
    assert await events_of(groups.database_url, "GroupFunded", [*ids, unapproved]) == {
        **dict.fromkeys(ids, 1), unapproved: 0}


async def test_a_csv_with_a_nul_byte_registers_exactly_what_it_reports(groups):
    names = [f"Bulk {uuid.uuid4().hex[:8]}" for _ in range(8)]
    rows = [row for name in names[:7] for row in csv_rows(name)]
    poisoned = csv_rows(names[7])
    poisoned[0][7] = "Anggota\x00Nul"
    answer = await groups.client.post("/groups/imports", content=csv_file(rows + poisoned),
                                      headers={**ADMIN, "Content-Type": "text/csv"})
    assert answer.status_code < 500, answer.text
    conn = await asyncpg.connect(groups.database_url)
    try:
        stored = {r["name"] for r in await conn.fetch(
            "SELECT payload->>'name' AS name FROM events WHERE event_type = 'GroupRegistered' "
            "AND payload->>'name' = ANY($1::text[])", names)}
    finally:
        await conn.close()
    if answer.status_code == 200:
        said = {r["group_name"]: r["status"] for r in answer.json()["results"]}
        assert {n for n, s in said.items() if s == "registered"} == stored
        assert said.get(names[7]) != "registered"
    else:
        assert stored == set()


@contextlib.asynccontextmanager
async def groups_behind(proxy: CuttableProxy, database_url: str, kafka: str,
                        ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(build_spec(), load_settings(
        "groups", database_url=via(proxy, database_url), kafka_bootstrap_servers=kafka,
        relay_poll_interval_s=0.05, db_acquire_timeout_s=2))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://groups", timeout=30) as client:
            yield client


async def test_bulk_fundings_during_an_outage_say_what_was_written(infra, monkeypatch):
    # three groups' requests a transaction: the first three commit, the fourth waits
    monkeypatch.setattr(bulk, "ASKS_PER_TRANSACTION", 3)
    database_url = await create_database(infra, "t_groups_outage")
    proxy = CuttableProxy.to(database_url)
    await proxy.start()
    held = await asyncpg.connect(database_url)  # not through the proxy
    try:
        async with groups_behind(proxy, database_url, infra.kafka_bootstrap) as client:
            ids = await approved(client, 4)
            stuck = ids[-1]
            # the last item's transaction waits on its group's lock (as behind a slow writer)
            # once the others committed; then the database goes away under it
            lock = held.transaction()
            await lock.start()
            await held.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"group-{stuck}")
            keyed = {**ADMIN, "Idempotency-Key": f"outage-{uuid.uuid4()}"}
            items = {"items": [funding(g) for g in ids]}
            asked = asyncio.create_task(client.post("/groups/fundings", headers=keyed,
                                                    json=items))
            deadline = time.monotonic() + 15
            while sum((await requests_of(database_url, ids[:3])).values()) < 3:
                assert time.monotonic() < deadline, "the three free items never committed"
                await asyncio.sleep(0.05)
            await proxy.cut()
            answer = await asyncio.wait_for(asked, 20)
            await lock.rollback()

            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert int(answer.headers["retry-after"]) > 0
            error = answer.json()["error"]
            assert (error["status"], error["written"]) == (503, 3)
            assert error["batch_id"]
            results = {r["group_id"]: r for r in error["results"]}
            assert [results[g]["status"] for g in ids] == [202, 202, 202, 503]
            assert results[stuck]["written"] == "no"
            assert await requests_of(database_url, ids) == {**dict.fromkeys(ids[:3], 1), stuck: 0}
            assert await events_of(database_url, "GroupFunded", ids) == dict.fromkeys(ids, 0)

            # a single command while the database is away: a quick 503 JSON, not plain text
            started = time.monotonic()
            single = await client.post(f"/groups/{stuck}/funding", headers=ADMIN,
                                       json={k: v for k, v in funding(stuck).items()
                                             if k != "group_id"})
            assert single.status_code == 503, single.text
            assert single.json()["error"]["status"] == 503
            assert "retry-after" in single.headers
            assert time.monotonic() - started < 5

            # back again: a retry of the whole request under its key is not run again (part
            # of it committed, and its answer could not be stored meanwhile) ...
            await proxy.start()

            async def told_carried_out() -> httpx.Response | None:
                retry = await client.post("/groups/fundings", headers=keyed, json=items)
                return retry if "carried out" in retry.text else None

            retry = await eventually(told_carried_out, timeout=10)
            assert retry.status_code == 409
            assert await requests_of(database_url, ids) == {**dict.fromkeys(ids[:3], 1), stuck: 0}
            # ... and the item not written is sent again and asked for once; the checker
            # grants all four, each funded once
            again = await client.post("/groups/fundings", headers=ADMIN,
                                      json={"items": [funding(stuck)]})
            assert again.status_code == 200, again.text
            assert [r["status"] for r in again.json()["results"]] == [202]
            assert await requests_of(database_url, ids) == dict.fromkeys(ids, 1)
            request_ids = [r["result"]["request_id"] for r in
                           (*results.values(), *again.json()["results"]) if r["status"] == 202]
            granted = await client.post("/approvals/grant", headers=CHECKER,
                                        json={"request_ids": request_ids})
            assert granted.json()["granted"] == 4, granted.text
            assert await events_of(database_url, "GroupFunded", ids) == dict.fromkeys(ids, 1)
    finally:
        await held.close()
        await drop_database(infra, database_url)
