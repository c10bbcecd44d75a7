import uuid

import httpx
import pytest

from scripts import infra as local_infra
from shared.kafka_security import kafka_security
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from tests.support.kafka import eventually
from tests.support.sample import router

pytestmark = pytest.mark.integration


async def test_readiness_follows_the_database(infra, tmp_path):
    # a Postgres server of its own, so stopping it does not disturb other tests
    port = local_infra.free_port()
    local_infra.start_postgres(tmp_path / "pg", port)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        spec = ServiceSpec(name="evaluation", topic=f"tkm.readytest-{uuid.uuid4().hex[:8]}.v1",
                           routers=[router])
        # a topic of the test's own: the admin creates it (the evaluation principal may not)
        app = create_app(spec, load_settings("evaluation", database_url=url,
                                             kafka_bootstrap_servers=infra.kafka_bootstrap),
                         security=kafka_security(service="admin"))
        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                       base_url="http://svc")
            async def answers_ready():
                response = await client.get("/readyz")
                return response if response.status_code == 200 else None

            # a loaded machine may need a moment before the broker answers a ping
            ready = await eventually(answers_ready, timeout=30)
            assert ready.json()["checks"]["postgres"] is True
            assert ready.json()["checks"]["kafka"] is True

            local_infra.stop_postgres(tmp_path / "pg")
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["postgres"] is False
            assert (await client.get("/healthz")).status_code == 200
    finally:
        local_infra.stop_postgres(tmp_path / "pg")
