import asyncio
import json

import asyncpg
import pytest

from scripts import infra as local_infra

pytestmark = pytest.mark.integration


async def test_up_is_idempotent_completes_a_half_started_state_and_down_twice_is_harmless(
        tmp_path):
    state = tmp_path / "infra"
    first, started = await asyncio.to_thread(local_infra.up, state)
    try:
        assert started
        again, started_again = await asyncio.to_thread(local_infra.up, state)
        assert (again, started_again) == (first, False)

        # the single broker is node 1 of the fault suite's API
        [node] = local_infra.kafka_nodes(state)
        assert (node["node_id"], node["alive"]) == (1, True)
        assert first.kafka_bootstrap == f"127.0.0.1:{node['port']}"
        assert first.service_env()["TKM_TOPIC_REPLICATION_FACTOR"] == "1"

        # Kafka crashed (kill -9) while Postgres runs on: the next `up` restarts Kafka on the
        # same address and keeps the same Postgres
        assert await asyncio.to_thread(local_infra.kill_kafka_node, state, 1)
        assert not local_infra.kafka_nodes(state)[0]["alive"]
        assert local_infra.status(state) is None
        healed, started = await asyncio.to_thread(local_infra.up, state)
        assert started and healed == first
        assert local_infra.kafka_nodes(state)[0]["pid"] != node["pid"]
        conn = await asyncpg.connect(healed.database_url("groups"))
        await conn.close()
    finally:
        stopped = await asyncio.to_thread(local_infra.down, state)
    assert stopped == ["kafka", "postgres"]
    assert await asyncio.to_thread(local_infra.down, state) == []
    assert local_infra.status(state) is None


async def test_a_cluster_id_beginning_with_a_dash_formats_and_starts(tmp_path):
    # base64 ids begin with "-" one time in 64; the storage tool once took it for an option
    state, port = tmp_path / "kafka", local_infra.free_port()
    await asyncio.to_thread(local_infra.start_kafka, state, port, "-AbCdEfGhIjKlMnOpQrStU")
    try:
        assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in (
            state / "kafka-data" / "meta.properties").read_text()
    finally:
        assert await asyncio.to_thread(local_infra.stop_kafka, state)


def test_a_stale_pid_file_naming_another_process_is_not_taken_for_a_server(tmp_path):
    import subprocess

    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        for server in ("kafka", "postgres"):
            (tmp_path / f"{server}.pid").write_text(str(bystander.pid))
        assert local_infra.status(tmp_path) is None
        assert local_infra.down(tmp_path) == []
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_the_broker_count_is_one_or_a_cluster_of_three_and_stays_what_a_state_was_made_with(
        tmp_path, monkeypatch):
    monkeypatch.delenv("TKM_KAFKA_BROKERS", raising=False)
    assert local_infra.kafka_broker_count() == 1
    monkeypatch.setenv("TKM_KAFKA_BROKERS", "3")
    assert local_infra.kafka_broker_count() == 3
    assert local_infra.kafka_broker_count(1) == 1
    for wrong in (2, 0, "three"):
        with pytest.raises(local_infra.InfraError):
            local_infra.kafka_broker_count(wrong)

    single, cluster = tmp_path / "single", tmp_path / "cluster"
    (single / "kafka-data").mkdir(parents=True)
    (single / "kafka-data" / "meta.properties").write_text("cluster.id=x\n")
    assert local_infra._brokers_of(single, None) == 1
    with pytest.raises(local_infra.InfraError, match="fresh state directory"):
        local_infra.up(single, brokers=3)
    with pytest.raises(local_infra.InfraError, match="fresh state directory"):
        local_infra.start_kafka_cluster(single)

    cluster.mkdir()
    nodes = [{"node_id": i, "port": 21091 + i, "controller_port": 21190 + i} for i in (1, 2, 3)]
    (cluster / local_infra.CLUSTER_FILE).write_text(json.dumps({"cluster_id": "x",
                                                                "nodes": nodes}))
    assert local_infra._brokers_of(cluster, None) == 3
    with pytest.raises(local_infra.InfraError, match="fresh state directory"):
        local_infra._brokers_of(cluster, 1)
    assert local_infra.kafka_bootstrap(cluster) == \
        "127.0.0.1:21092,127.0.0.1:21093,127.0.0.1:21094"
    assert [(n["node_id"], n["port"], n["alive"]) for n in local_infra.kafka_nodes(cluster)] \
        == [(1, 21092, False), (2, 21093, False), (3, 21094, False)]
    # the services' address is the first broker's port (a restart keeps it)
    (cluster / "kafka.bootstrap").write_text(local_infra.kafka_bootstrap(cluster))
    assert local_infra._saved_port(cluster / "kafka.bootstrap") == 21092


def test_a_cluster_node_is_secured_like_the_single_broker_and_replicates_everything(tmp_path):
    voters = "1@127.0.0.1:21191,2@127.0.0.1:21192,3@127.0.0.1:21193"
    props = local_infra._kafka_properties(tmp_path, 21093, 21192, local_infra.SASL_SSL,
                                          node_id=2, voters=voters,
                                          data_dir=tmp_path / "kafka-2" / "kafka-data")
    single = local_infra._kafka_properties(tmp_path, 21092, 21191, local_infra.SASL_SSL)
    lines, single_lines = props.splitlines(), single.splitlines()
    for line in ("node.id=2", f"controller.quorum.voters={voters}",
                 "listeners=CLIENT://127.0.0.1:21093,CONTROLLER://127.0.0.1:21192",
                 "default.replication.factor=3", "min.insync.replicas=2",
                 "offsets.topic.replication.factor=3", "transaction.state.log.min.isr=2",
                 "unclean.leader.election.enable=false",
                 f"log.dirs={tmp_path / 'kafka-2' / 'kafka-data'}"):
        assert line in lines, line
    # every security line of the single broker, the same on each node (one CA, one broker
    # certificate for 127.0.0.1/localhost, the broker's SCRAM and PLAIN logins)
    security = [line for line in single_lines if line.startswith((
        "listener.security", "sasl.", "listener.name.", "ssl.", "authorizer", "allow.",
        "super.users", "inter.broker", "controller.listener"))]
    assert len(security) >= 14 and set(security) <= set(lines)
    assert "offsets.topic.replication.factor=1" in single_lines
    assert "node.id=1" in single_lines


def test_a_new_cluster_takes_the_ports_after_the_first_and_skips_busy_ones():
    import contextlib
    import socket

    first = local_infra.free_port()
    with socket.socket() as busy:
        with contextlib.suppress(OSError):  # else something else holds it already
            busy.bind(("127.0.0.1", first + 1))
        ports = local_infra._cluster_ports(first, 3)
    assert ports[0] == first and len(set(ports)) == 3 and first + 1 not in ports


def test_a_new_cluster_whose_port_was_taken_before_its_node_bound_starts_on_other_ports(
        tmp_path, monkeypatch):
    """The port a probe found free is taken before the node binds it (another process, or an
    outgoing connection's local port): the new cluster starts again on other ports instead of
    failing, and the error of a node that exits says why."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        handed = iter([port])
        real = local_infra.free_port
        monkeypatch.setattr(local_infra, "free_port", lambda: next(handed, None) or real())
        try:
            local_infra.start_kafka_cluster(tmp_path, brokers=1, security=local_infra.PLAINTEXT)
            [node] = local_infra.kafka_nodes(tmp_path)
            assert node["alive"] and node["port"] != port
            assert local_infra.kafka_bootstrap(tmp_path) == f"127.0.0.1:{node['port']}"
        finally:
            local_infra.stop_kafka(tmp_path)
