"""The secured broker (SASL_SSL + SCRAM-SHA-512, StandardAuthorizer, deny by default) as the
services and the agencies meet it: one real Kafka 4.1.1 for the module, on a free port in a
temporary state directory, stopped at the end."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import stat
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from scripts import agency as agency_cli
from scripts import infra
from shared import kafka_acls as acls
from shared.kafka_security import kafka_security

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20


@pytest.fixture(scope="module")
def broker():
    # a directory of its own, not pytest's numbered temp dirs: concurrent pytest runs on the
    # same machine prune those, and a broker whose data vanished cannot be stopped cleanly
    state = Path(tempfile.mkdtemp(prefix="tkm-secured-kafka-"))
    port = infra.free_port()
    try:
        infra.start_kafka(state, port, security=infra.SASL_SSL)
        (state / "kafka.bootstrap").write_text(f"127.0.0.1:{port}")
        yield state, f"127.0.0.1:{port}"
    finally:
        infra.stop_kafka(state)
        shutil.rmtree(state, ignore_errors=True)


def _security(state: Path, user: str, password: str | None = None):
    """What a process of `user` gets from `shared.kafka_security` with the env `infra env` prints
    (the password file of the state directory)."""
    if password is not None:
        return kafka_security(kafka_security_protocol="SASL_SSL", kafka_username=user,
                              kafka_password=password, kafka_password_file=None,
                              kafka_ca_file=infra.ca_file(state))
    return kafka_security(kafka_security_protocol="SASL_SSL", kafka_username=user,
                          kafka_password=None, kafka_password_file=infra.secret_file(state, user),
                          kafka_ca_file=infra.ca_file(state))


def _sec(state: Path, user: str, password: str | None = None) -> dict:
    return _security(state, user, password).client_kwargs()


def _conn(state: Path, bootstrap: str) -> agency_cli.AdminConnection:
    return agency_cli.AdminConnection(bootstrap, infra._admin_client_kwargs(state),
                                      infra.ca_file(state))


def _envelope(event_type: str, payload: dict, stream_id: str, producer: str) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(), "stream_id": stream_id,
        "stream_version": 1, "correlation_id": str(uuid.uuid4()), "causation_id": None,
        "producer": producer, "actor": "system", "payload": payload}).encode()


async def _produce(bootstrap: str, client: dict, topic: str, values: list[bytes],
                   key: str | None = None) -> None:
    """As the relay does: idempotent, acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                request_timeout_ms=10000, **client)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=(key or str(uuid.uuid4())).encode())
    finally:
        await producer.stop()


async def _read(bootstrap: str, client: dict, topics: list[str], group: str,
                until, timeout: float = TIMEOUT) -> list:
    """Read from offset 0 with `group` until `until` records (or `until(records)` holds)."""
    done = until if callable(until) else (lambda got: len(got) >= until)
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                request_timeout_ms=10000, **client)
    got = []
    try:
        await consumer.start()
        async with asyncio.timeout(timeout):
            while not done(got):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += records
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def _refused(coro, expected: type[BaseException],
                   timeout: float = TIMEOUT) -> BaseException:
    """The broker refuses at once (a timeout is a failure, not a refusal)."""
    with pytest.raises(expected) as info:
        await asyncio.wait_for(coro, timeout)
    return info.value


# ---------------------------------------------------------------- who may connect


def test_secrets_and_keys_are_private_files(broker):
    state, _ = broker
    for path in [*(state / "secrets").iterdir(), state / "tls" / "ca.key",
                 state / "tls" / "broker.pem", state / "kafka.properties"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    env = infra.kafka_client_env(state)
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["GROUPS_KAFKA_PASSWORD_FILE"].endswith("groups.password")
    assert infra.read_secret(state, "admin") not in json.dumps(env)
    props = (state / "kafka.properties").read_text()
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "super.users=User:broker;User:admin\n" in props
    log = (state / "kafka.log").read_text()
    for user in ("broker", "admin", *acls.SERVICES):
        assert infra.read_secret(state, user) not in log  # the broker logs them as [hidden]


async def test_anonymous_plaintext_and_tls_without_sasl_are_refused(broker):
    _, bootstrap = broker
    for client in ({}, {"security_protocol": "SSL",
                        "ssl_context": kafka_security(
                            kafka_username="x", kafka_password="y",
                            kafka_ca_file=infra.ca_file(broker[0])).ssl_context()}):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client)
        try:
            await _refused(_start_and_list(admin), KafkaConnectionError, timeout=15)
        finally:
            await admin.close()


async def _start_and_list(admin: AIOKafkaAdminClient) -> list[str]:
    await admin.start()
    return await admin.list_topics()


async def test_a_wrong_password_and_an_unknown_user_are_refused(broker):
    state, bootstrap = broker
    for user, password in (("groups", "not-the-password"), ("nobody", "whatever")):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                                    **_sec(state, user, password))
        try:
            await _refused(producer.start(), KafkaConnectionError)
        finally:
            await producer.stop()
    failures = (state / "kafka.log").read_text().count("invalid credentials with SASL mechanism")
    assert failures >= 2  # the broker says why: authentication, not the network


async def test_topics_are_declared_with_retention_for_ever(broker):
    state, bootstrap = broker
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_sec(state, "admin"))
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        declared = {t.name for t in acls.declared_topics()}
        assert declared <= topics
        # a second apply is a no-op (restart of the broker, `infra up` again)
        await acls.apply_declarations(bootstrap, _sec(state, "admin"))
        assert len(await acls.describe_acls(admin, "User:groups")) == len(
            acls.service_acls("groups"))
    finally:
        await admin.close()


# ---------------------------------------------------------------- services


async def test_each_service_writes_its_own_topics_only(broker):
    state, bootstrap = broker
    for service in acls.SERVICES:
        client = _sec(state, service)
        await _produce(bootstrap, client, acls.own_topic(service), [b'{"ok": 1}'])
        await _produce(bootstrap, client, acls.dead_letter_topic(service), [b'{"ok": 1}'])
        other = next(s for s in acls.SERVICES if s != service)
        for topic in (acls.own_topic(other), acls.dead_letter_topic(other)):
            await _refused(_produce(bootstrap, client, topic, [b"{}"]), TopicAuthorizationFailedError,
                           timeout=15)


async def test_each_service_reads_what_it_consumes_and_nothing_else(broker):
    state, bootstrap = broker
    for service in acls.SERVICES:
        await _produce(bootstrap, _sec(state, service), acls.own_topic(service), [b'{"n": 1}'])
    for service, consumes in acls.SERVICES.items():
        client = _sec(state, service)
        if consumes:
            got = await _read(bootstrap, client, list(consumes),
                              f"{service}-test-{uuid.uuid4()}", until=len(consumes))
            assert {r.topic for r in got} == set(consumes)
        # a contract topic it does not consume (evaluation consumes all others: a dead letter)
        not_consumed = next(t for t in [*acls.CONTRACT_TOPICS, "tkm.groups.dlq.v1"]
                            if t not in consumes and t != acls.own_topic(service))
        await _refused(_read(bootstrap, client, [not_consumed],
                             f"{service}-test-{uuid.uuid4()}", until=1),
                       TopicAuthorizationFailedError, timeout=15)
        # another service's group is refused even on a topic it may read
        if consumes:
            other = next(s for s in acls.SERVICES if s != service)
            await _refused(_read(bootstrap, client, [consumes[0]], f"{other}-test-x", until=1),
                           GroupAuthorizationFailedError, timeout=15)


async def test_faststream_brokers_with_the_helper_publish_and_subscribe(broker):
    """The kernel's broker as the lead will wire it: KafkaBroker(**faststream_kwargs())."""
    from faststream.kafka import KafkaBroker

    state, bootstrap = broker
    marker = str(uuid.uuid4())
    got = asyncio.Event()
    publisher = KafkaBroker(bootstrap, **_security(state, "recruitment").faststream_kwargs())
    subscriber = KafkaBroker(bootstrap, **_security(state, "mentoring").faststream_kwargs())

    @subscriber.subscriber("tkm.recruitment.v1", group_id=f"mentoring-test-{uuid.uuid4()}",
                           auto_offset_reset="earliest")
    async def handle(body: dict) -> None:
        if body.get("marker") == marker:
            got.set()

    await subscriber.start()
    await publisher.start()
    try:
        await publisher.publish({"marker": marker}, "tkm.recruitment.v1", key=b"stream-1")
        await asyncio.wait_for(got.wait(), TIMEOUT)
    finally:
        await publisher.stop()
        await subscriber.stop()


# ---------------------------------------------------------------- agencies


async def test_an_agency_reads_the_four_topics_and_nothing_more(broker):
    state, bootstrap = broker
    conn = _conn(state, bootstrap)
    password = await agency_cli.add_agency(conn, "bps")
    assert "bps" in await agency_cli.list_agencies(conn)
    marker = str(uuid.uuid4())
    for service in acls.SERVICES:
        await _produce(bootstrap, _sec(state, service), acls.own_topic(service),
                       [json.dumps({"marker": marker}).encode()])
    client = _sec(state, "bps", password)

    def all_markers(got: list) -> bool:
        return {r.topic for r in got if marker.encode() in r.value} == set(acls.CONTRACT_TOPICS)

    await _read(bootstrap, client, list(acls.CONTRACT_TOPICS), f"bps.test-{uuid.uuid4()}",
                until=all_markers)

    # no write anywhere (its own topic list included), no dead letters, no other group
    # idempotent (as the relay): InitProducerId needs a Write right somewhere
    await _refused(_produce(bootstrap, client, "tkm.groups.v1", [b"{}"]),
                   ClusterAuthorizationFailedError, timeout=15)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **client)
    await producer.start()
    try:
        await _refused(producer.send_and_wait("tkm.groups.v1", b"{}"),
                       TopicAuthorizationFailedError, timeout=15)
    finally:
        await producer.stop()
    await _refused(_read(bootstrap, client, ["tkm.groups.dlq.v1"], "bps.dlq", until=1),
                   TopicAuthorizationFailedError, timeout=15)
    await _refused(_read(bootstrap, client, ["tkm.groups.v1"], "evaluation", until=1),
                   GroupAuthorizationFailedError, timeout=15)
    await _refused(_read(bootstrap, client, ["tkm.groups.v1"], "bps", until=1),
                   GroupAuthorizationFailedError, timeout=15)
    await _refused(_read(bootstrap, client, ["tkm.groups.v1"], "kemnaker.x", until=1),
                   GroupAuthorizationFailedError, timeout=15)


async def test_a_revoked_agency_is_refused_on_its_next_request_and_connection(broker):
    state, bootstrap = broker
    conn = _conn(state, bootstrap)
    password = await agency_cli.add_agency(conn, "bappenas")
    client = _sec(state, "bappenas", password)
    await _produce(bootstrap, _sec(state, "groups"), "tkm.groups.v1", [b'{"x": 1}'])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **client)
    await consumer.start()
    try:
        tp = TopicPartition("tkm.groups.v1", 0)
        assert (await consumer.end_offsets([tp]))[tp] >= 0  # connected and allowed
        assert await agency_cli.revoke_agency(conn, "bappenas") == len(acls.agency_acls("bappenas"))
        assert "bappenas" not in await agency_cli.list_agencies(conn)
        # the open connection: its next request is refused (ACLs are checked per request)
        await _refused(consumer.end_offsets([tp]), TopicAuthorizationFailedError, timeout=15)
    finally:
        await consumer.stop()
    # a new connection: its credentials are gone
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **client)
    try:
        await _refused(producer.start(), KafkaConnectionError)
    finally:
        await producer.stop()
    with pytest.raises(agency_cli.AgencyError, match="no agency named"):
        await agency_cli.revoke_agency(conn, "bappenas")


async def test_adding_an_agency_twice_or_with_a_reserved_name_is_one_clear_error(broker):
    state, bootstrap = broker
    conn = _conn(state, bootstrap)
    await agency_cli.add_agency(conn, "bkpm")
    with pytest.raises(agency_cli.AgencyError, match="already exists"):
        await agency_cli.add_agency(conn, "bkpm")
    with pytest.raises(agency_cli.AgencyError, match="reserved"):
        await agency_cli.add_agency(conn, "evaluation")
    new_password = await agency_cli.add_agency(conn, "bkpm", rotate=True)
    await _read(bootstrap, _sec(state, "bkpm", new_password), ["tkm.groups.v1"],
                f"bkpm.{uuid.uuid4()}", until=1)


# ---------------------------------------------------------------- the agency's example


def _load_example():
    path = ROOT / "examples" / "agency_subscriber" / "subscriber.py"
    spec = importlib.util.spec_from_file_location("agency_subscriber_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_the_example_subscriber_tables_funded_groups_per_province(broker, tmp_path):
    state, bootstrap = broker
    example = _load_example()
    conn = _conn(state, bootstrap)
    password = await agency_cli.add_agency(conn, "bps-jatim")

    def funded(group: str, province: str, amount: int, tranche: int = 1) -> bytes:
        return _envelope("GroupFunded", {
            "group_id": group, "tranche": tranche, "amount": amount, "disbursed_on": "2023-06-01",
            "budget_year": 2023, "year": 2023, "province_code": province,
            "regency_code": province + "01", "lpj_due_on": "2023-09-01"}, group, "groups")

    # the groups topic also carries what other tests wrote and other event types: the example
    # ignores those; a redelivered GroupFunded (same event_id) counts once
    run = uuid.uuid4().hex[:6]
    events = [funded(f"{run}-a", "35", 20_000_000), funded(f"{run}-b", "35", 20_000_000),
              funded(f"{run}-c", "32", 20_000_000),
              _envelope("GroupRegistered", {"group_id": f"{run}-d"}, f"{run}-d", "groups")]
    await _produce(bootstrap, _sec(state, "groups"), "tkm.groups.v1", [*events, events[0]])

    settings = example.Settings(bootstrap=bootstrap, username="bps-jatim", password=password,
                                ca_file=str(infra.ca_file(state)),
                                group_id="bps-jatim.funding-table",
                                db_path=str(tmp_path / "funding.sqlite3"))
    await asyncio.wait_for(example.run(settings, once=True, idle_s=3), 60)
    db = example.open_db(settings.db_path)
    assert example.province_table(db) == [("32", 1, 20_000_000), ("35", 2, 40_000_000)]
    assert db.execute("SELECT COUNT(*) FROM processed_events").fetchone()[0] == 3

    # a second run resumes from the committed offsets: nothing is counted twice
    await _produce(bootstrap, _sec(state, "groups"), "tkm.groups.v1",
                   [funded(f"{run}-e", "35", 20_000_000), events[2]])
    await asyncio.wait_for(example.run(settings, once=True, idle_s=3), 60)
    assert example.province_table(db) == [("32", 1, 20_000_000), ("35", 3, 60_000_000)]
    db.close()
