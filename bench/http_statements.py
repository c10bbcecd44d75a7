"""Statements per HTTP command as a client sends it: `POST /groups/<id>/funding` with an
Idempotency-Key (and, with four eyes, the checker's `POST /approvals/<id>/grant` that carries it
out: a funding's two calls counted as one), through the whole groups app (middleware, idempotency claim and answer, the
command, its inline projection), run in this process over an ASGI transport. asyncpg's query
logger is attached to every connection opened meanwhile; only the statements sent on behalf of
the request are counted (a context variable set around each call: the relay, the health
monitor and the housekeeping jobs run in tasks of their own)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import Progress

from bench.common import BenchEnv
from scripts.api_client import Api
from scripts.approvals import carried_out, checker_of
from scripts.scenario import Scenario, build
from scripts.simulate import Options, Simulation, _chunks
from shared.auth import Role, mint_token
from shared.kafka_security import KafkaSecurity
from shared.settings import DEV_SIGNING_KEY, load_settings

COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_counting", default=False)


async def measure(env: BenchEnv, sec: KafkaSecurity, commands: int = 20) -> dict[str, Any]:
    from services.groups.app import build_spec
    from shared.service import create_app

    sent: list[str] = []

    def logged(record: Any) -> None:
        sent.append(record.query)

    original = asyncpg.Connection.__init__

    def init(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # the callback runs in a copy of the querying task's context: ours or not
        self.add_query_logger(lambda record: logged(record) if COUNTING.get() else None)

    dsn = await env.fresh_database("http_stmts")
    settings = load_settings("groups", database_url=dsn, kafka_bootstrap_servers=env.bootstrap,
                             log_level="WARNING")
    asyncpg.Connection.__init__ = init  # type: ignore[method-assign]
    try:
        app = create_app(build_spec(), settings, security=sec)
        async with app.router.lifespan_context(app):
            while getattr(app.state, "ctx", None) is None:
                await asyncio.sleep(0.05)
            token = mint_token(DEV_SIGNING_KEY, "bench", Role.ADMIN)
            api = Api({"groups": "http://groups"})
            await api.client.aclose()
            api.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                           headers={"Authorization": f"Bearer {token}"},
                                           timeout=120)
            try:
                ids = await _approved(api, commands + 5)
                for warm in ids[:5]:  # statement caches, type introspection
                    await _fund(api, warm)
                sent.clear()
                for group_id in ids[5:]:
                    reset = COUNTING.set(True)
                    try:
                        await _fund(api, group_id)
                    finally:
                        COUNTING.reset(reset)
                await asyncio.sleep(0.1)  # the logger runs on the loop's next turns
                per_call = len(sent) / commands
                one = [" ".join(q.split())[:70] for q in sent[:round(per_call)]]
            finally:
                await api.close()
    finally:
        asyncpg.Connection.__init__ = original  # type: ignore[method-assign]
    return {"statements": per_call, "one": one}


async def _fund(api: Api, group_id: str) -> None:
    """Asked by the admin, granted by another (four eyes), or carried out at once."""
    asked = await api.post("groups", f"/groups/{group_id}/funding", {
        "tranche": 1, "amount": 1_000_000, "disbursed_on": "2023-06-01", "budget_year": 2023})
    await carried_out(checker_of(api), "groups", asked)


async def _approved(api: Api, count: int) -> list[str]:
    scenario = build(seed=11, groups=count)
    plans = [g for st in scenario.stages for r in st.regencies for g in r.groups][:count]
    with Progress(disable=True, console=Console(quiet=True)) as progress:
        sim = Simulation(api, Scenario(2023, 11, [], 10), Options(), progress)
        task = progress.add_task("register", total=len(plans))
        for chunk in _chunks(plans, 250):
            await sim._import(chunk, task)
        ids = [sim.run.group_ids[g.ref] for g in plans]
        await sim._bulk_ok("/groups/approvals", {"group_ids": ids}, "approval")
    return ids

