"""The three-broker KRaft cluster of `scripts.infra` (docs/cluster.md), secured like the single
broker: topics on three replicas with two in sync, and a broker killed under a steady write load
through the real outbox relay loses nothing, while the partitions it led move to the others.

The rolling restart of all three (`scripts.infra.rolling_restart`) takes minutes on a busy
2-core machine: `rolling_restart_loses_nothing` below checks it under the same load, outside the
suite (docs/cluster.md says how to run it), and `make faults --brokers 3` runs one too."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from scripts import infra
from shared.eventstore import EventStore, migrate
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.kafka_acls import SERVICES
from shared.outbox import OutboxRelay
from shared.topics import CONTRACT_TOPICS, GROUPS, dead_letter_topic, ensure_topics
from tests.support.kafka import eventually
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded

pytestmark = pytest.mark.integration


@dataclass
class Cluster:
    state: Path
    bootstrap: str
    admin: KafkaSecurity


PARTITIONS = 3  # of every topic here: one led by each node, and a quicker recovery on restart


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("kafka-cluster")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TKM_TOPIC_PARTITIONS", str(PARTITIONS))  # the declared topics'
            infra.start_kafka_cluster(state, security=infra.SASL_SSL)
        admin = kafka_security(kafka_security_protocol="SASL_SSL", kafka_username="admin",
                               kafka_password=None,
                               kafka_password_file=infra.secret_file(state, "admin"),
                               kafka_ca_file=infra.ca_file(state))
        yield Cluster(state, infra.kafka_bootstrap(state), admin)
    finally:
        for node in infra.kafka_nodes(state):  # its data is thrown away: no graceful stop
            infra.kill_kafka_node(state, node["node_id"])


async def _min_insync(cluster: Cluster, topics: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap,
                                **cluster.admin.admin_kwargs())
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, t, {"min.insync.replicas": None}) for t in topics])
    finally:
        await admin.close()
    return {resource[3]: value for response in described for resource in response.resources
            for name, value, *_ in resource[4] if name == "min.insync.replicas"}


async def test_the_topics_of_the_cluster_have_three_replicas_and_two_in_sync(cluster):
    nodes = infra.kafka_nodes(cluster.state)
    assert [(n["node_id"], n["alive"]) for n in nodes] == [(1, True), (2, True), (3, True)]
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n['port']}" for n in nodes)
    assert len({n["port"] for n in nodes}) == 3

    # a topic a service creates with the cluster's setting, and the declared ones `infra up`
    # created as admin
    assert await ensure_topics(cluster.bootstrap, [SAMPLE_TOPIC], partitions=PARTITIONS,
                               replication_factor=3, client=cluster.admin.admin_kwargs())
    topics = [SAMPLE_TOPIC, *CONTRACT_TOPICS, *(dead_letter_topic(s) for s in SERVICES)]
    described = await infra.describe_partitions(cluster.bootstrap, cluster.admin.admin_kwargs(),
                                                topics)
    assert sorted(described) == sorted(topics)
    for topic, partitions in described.items():
        assert len(partitions) == PARTITIONS, topic
        for p in partitions.values():
            assert sorted(p["replicas"]) == [1, 2, 3] and sorted(p["isr"]) == [1, 2, 3], topic
    leaders = await infra.partition_leaders(cluster.bootstrap, cluster.admin.admin_kwargs(),
                                            GROUPS)
    assert sorted(leaders) == list(range(PARTITIONS)) and set(leaders.values()) <= {1, 2, 3}
    # leadership spread over the three nodes
    assert {p["leader"] for parts in described.values() for p in parts.values()} == {1, 2, 3}
    assert await _min_insync(cluster, topics) == {t: "2" for t in topics}
    assert await infra.under_replicated(cluster.bootstrap, cluster.admin.admin_kwargs()) == 0


async def _write_load(conn: asyncpg.Connection, stop: asyncio.Event, written: dict[str, list]):
    """A steady trickle of commands: each one event of a sample stream (the event store and
    its outbox row) and an outbox row for the contract topic, in one transaction."""
    store, versions = EventStore("kerneltest"), Counter()
    while not stop.is_set():
        stream = f"cluster-{len(written[SAMPLE_TOPIC]) % 8}"
        async with conn.transaction():
            envs = await store.append(conn, stream, versions[stream], [AmountRecorded(amount=1)],
                                      actor="t", correlation_id=uuid.uuid4())
            marker = str(uuid.uuid4())
            await conn.execute("INSERT INTO outbox (topic, message_key, event_id, value) "
                               "VALUES ($1, $2, $3, $4)", GROUPS, marker, uuid.UUID(marker),
                               json.dumps({"event_id": marker}).encode())
        versions[stream] += 1
        written[SAMPLE_TOPIC].append(str(envs[0].event_id))
        written[GROUPS].append(marker)
        await asyncio.sleep(0.02)


async def _sent(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")


async def _read_all(cluster: Cluster, topic: str) -> list[str]:
    """The event ids of every record of `topic`, from offset 0 to its end (no group)."""
    described = await infra.describe_partitions(cluster.bootstrap, cluster.admin.admin_kwargs(),
                                                [topic])
    parts = [TopicPartition(topic, p) for p in described[topic]]
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False,
                                **cluster.admin.client_kwargs())
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        ids: list[str] = []
        async with asyncio.timeout(60):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    ids += [json.loads(r.value)["event_id"] for r in records]
        return ids
    finally:
        await consumer.stop()


async def under_load(cluster: Cluster, database_url: str, fault) -> dict[str, list]:
    """Run `fault(conn)` under a steady write load through the real outbox relay (as every
    service runs it: acks=all, idempotent; here as the admin principal), then check that every
    row written was published, the partitions are fully replicated again, and that each topic
    holds every message exactly once. `conn`: a connection to the outbox's database, to count
    what was sent. Returns the ids written per topic. Used by `rolling_restart_loses_nothing`
    (scripts/faults.py may call it too)."""
    await ensure_topics(cluster.bootstrap, [SAMPLE_TOPIC], partitions=PARTITIONS,
                        replication_factor=3, client=cluster.admin.admin_kwargs())
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kerneltest")
    load_conn = await asyncpg.connect(database_url)
    stop_load, stop_relay = asyncio.Event(), asyncio.Event()
    written: dict[str, list] = {SAMPLE_TOPIC: [], GROUPS: []}
    relay = OutboxRelay(database_url, cluster.bootstrap, "kerneltest", batch_size=20,
                        poll_interval=0.05, security=cluster.admin)
    relay_task = asyncio.create_task(relay.run(stop_relay))
    load = asyncio.create_task(_write_load(load_conn, stop_load, written))
    try:
        await eventually(lambda: _at_least(conn, 40), timeout=60)
        await fault(conn)
        stop_load.set()
        await load
        total = len(written[SAMPLE_TOPIC]) + len(written[GROUPS])
        await eventually(lambda: _at_least(conn, total), timeout=60)
        await asyncio.to_thread(infra.wait_fully_replicated, cluster.bootstrap,
                                cluster.admin.admin_kwargs(), 120)
    finally:
        stop_load.set()
        stop_relay.set()
        await asyncio.wait_for(relay_task, 30)
        if not load.done():
            load.cancel()
        await conn.close()
        await load_conn.close()
    for topic in (SAMPLE_TOPIC, GROUPS):
        counts = Counter(await _read_all(cluster, topic))
        assert set(counts) == set(written[topic]), f"{topic}: messages lost"
        assert max(counts.values()) == 1, f"{topic}: {counts.most_common(3)} read twice"
    return written


async def _writes_go_on(conn: asyncpg.Connection, more: int = 60) -> None:
    sent = await _sent(conn)
    await eventually(lambda: _at_least(conn, sent + more), timeout=60)


async def test_a_broker_killed_under_load_loses_nothing_and_the_leaders_move(cluster,
                                                                            database_url):
    admin_kwargs = cluster.admin.admin_kwargs()

    async def kill_the_leader(conn: asyncpg.Connection) -> None:
        # the node leading the most partitions of a contract topic, killed: no controlled
        # shutdown, its leaderships end with its session
        leaders = await infra.partition_leaders(cluster.bootstrap, admin_kwargs, GROUPS)
        victim = Counter(leaders.values()).most_common(1)[0][0]
        await asyncio.to_thread(infra.kill_kafka_node, cluster.state, victim)
        try:
            assert [n["alive"] for n in infra.kafka_nodes(cluster.state)].count(False) == 1

            async def moved() -> dict[int, int] | None:
                now = await infra.partition_leaders(cluster.bootstrap, admin_kwargs, GROUPS)
                return now if victim not in now.values() and -1 not in now.values() else None

            # its partitions get new leaders among the two others; writes go on meanwhile
            await eventually(moved, timeout=60, interval=0.5)
            await _writes_go_on(conn)
            assert await infra.under_replicated(cluster.bootstrap, admin_kwargs) > 0
        finally:
            await asyncio.to_thread(infra.start_kafka_node, cluster.state, victim)

    await under_load(cluster, database_url, kill_the_leader)


async def rolling_restart_loses_nothing(cluster: Cluster, database_url: str) -> list[dict]:
    """All three nodes restarted one at a time (`infra.rolling_restart`) under the write load:
    writes go on, nothing lost or doubled. Returns the per-node timings. Out of the suite
    (four minutes on the busy 2-core machine); `make faults --brokers 3` runs the rolling
    restart with its conservation checks."""
    pids = {n["node_id"]: n["pid"] for n in infra.kafka_nodes(cluster.state)}
    timings: list[dict] = []

    async def rolling(conn: asyncpg.Connection) -> None:
        before = await _sent(conn)
        timings.extend(await asyncio.to_thread(infra.rolling_restart, cluster.state))
        assert await _sent(conn) > before + 100, "writes stopped during the rolling restart"

    await under_load(cluster, database_url, rolling)
    now = {n["node_id"]: n["pid"] for n in infra.kafka_nodes(cluster.state)}
    assert all(now[node] != pid for node, pid in pids.items())
    return timings


async def _at_least(conn: asyncpg.Connection, n: int) -> bool:
    return await _sent(conn) >= n


def main() -> int:
    """`make cluster-rolling`: a fresh three-broker cluster (in a temporary directory), the
    rolling restart under load, its timings; needs TKM_POSTGRES_URL (`infra env`)."""
    import os
    import shutil
    import tempfile
    import time

    from tests.support.databases import create_database, drop_database

    endpoints = infra.Endpoints("", os.environ["TKM_POSTGRES_URL"])
    state = Path(tempfile.mkdtemp(prefix="tkm-cluster-rolling-"))
    t0 = time.monotonic()
    try:
        os.environ["TKM_TOPIC_PARTITIONS"] = str(PARTITIONS)
        infra.start_kafka_cluster(state, security=infra.SASL_SSL)
        print(f"cluster up in {time.monotonic() - t0:.0f}s: {infra.kafka_bootstrap(state)}")
        admin = kafka_security(kafka_security_protocol="SASL_SSL", kafka_username="admin",
                               kafka_password=None,
                               kafka_password_file=infra.secret_file(state, "admin"),
                               kafka_ca_file=infra.ca_file(state))
        cluster = Cluster(state, infra.kafka_bootstrap(state), admin)

        async def run() -> list[dict]:
            url = await create_database(endpoints, "rolling")
            try:
                return await rolling_restart_loses_nothing(cluster, url)
            finally:
                await drop_database(endpoints, url)

        t1 = time.monotonic()
        for timing in asyncio.run(run()):
            print(f"node {timing['node_id']}: down {timing['down_s']}s, "
                  f"in sync {timing['in_sync_s']}s later")
        print(f"rolling restart under load: nothing lost, nothing doubled "
              f"({time.monotonic() - t1:.0f}s)")
        return 0
    finally:
        infra.stop_kafka(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
