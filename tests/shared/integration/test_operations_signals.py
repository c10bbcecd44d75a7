"""Signals that tell the truth during an incident (issue 13): broker-side consumer lag of a stuck
consumer, one access line per command, context that does not leak, and a service that starts,
serves and stays quiet while Kafka is down."""

import asyncio
import collections
import io
import json
import logging
import time
import uuid

import httpx
import pytest
from fastapi import APIRouter, Depends
from prometheus_client import REGISTRY

from scripts import infra as local_infra
from shared.aggregate import UnitOfWork
from shared.auth import ANY_ROLE, Actor, Role, mint_token, require
from shared.envelope import Envelope, encode, utcnow
from shared.kafka_security import kafka_security
from shared.observability import RateLimit, _ContextFilter, _UtcMillisFormatter
from shared.service import ServiceContext, ServiceSpec, context, create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from shared.topics import ensure_topics
from tests.support.kafka import eventually, produce
from tests.support.sample import SAMPLE_TOPIC, AmountRecorded, Counter, on_amount

pytestmark = pytest.mark.integration

router = APIRouter()


@router.post("/counters/{counter_id}/amounts", status_code=201)
async def add_amount(counter_id: str, amount: int, actor: Actor = Depends(require(*ANY_ROLE)),
                     ctx: ServiceContext = Depends(context)) -> dict:
    async def decide(uow: UnitOfWork) -> None:
        counter = await uow.load(Counter, counter_id) or Counter(counter_id)
        counter.add(amount)
        await uow.save(counter)

    await ctx.command(decide, actor)
    return {"counter_id": counter_id}


@router.get("/admin-only")
async def admin_only(actor: Actor = Depends(require(Role.ADMIN))) -> dict:
    return {"ok": True}


def _token(role: Role = Role.ADMIN) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "someone", role)}


def _envelope(stream: str, version: int, amount: int) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=AmountRecorded.event_type, schema_version=1,
                    occurred_at=utcnow(), stream_id=stream, stream_version=version,
                    correlation_id=uuid.uuid4(), producer="test", actor="test",
                    payload={"amount": amount})


class Records(logging.Handler):
    """Every record the root logger handles, with the context the service's handler adds."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(_ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _service_handler() -> logging.Handler:
    """The JSON handler create_app installed on the root logger."""
    return next(h for h in logging.getLogger().handlers
                if isinstance(h.formatter, _UtcMillisFormatter))


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def until(check, timeout: float) -> object:
    async def checked():
        return check()

    return await eventually(checked, timeout=timeout)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_one_access_line_per_request_and_no_context_leaks(infra, database_url):
    spec = ServiceSpec(name=f"opstest{uuid.uuid4().hex[:8]}",
                       topic=f"tkm.opstest-{uuid.uuid4().hex[:8]}.v1", routers=[router])
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    captured = Records()
    logging.getLogger().addHandler(captured)
    try:
        async with app.router.lifespan_context(app), _client(app) as client:
            given = str(uuid.uuid4())
            captured.records.clear()
            ok = await client.post("/counters/c1/amounts", params={"amount": 5},
                                   headers={**_token(), "X-Correlation-ID": given})
            assert ok.status_code == 201
            unauthenticated = await client.get("/admin-only")
            forbidden = await client.get("/admin-only", headers=_token(Role.AGENCY))
            assert (unauthenticated.status_code, forbidden.status_code) == (401, 403)
            logging.getLogger("tkm.test").info("a line after the requests")
    finally:
        logging.getLogger().removeHandler(captured)

    access = [r for r in captured.records if r.name == "tkm.access"]
    assert [(r.route, r.status) for r in access] == [
        ("/counters/{counter_id}/amounts", 201), ("/admin-only", 401), ("/admin-only", 403)]
    command = access[0]
    assert command.levelname == "INFO" and command.method == "POST" and command.outcome == "ok"
    assert command.correlation_id == given and command.actor.startswith("ministry_admin:")
    assert command.duration_ms > 0
    assert [r.levelname for r in access[1:]] == ["WARNING", "WARNING"]
    assert access[1].reason == "missing bearer token" and "agency" in access[2].reason
    # the correlation id of a request tags its own lines only
    assert access[1].correlation_id not in (None, given)
    assert access[2].correlation_id not in (None, given, access[1].correlation_id)
    [after] = [r for r in captured.records if r.name == "tkm.test"]
    assert after.correlation_id is None
    assert _gauge("tkm_http_requests_total", service=spec.name, method="POST",
                  route="/counters/{counter_id}/amounts", status="201") == 1
    # a millisecond UTC timestamp
    out = _service_handler().formatter.format(command)
    assert '"time": "20' in out and 'Z"' in out and "." in out.split('"time": "')[1][:24]


async def test_a_stuck_consumer_shows_growing_lag_and_is_reported_stuck(infra, database_url):
    topic = f"tkm.lagtest-{uuid.uuid4().hex[:8]}.v1"
    await ensure_topics(infra.kafka_bootstrap, [topic], partitions=2, replication_factor=1,
                        client=kafka_security(service="admin").admin_kwargs())
    release = asyncio.Event()

    async def blocking(uow, envelope, event) -> None:
        await release.wait()  # a handler stuck on a lock
        await on_amount(uow, envelope, event)

    spec = ServiceSpec(name=f"lagtest{uuid.uuid4().hex[:8]}", topic=f"{topic}.own",
                       routers=[router], consumes=(topic,),
                       handlers={AmountRecorded.event_type: blocking})
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap,
                                         consumer_stuck_s=8),
                     security=kafka_security(service="admin"))
    captured = Records()
    logging.getLogger().addHandler(captured)
    async with app.router.lifespan_context(app), _client(app) as client:
        try:
            # the gauge exists from start-up on, for every partition, before anything is read
            await until(lambda: _gauge("tkm_consumer_lag", service=spec.name, topic=topic,
                                            partition="1") == 0, timeout=15)
            stream = f"s-{uuid.uuid4()}"
            await produce(infra.kafka_bootstrap, topic,
                          [(stream.encode(), encode(_envelope(stream, v, v))) for v in range(1, 31)])
            produced = time.monotonic()
            await until(lambda: (_gauge("tkm_consumer_lag_total", service=spec.name) or 0)
                             >= 30, timeout=15)
            visible = time.monotonic() - produced
            print(f"\nlag of a stuck consumer visible after {visible:.1f}s")
            assert (await client.get("/readyz")).status_code == 200

            async def stuck():
                body = (await client.get("/healthz")).json()
                return body if "consumer stuck" in body["degraded"] else None

            health = await eventually(stuck, timeout=30)
            assert health["status"] == "degraded" and health["consumer_lag"] >= 30
            assert _gauge("tkm_degraded", service=spec.name, reason="consumer stuck") == 1
        finally:
            release.set()

        await until(lambda: _gauge("tkm_consumer_lag_total", service=spec.name) == 0,
                         timeout=30)

        async def recovered():
            body = (await client.get("/healthz")).json()
            return body if body["status"] == "ok" else None

        await eventually(recovered, timeout=15)
        # an undecodable record is dead-lettered with a line of its own
        await produce(infra.kafka_bootstrap, topic, [(b"junk", b"not an envelope")])
        await until(lambda: _gauge("tkm_consumer_lag_total", service=spec.name) == 0
                    and any("undecodable" in r.getMessage() for r in captured.records),
                    timeout=30)
    logging.getLogger().removeHandler(captured)
    [letter] = [r for r in captured.records if "undecodable" in r.getMessage()]
    assert letter.levelname == "WARNING" and letter.name == "tkm.consumer"
    # one line per consumed batch: its offsets, its outcomes, and no event's context
    batches = [r for r in captured.records if r.name == "tkm.consumer.batch"]
    assert sum(r.records for r in batches) == 31
    assert sum(r.outcomes.get("applied", 0) for r in batches) == 30
    assert all(r.correlation_id is None and r.event_id is None for r in batches)
    assert all(r.offsets and r.duration_ms >= 0 for r in batches)


async def test_kafka_down_at_start_then_a_30s_outage(database_url, tmp_path):
    """Started while its broker is down, a service serves commands (the outbox absorbs them),
    is ready, says degraded; once the broker is up it consumes. A 30 s outage later: commands
    still succeed, the backlog gauge grows, /readyz stays 200, and the logs stay short."""
    state, port = tmp_path / "kafka", local_infra.free_port()
    bootstrap = f"127.0.0.1:{port}"
    plaintext = kafka_security(kafka_security_protocol="PLAINTEXT", tkm_kafka_allow_plaintext=True)
    topic = SAMPLE_TOPIC  # what the commands publish; the service consumes it too (own broker)
    spec = ServiceSpec(name=f"outagetest{uuid.uuid4().hex[:8]}", topic=topic, routers=[router],
                       consumes=(topic,), handlers={AmountRecorded.event_type: on_amount})
    app = create_app(spec, load_settings("recruitment", database_url=database_url,
                                         kafka_bootstrap_servers=bootstrap, health_interval_s=1,
                                         startup_wait_s=0, relay_stale_s=20),
                     security=plaintext)
    lines = io.StringIO()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the test's client, not the service
    _service_handler().setStream(lines)  # the service's own JSON log stream
    name = spec.name
    try:
        async with app.router.lifespan_context(app), _client(app) as client:
            # the port is served at once; ready as soon as Postgres is, degraded without Kafka
            async def ready():
                response = await client.get("/readyz")
                return response if response.status_code == 200 else None

            body = (await eventually(ready, timeout=30)).json()
            assert body["checks"]["postgres"] is True and body["checks"]["kafka"] is False
            health = (await client.get("/healthz")).json()
            assert {"kafka unreachable", "consumer not started"} <= set(health["degraded"])
            assert _gauge("tkm_dependency_up", service=name, dependency="kafka") == 0
            created = await client.post("/counters/c1/amounts", params={"amount": 1},
                                        headers=_token())
            assert created.status_code == 201

            await asyncio.to_thread(local_infra.start_kafka, state, port, security="plaintext")

            async def healthy():
                body = (await client.get("/healthz")).json()
                return body if body["degraded"] == [] else None

            await eventually(healthy, timeout=60)
            # the service consumes its own topic: the command made before the broker was up
            # is published, consumed and applied
            await until(lambda: _gauge("tkm_outbox_backlog", service=name) == 0,
                             timeout=30)

            # a 30 s outage; the rate limit starts afresh, as after a long quiet time
            for rate_limit in _service_handler().filters:
                if isinstance(rate_limit, RateLimit):
                    rate_limit.__init__()
            await asyncio.to_thread(local_infra.stop_kafka, state)
            before = len(lines.getvalue().splitlines())
            began, made = time.monotonic(), 0
            while time.monotonic() - began < 30:
                response = await client.post("/counters/c1/amounts", params={"amount": 1},
                                             headers=_token())
                assert response.status_code == 201, response.text
                made += 1
                assert (await client.get("/readyz")).status_code == 200
                await asyncio.sleep(2)
            health = (await client.get("/healthz")).json()
            assert {"kafka unreachable", "relay not publishing"} <= set(health["degraded"])
            assert _gauge("tkm_outbox_backlog", service=name) >= made - 1
            assert _gauge("tkm_outbox_oldest_unsent_age_seconds", service=name) > 20
            during = lines.getvalue().splitlines()[before:]
            print(f"\n{len(during)} log lines during the 30 s outage ({made} commands, "
                  f"{made} access lines)")
            by_logger = collections.Counter(json.loads(line)["logger"] for line in during)
            print(f"by logger: {dict(by_logger)}")
            assert len(during) < 50, "\n".join(during)

            await asyncio.to_thread(local_infra.start_kafka, state, port, security="plaintext")
            await until(lambda: _gauge("tkm_outbox_backlog", service=name) == 0,
                             timeout=60)
            await eventually(healthy, timeout=30)
    finally:
        await asyncio.to_thread(local_infra.stop_kafka, state)
