import asyncio
import uuid

import pytest

import shared.service
from shared.kafka_security import kafka_security
from shared.service import ServiceContext, ServiceSpec, create_app
from shared.settings import load_settings
from tests.support.sample import router

pytestmark = pytest.mark.integration


async def test_background_jobs_run_with_the_service_and_stop_with_it(infra, database_url,
                                                                      monkeypatch):
    monkeypatch.setattr(shared.service, "BACKGROUND_STOP_S", 0.5)
    seen: list[str] = []

    async def polite(ctx: ServiceContext, stop: asyncio.Event) -> None:
        seen.append(f"started {await ctx.pool.fetchval('SELECT 1')}")
        await stop.wait()
        seen.append("stopped")

    async def stubborn(ctx: ServiceContext, stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    spec = ServiceSpec(name="evaluation", topic=f"tkm.bgtest-{uuid.uuid4().hex[:8]}.v1",
                       routers=[router], background=(polite, stubborn))
    # a topic of the test's own: the admin creates it (the evaluation principal may not)
    app = create_app(spec, load_settings("evaluation", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["started 1"]
    assert seen == ["started 1", "stopped", "cancelled"]
