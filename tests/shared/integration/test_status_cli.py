"""`tkm status` against a running service (in-process, served on a real port) and a dead one."""

import asyncio
import json
import os
import sys
import uuid

import pytest
import uvicorn

from scripts import infra as local_infra
from shared.eventstore import migrate
from shared.kafka_security import kafka_security
from shared.service import ServiceSpec, create_app
from shared.settings import load_settings
from tests.support.kafka import eventually
from tests.support.sample import router

pytestmark = pytest.mark.integration


async def _tkm(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    # asynchronously: the service answering it runs on this event loop
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", *args, env={**os.environ, **env,
                                                         "PYTHONPATH": "."},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_status_says_healthy_and_names_what_is_down(infra, database_url):
    import asyncpg

    conn = await asyncpg.connect(database_url)
    await migrate(conn, "recruitment")
    await conn.close()
    spec = ServiceSpec(name="recruitment", topic=f"tkm.statustest-{uuid.uuid4().hex[:8]}.v1",
                       routers=[router])
    # a topic of the test's own: the admin creates it (the recruitment principal may not)
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    port, dead = local_infra.free_port(), local_infra.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    env = {"RECRUITMENT_URL": f"http://127.0.0.1:{port}", "GROUPS_HTTP_PORT": str(dead),
           "RECRUITMENT_DATABASE_URL": database_url}
    try:
        async def healthy():
            code, out, _ = await _tkm("status", "-s", "recruitment", "--json", "--database",
                                      env=env)
            return (code, json.loads(out)) if code == 0 else None

        code, report = await eventually(healthy, timeout=60, interval=1)
        [row] = report["services"]
        assert report["healthy"] is True and row["service"] == "recruitment"
        assert row["up"] and row["ready"] and row["degraded"] == [] and row["problems"] == []
        assert row["outbox_backlog"] == 0 and row["dlq_letters"] == 0
        # the relay lease holder, read from the service database
        assert row["relay_leader"], row

        # one service down: exit 1, and its row says why
        code, out, err = await _tkm("status", "-s", "recruitment", "-s", "groups", "--plain",
                                    env=env)
        assert code == 1, out + err
        lines = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert lines["recruitment"].split()[1] == "healthy"
        assert lines["groups"].split()[1] == "down"
        assert f"127.0.0.1:{dead}" in lines["groups"] and "down:" in lines["groups"]

        code, out, _ = await _tkm("status", "-s", "groups", "--json", env=env)
        assert code == 1
        [row] = json.loads(out)["services"]
        assert row["up"] is False and row["healthy"] is False
        assert row["problems"][0].startswith("down:")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def test_status_usage_error_is_one_line():
    code, _, err = await _tkm("status", "-s", "nosuch", env={})
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "unknown service nosuch" in err
