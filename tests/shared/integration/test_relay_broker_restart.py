import asyncio
import json
import uuid

import asyncpg
import pytest

from scripts import infra as local_infra
from shared.eventstore import EventStore, migrate
from shared.kafka_security import kafka_security
from shared.outbox import OutboxRelay
from shared.topics import ensure_topics
from tests.support.kafka import eventually, read_topic
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded

pytestmark = pytest.mark.integration


async def _append(conn, stream: str, start: int, n: int) -> set[str]:
    store, ids = EventStore("kerneltest"), set()
    for v in range(start, start + n):
        async with conn.transaction():
            envs = await store.append(conn, stream, v, [AmountRecorded(amount=v)], actor="t",
                                      correlation_id=uuid.uuid4())
            ids.add(str(envs[0].event_id))
    return ids


async def _unsent(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


async def test_relay_delivers_everything_across_a_broker_restart(database_url, tmp_path):
    # a broker of its own: restarting the shared one would disturb every other test; secured
    # like the shared one, so the relay re-authenticates (SASL_SSL) after the restart
    state, port = tmp_path / "kafka", local_infra.free_port()
    await asyncio.to_thread(local_infra.start_kafka, state, port, security=local_infra.SASL_SSL)
    bootstrap = f"127.0.0.1:{port}"
    admin = kafka_security(kafka_security_protocol="SASL_SSL", kafka_username="admin",
                           kafka_password=None,
                           kafka_password_file=local_infra.secret_file(state, "admin"),
                           kafka_ca_file=local_infra.ca_file(state))
    conn = await asyncpg.connect(database_url)
    stop = asyncio.Event()
    task = None
    try:
        await ensure_topics(bootstrap, [SAMPLE_TOPIC], partitions=3, replication_factor=1,
                            client=admin.admin_kwargs())
        await migrate(conn, "kerneltest")
        stream = f"restart-{uuid.uuid4()}"
        ids = await _append(conn, stream, 0, 50)
        relay = OutboxRelay(database_url, bootstrap, "kerneltest", batch_size=10,
                            poll_interval=0.1, security=admin)
        task = asyncio.create_task(relay.run(stop))
        await eventually(lambda: _all_sent(conn), timeout=60)

        await asyncio.to_thread(local_infra.stop_kafka, state)
        ids |= await _append(conn, stream, 50, 30)  # written while the broker is down
        await asyncio.sleep(1.5)
        assert await _unsent(conn) == 30, "nothing can be marked sent without a broker"

        await asyncio.to_thread(local_infra.start_kafka, state, port)
        await eventually(lambda: _all_sent(conn), timeout=90)
    finally:
        stop.set()
        if task:
            await asyncio.wait_for(task, 20)
        await conn.close()

    try:
        records = await read_topic(bootstrap, SAMPLE_TOPIC, until=lambda recs: ids <= {
            json.loads(r.value)["event_id"] for r in recs}, security=admin.client_kwargs())
        versions = []
        for r in records:
            env = json.loads(r.value)
            if env["stream_version"] not in versions:
                versions.append(env["stream_version"])
        assert versions == list(range(1, 81))
    finally:
        await asyncio.to_thread(local_infra.stop_kafka, state)


async def _all_sent(conn) -> bool:
    return await _unsent(conn) == 0
