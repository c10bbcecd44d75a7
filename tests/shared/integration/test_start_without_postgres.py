import asyncio

import httpx
import pytest

from scripts import infra as local_infra
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from shared.topics import EVALUATION
from tests.support.kafka import eventually
from tests.support.sample import router

pytestmark = pytest.mark.integration


async def test_a_service_started_before_its_database_serves_and_becomes_ready(infra, tmp_path):
    # a Postgres server of its own, started only after the service
    port = local_infra.free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    spec = ServiceSpec(name="evaluation", topic=EVALUATION, routers=[router])
    app = create_app(spec, load_settings("evaluation", database_url=url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         health_interval_s=1, startup_wait_s=0))
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            await asyncio.sleep(2)  # longer than a refused connection takes
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert "postgres unreachable" in health.json()["degraded"]
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["ready"] is False

            await asyncio.to_thread(local_infra.start_postgres, tmp_path / "pg", port)

            async def ready():
                response = await client.get("/readyz")
                return response if response.status_code == 200 else None

            body = (await eventually(ready, timeout=60)).json()
            assert body["checks"]["postgres"] is True

            async def healthy():
                body = (await client.get("/healthz")).json()
                return body if body["degraded"] == [] else None

            await eventually(healthy, timeout=30)
    finally:
        await asyncio.to_thread(local_infra.stop_postgres, tmp_path / "pg")
