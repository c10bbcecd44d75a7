"""Two instances of the groups service on one database: rules adopted through one decide the
next command the other takes, without the other reading the rules for every command."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from services.groups.app import build_spec
from services.groups.config import rule_book
from shared.service import create_app
from shared.settings import load_settings
from tests.groups.groups_support import ADMIN, registration
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration


async def _until(check, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in time")


async def test_instance_b_applies_the_rules_adopted_through_instance_a(infra):
    url = await create_database(infra, "t_groups")
    books = [rule_book(), rule_book()]
    apps = [create_app(build_spec(rules=book), load_settings(
        "groups", database_url=url, kafka_bootstrap_servers=infra.kafka_bootstrap,
        relay_poll_interval_s=0.05)) for book in books]
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients.append(await stack.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://groups",
                    timeout=60)))
            a, b = clients
            book_b = books[1]

            async def listening() -> bool:
                return all(book.listening for book in books)

            await _until(listening)
            # B decides a 2093 group of 10 with the shipped 2023 rules, then from its cache
            for _ in range(3):
                ok = await b.post("/groups", json=registration(year=2093), headers=ADMIN)
                assert ok.status_code == 201, ok.text
            loads = book_b.loads
            for _ in range(3):
                assert (await b.post("/groups", json=registration(year=2093),
                                     headers=ADMIN)).status_code == 201
            assert book_b.loads == loads  # no read of the rules per command

            rules = (await a.get("/rules/2023", headers=ADMIN)).json()["rules"]
            rules["members"] = {**rules["members"], "min_count": 12, "max_count": 12}
            adopted = await a.put("/rules/2090", json={"rules": rules}, headers=ADMIN)
            assert adopted.status_code == 200, adopted.text

            async def twelve_taken() -> bool:
                answer = await b.post("/groups", json=registration(members=12, year=2093),
                                      headers=ADMIN)
                return answer.status_code == 201

            await _until(twelve_taken, 10.0)
            assert book_b.loads == loads + 1  # read again once, after the notification
            ten = await b.post("/groups", json=registration(members=10, year=2093),
                               headers=ADMIN)
            assert ten.status_code == 422 and "a 2093 group has 12 members" in ten.text
    finally:
        await drop_database(infra, url)
