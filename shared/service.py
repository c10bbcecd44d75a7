"""The composition root every service uses: one process running the FastAPI HTTP API, the
faststream Kafka subscriber and the outbox relay under one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import audit, idempotency, privacy, shedding
from shared.aggregate import Projector, UnitOfWork, run_command
from shared.auth import Actor
from shared.consumer import EventConsumer, Handler, PartitionHolds
from shared.docs_assets import install_offline_docs
from shared.errors import ERROR_RESPONSES, DomainError, error_body
from shared.eventstore import EventStore, migrate
from shared.health import HealthMonitor
from shared.housekeeping import housekeeping
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.limits import BodySizeLimit, bounded_errors
from shared.observability import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    bound,
    build_info,
    configure_logging,
    correlation_id_var,
)
from shared.outbox import OutboxRelay
from shared.pii import Keyring
from shared.projections import RebuildPlan
from shared.settings import ServiceSettings, load_settings
from shared.topics import dead_letter_topic, ensure_topics

log = logging.getLogger("tkm.service")
access_log = logging.getLogger("tkm.access")
batch_log = logging.getLogger("tkm.consumer.batch")
BACKGROUND_STOP_S = 10.0
HOLD_RECHECK_S = 30.0  # how often paused partitions are re-checked


# a background job: runs until the event is set (shutdown), sharing the service's pool and store
Background = Callable[["ServiceContext", asyncio.Event], Awaitable[None]]


@dataclass
class ServiceSpec:
    name: str
    topic: str
    routers: list[APIRouter]
    migrations: Path | None = None
    consumes: tuple[str, ...] = ()
    handlers: dict[str, Handler] = field(default_factory=dict)
    projector: Projector | None = None
    description: str = ""
    consumer_group: str | None = None  # defaults to the service name; tests give their own
    # what `tkm rebuild` replays into shadow tables and swaps in (shared.projections): the read
    # models, from the event store and the consumed topics; never the tables of rules
    rebuild: RebuildPlan | None = None
    # long-running jobs (e.g. a periodic close): started once the broker runs, asked to stop by
    # setting the event at shutdown, then cancelled if they do not within BACKGROUND_STOP_S
    background: tuple[Background, ...] = ()
    # holds personal data (shared.privacy): the PII keyring is loaded once at app creation (a
    # missing or refused TKM_PII_MASTER_KEY_FILE stops the start) and `pii_person_keys` migrated
    personal_data: bool = False


@dataclass
class ServiceContext:
    spec: ServiceSpec
    settings: ServiceSettings
    pool: asyncpg.Pool
    store: EventStore
    relay: OutboxRelay
    broker: KafkaBroker
    # the actors whose pseudonym this process has recorded (shared.audit.remember_actor)
    actors_seen: set[str] = field(default_factory=set)
    # the personal-data keyring, read once per process at app creation (shared.privacy)
    keyring: Keyring | None = None

    async def command(self, decide: Callable[[UnitOfWork], Awaitable[Any]], actor: Actor, *,
                      isolation: str | None = None) -> Any:
        """Run a command's decision in one transaction (events + outbox + inline projection);
        `isolation` ("repeatable_read", "serializable") when its reads need one snapshot."""
        await audit.remember_actor(self.pool, actor, self.actors_seen)
        return await run_command(self.pool, self.store, idempotency.recording(decide),
                                 actor=actor.id,
                                 correlation_id=_correlation_uuid(), projector=self.spec.projector,
                                 isolation=isolation)


def _correlation_uuid() -> uuid.UUID:
    value = correlation_id_var.get()
    return uuid.UUID(value) if value else uuid.uuid4()


async def context(request: Request) -> ServiceContext:
    """FastAPI dependency giving handlers the service's pool, store and settings; 503 while
    the service is still waiting for its database at start-up. A coroutine: a plain function
    would be run in the thread pool, a hop per request."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise ServiceUnavailableError("the service is starting: its database is not ready yet; "
                                      "retry later")
    return ctx


class ServiceUnavailableError(DomainError):
    status = 503


def create_app(spec: ServiceSpec, settings: ServiceSettings | None = None, *,
               security: KafkaSecurity | None = None) -> FastAPI:
    """The service's app. `security`: how its Kafka clients authenticate, by default the
    service's own principal from the environment (`<SERVICE>_KAFKA_*`, shared.kafka_security),
    read here so that a missing or refused setting stops the start at once."""
    settings = settings or load_settings(spec.name)
    configure_logging(spec.name, settings.log_level)
    sec = security or kafka_security(service=spec.name)
    # our own logger name: "faststream" comes with a coloured text handler, and per-message
    # "Received/Processed" lines belong at DEBUG, not in an operator's INFO stream
    broker = KafkaBroker(settings.kafka_bootstrap_list, **sec.faststream_kwargs(),
                         logger=logging.getLogger("tkm.broker"), log_level=logging.DEBUG)

    health = HealthMonitor(spec.name, settings.kafka_bootstrap_servers,
                           group=spec.consumer_group or spec.name, topics=spec.consumes,
                           client=sec.admin_kwargs(), interval_s=settings.health_interval_s,
                           relay_stale_s=settings.relay_stale_s,
                           stuck_s=settings.consumer_stuck_s, dsn=settings.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Postgres and Kafka are waited for in the background, for as long as it takes; the
        # port is bound once they answered, or after startup_wait_s anyway (/readyz answers
        # 503 until the database is migrated, /healthz says what is missing)
        stop = asyncio.Event()
        started = _Started()
        startup = asyncio.create_task(_start_up(app, spec, settings, sec, broker, health,
                                                started, stop), name="start-up")
        monitor = asyncio.create_task(health.run(stop), name="health-monitor")
        await asyncio.wait([startup], timeout=settings.startup_wait_s)
        if startup.done() and not startup.cancelled() and startup.exception() is not None:
            stop.set()  # a bug, not an outage (_until_done retries outages): fail the start
            await asyncio.gather(monitor, return_exceptions=True)
            raise startup.exception()
        log.info("%s listening on %s:%s%s", spec.name, settings.http_host, settings.http_port,
                 "" if startup.done() else " (still starting: see /healthz)")
        try:
            yield
        finally:
            stop.set()
            startup.cancel()
            await asyncio.gather(startup, return_exceptions=True)
            if started.jobs:  # before the pool closes: they may be inside a transaction
                _, late = await asyncio.wait(started.jobs, timeout=BACKGROUND_STOP_S)
                for job in late:
                    job.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            if started.broker:
                await broker.stop()
            # last: what the jobs and the final consumer batch wrote goes out now, not at the
            # next start
            if started.relay_task is not None:
                started.relay_stop.set()
                try:
                    await asyncio.wait_for(started.relay_task, 10)
                except Exception:  # shutting down: the relay's fate no longer matters
                    log.warning("outbox relay did not stop cleanly", exc_info=True)
            await asyncio.gather(monitor, return_exceptions=True)
            if started.pool is not None:
                await _close_pool(started.pool)

    # docs pages of our own (install_offline_docs): FastAPI's load their assets from a CDN
    app = FastAPI(title=f"TKM {spec.name} service", description=spec.description,
                  version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.signing_key = settings.auth_signing_key.get_secret_value()
    app.state.settings = settings
    app.state.keyring = settings.keyring() if spec.personal_data else None
    app.state.holds = PartitionHolds(spec.name)  # partitions paused before a newer version
    app.state.health = health
    health.paused = lambda: bool(app.state.holds.held)
    build_info(spec.name, app.version)
    for router in spec.routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    # the kernel's audit trail, in every service (GET /audit, GET /audit/actors/{pseudonym})
    app.include_router(audit.build_router(), responses=ERROR_RESPONSES)
    idempotency.install(app, lease_s=settings.idempotency_lease_s)  # inside the body limit
    _add_operations(app)
    install_offline_docs(app)
    # outermost: a body over its cap is refused before it is read and before authentication
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes,
                       max_csv_bytes=settings.max_csv_bytes)
    # outermost of all: an overloaded service answers 503 before doing anything else
    shedding.install(app, service=spec.name, limit=settings.max_in_flight,
                     queue_wait_s=settings.queue_wait_s)
    # outermost: every request gets its correlation id and exactly one access line, shed or not
    app.add_middleware(AccessLog, service=spec.name)
    return app


@dataclass
class _Started:
    """What the background start-up has brought up so far (stopped in reverse at shutdown)."""

    pool: asyncpg.Pool | None = None
    relay_task: asyncio.Task | None = None
    relay_stop: asyncio.Event = field(default_factory=asyncio.Event)
    broker: bool = False  # broker.start() was attempted: broker.stop() cleans up either way
    jobs: list[asyncio.Task] = field(default_factory=list)


async def _start_up(app: FastAPI, spec: ServiceSpec, settings: ServiceSettings,
                    sec: KafkaSecurity, broker: KafkaBroker, health: HealthMonitor,
                    started: _Started, stop: asyncio.Event) -> None:
    """Postgres first (what the API needs), then Kafka; each retried until it answers."""
    applied = await _until_done(lambda: _migrate(settings.database_url, spec),
                                "connecting to Postgres and migrating", stop)
    if applied:
        log.info("migrations applied: %s", applied)
    pool = started.pool = await _until_done(lambda: shedding.create_pool(
        settings.database_url, min_size=2, max_size=settings.db_pool_max,
        acquire_timeout=settings.db_acquire_timeout_s), "opening the database pool", stop)
    store = EventStore(spec.name)
    relay = OutboxRelay(settings.database_url, settings.kafka_bootstrap_servers, spec.name,
                        batch_size=settings.relay_batch_size,
                        poll_interval=settings.relay_poll_interval_s, security=sec)
    ctx = app.state.ctx = ServiceContext(spec, settings, pool, store, relay, broker,
                                         keyring=app.state.keyring)
    health.pool = pool
    # the relay outlives a broker outage by itself: commands are absorbed by the outbox
    started.relay_task = asyncio.create_task(relay.run(started.relay_stop), name="outbox-relay")
    jobs_stop = stop
    started.jobs += [_start_background(job, ctx, jobs_stop)
                     for job in (housekeeping, idempotency.prune_keys)]
    log.info("%s ready: database migrated", spec.name)
    dlq = dead_letter_topic(spec.name)
    watch: list[Background] = []
    if spec.consumes:
        watch.append(_subscribe(
            broker, EventConsumer(pool, store, spec.name, spec.handlers, dlq,
                                  max_retries=settings.consumer_max_retries,
                                  projector=spec.projector),
            spec, settings, app.state.holds))

    async def start_broker() -> None:
        await ensure_topics(settings.kafka_bootstrap_servers, [spec.topic, dlq, *spec.consumes],
                            partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            client=sec.admin_kwargs())
        started.broker = True
        try:
            await broker.start()
        except BaseException:
            with contextlib.suppress(Exception):  # a half-started broker starts again cleanly
                await broker.stop()
            raise

    await _until_done(start_broker, "starting the Kafka clients", stop)
    health.consumer_started = True
    log.info("%s consuming %s", spec.name, ", ".join(spec.consumes) or "nothing")
    started.jobs += [_start_background(job, ctx, jobs_stop)
                     for job in (*spec.background, *watch)]


async def _migrate(dsn: str, spec: ServiceSpec) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [*await migrate(conn, spec.name, spec.migrations), *await audit.migrate(conn),
                *(await privacy.migrate(conn) if spec.personal_data else [])]
    finally:
        await conn.close()


async def _until_done(make: Callable[[], Awaitable[Any]], what: str,
                      stop: asyncio.Event) -> Any:
    """Retry `make` until it succeeds (1 s, doubling to 15 s between tries); the warnings are
    rate-limited (shared.observability.RateLimit)."""
    attempt = 0
    while True:
        try:
            return await make()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an outage, or a fault an operator must see
            attempt += 1
            log.warning("%s failed (attempt %d), retrying: %r", what, attempt, exc,
                        extra={"ratelimit": True})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(15.0, 2.0 ** min(attempt - 1, 4)))
            if stop.is_set():
                raise asyncio.CancelledError from None


def _start_background(job: Background, ctx: ServiceContext,
                      stop: asyncio.Event) -> asyncio.Task:
    task = asyncio.create_task(job(ctx, stop), name=getattr(job, "__name__", "background"))

    # a job that dies early is reported when it dies, not discovered at shutdown
    def ended(done: asyncio.Task) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("background job %s failed", done.get_name(), exc_info=done.exception())
        elif not stop.is_set():
            log.warning("background job %s ended before shutdown", done.get_name())

    task.add_done_callback(ended)
    return task


def _subscribe(broker: KafkaBroker, consumer: EventConsumer, spec: ServiceSpec,
               settings: ServiceSettings, holds: PartitionHolds) -> Background:
    """Subscribe the consumer; returns the background job resuming held partitions."""

    # declare=False: the topics are the admin's to create (ensure_topics, `infra up`), not the
    # subscriber's, whose principal has no Create right (and whose default is one partition)
    @broker.subscriber(*(Topic(t, declare=False) for t in spec.consumes),
                       group_id=spec.consumer_group or spec.name, batch=True,
                       max_records=settings.consumer_batch_size, batch_timeout_ms=100,
                       ack_policy=AckPolicy.MANUAL, auto_offset_reset="earliest",
                       max_poll_interval_ms=15 * 60 * 1000, decoder=_keep_raw)
    async def on_events(msg: KafkaMessage) -> None:
        records = list(msg.raw_message) if isinstance(msg.raw_message, tuple) else [msg.raw_message]
        began = time.perf_counter()
        # waits out an unreachable database, splits a batch that keeps failing: returns when
        # every record is settled or held back; the handlers' context ends with the batch
        with bound(correlation_id=None, event_id=None):
            result = await consumer.consume(records)
        for held in result.held.values():
            try:  # seek back and pause before the commit: it then stops before the record
                holds.hold(msg.consumer, held)
            except IllegalStateError as exc:  # revoked meanwhile: the new owner holds it
                log.warning("could not pause %s[%d]: %r", held.topic, held.partition, exc)
        try:
            await msg.ack()
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # a rebalance took the partitions away (aiokafka #933): the new owner redelivers
            # and the inbox turns the redelivery into a no-op
            log.warning("offset commit failed after a rebalance: %r", exc)
        _log_batch(records, result.outcomes, time.perf_counter() - began)

    async def resume_when_known(_: ServiceContext, stop: asyncio.Event) -> None:
        # a process that learns the newer version (or lost the partition) resumes by itself;
        # a restarted, upgraded one reads the held record from its committed offset anyway
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HOLD_RECHECK_S)
            try:
                holds.recheck()
            except (IllegalStateError, KafkaError) as exc:
                log.warning("re-checking paused partitions failed: %r", exc)

    return resume_when_known


def _log_batch(records: list[Any], outcomes: dict[str, int], seconds: float) -> None:
    """One INFO line per consumed batch: where it was read, what became of it, how long."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for r in records:
        low_high = ranges.setdefault((r.topic, r.partition), [r.offset, r.offset])
        low_high[0], low_high[1] = min(low_high[0], r.offset), max(low_high[1], r.offset)
    topics = sorted({t for t, _ in ranges})
    batch_log.info(
        "consumed %d records from %s in %.1f ms: %s", len(records), ", ".join(topics),
        seconds * 1000, ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "nothing",
        extra={"topics": topics, "records": len(records), "outcomes": outcomes,
               "duration_ms": round(seconds * 1000, 1),
               "offsets": {f"{t}[{p}]": f"{lo}-{hi}" for (t, p), (lo, hi) in sorted(
                   ranges.items())}})


async def _keep_raw(msg: Any) -> None:
    return None  # records are decoded by EventConsumer, which dead-letters what fails


class Readiness(BaseModel):
    ready: bool
    # postgres decides readiness; kafka and outbox_relay_active are shown, not required
    checks: dict[str, bool | None]
    # "degraded": ready, but something is wrong (see /healthz: kafka unreachable, a consumer
    # paused before events it cannot read yet...)
    status: str = "ok"
    degraded: list[str] = []
    consumer: dict[str, Any] | None = None
    # who answers: a runner that gave two services one port would otherwise take one's answer
    # for the other's
    service: str | None = None


class Health(BaseModel):
    status: str  # "ok" or "degraded"; the process lives either way (always 200)
    degraded: list[str]
    ready: bool = False
    dependencies: dict[str, bool | None] = {}
    consumer_lag: int = 0
    outbox_backlog: int = 0
    outbox_oldest_unsent_age_s: float = 0


OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_AUTH_REFUSED = {401: "unauthenticated", 403: "forbidden"}


class AccessLog:
    """Pure ASGI, outermost (a BaseHTTPMiddleware would run the endpoint in another task and
    buffer streamed bodies):
    - the request's X-Correlation-ID, or a new one, is set for the logs and the events the
      request writes (and reset when the request ends), and echoed on the response;
    - one access line per request: method, route template, actor (pseudonym), outcome,
      status, duration, and for an error the reason from its body; INFO, 401/403 WARNING,
      5xx ERROR (health, readiness and metrics probes at DEBUG);
    - tkm_http_requests_total and tkm_http_request_duration_seconds by route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service
        # the metrics' children by (method, route, status): looked up once, not per request
        self._counted: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-correlation-id"), b"")
        try:
            value = str(uuid.UUID(given.decode("latin-1")))
        except ValueError:
            value = str(uuid.uuid4())
        status, body, started = 500, bytearray(), False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message)["X-Correlation-ID"] = value
            elif message["type"] == "http.response.body" and status >= 400 and len(body) < 4096:
                body.extend(message.get("body", b"")[:4096])
            await send(message)

        with bound(correlation_id=value, event_id=None):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # a bug of ours: logged with its traceback, answered here (with the
                # correlation id, still set) without internals
                log.error("unhandled error answering a request", exc_info=exc)
                self._log(scope, 500, began, f"unhandled {type(exc).__name__}")
                if started:
                    raise
                await JSONResponse(error_body(500, "internal error", None,
                                              {"correlation_id": value}), status_code=500,
                                   headers={"X-Correlation-ID": value})(scope, receive, send)
                return
            self._log(scope, status, began, _reason(bytes(body)) if status >= 400 else None)

    def _log(self, scope: Scope, status: int, began: float, reason: str | None) -> None:
        seconds = time.perf_counter() - began
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "")
        children = self._counted.get((method, route, status))
        if children is None:
            children = self._counted[(method, route, status)] = (
                HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                HTTP_SECONDS.labels(self.service, method, route))
        children[0].inc()
        children[1].observe(seconds)
        if status >= 500:
            level, outcome = logging.ERROR, "error"
        elif status in _AUTH_REFUSED:
            level, outcome = logging.WARNING, _AUTH_REFUSED[status]
        elif status >= 400:
            level, outcome = logging.INFO, "refused"
        else:
            level, outcome = logging.INFO, "ok"
        if scope.get("path") in OPERATIONS_PATHS and status < 500:
            level = logging.DEBUG
        if not access_log.isEnabledFor(level):
            return
        app = scope.get("app")
        actor = idempotency._actor(app, scope) if app is not None else None
        access_log.log(level, "%s %s %d %s in %.1f ms%s", method, route, status, outcome,
                       seconds * 1000, f": {reason}" if reason else "",
                       extra={"method": method, "route": route, "status": status,
                              "outcome": outcome, "duration_ms": round(seconds * 1000, 1),
                              "actor": actor or "-", "reason": reason})


def _reason(body: bytes) -> str | None:
    try:
        error = orjson.loads(body)["error"]
        return str(error.get("reason"))[:300]
    except Exception:  # noqa: BLE001 - not our error shape, or cut at 4 KiB
        return None


def _add_operations(app: FastAPI) -> None:

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            return JSONResponse(error_body(400, "the body is not valid JSON", "body"),
                                status_code=400)
        errors, total = bounded_errors(
            [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]}
             for e in raw])
        first = errors[0] if errors else {"field": None, "reason": "invalid request"}
        body = error_body(422, first["reason"], first["field"], {"errors_total": total})
        return JSONResponse({**body, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # starlette's own answers (unknown route 404, 405, unparseable body 400) in our shape
        reason = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse(error_body(exc.status_code, reason), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        # a bug of ours: logged with its traceback, answered without internals
        log.error("unhandled error answering a request", exc_info=exc)
        return JSONResponse(error_body(500, "internal error", None,
                                       {"correlation_id": correlation_id_var.get()}),
                            status_code=500)

    @app.get("/healthz", tags=["operations"], response_model=Health)
    async def healthz(request: Request) -> JSONResponse:
        """Liveness (always 200 while the process lives) and what is wrong, if anything."""
        health: HealthMonitor = request.app.state.health
        ctx = getattr(request.app.state, "ctx", None)
        return JSONResponse({**health.report(), "ready": ctx is not None})

    @app.get("/readyz", tags=["operations"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the API can answer: the database is migrated and answers. Kafka is not
        required (the outbox absorbs commands during an outage): /healthz says "degraded"."""
        ctx: ServiceContext | None = getattr(request.app.state, "ctx", None)
        health: HealthMonitor = request.app.state.health
        checks: dict[str, bool | None] = {"postgres": False, "kafka": health.kafka_up}
        if ctx is not None:
            checks["postgres"] = await _postgres_answers(ctx.settings.database_url)
            checks["outbox_relay_active"] = ctx.relay.active
        ready = bool(checks["postgres"])
        holds: PartitionHolds | None = getattr(request.app.state, "holds", None)
        consumer = holds.report() if holds else {"status": "ok", "paused_partitions": []}
        degraded = health.degraded()
        status = ("degraded" if degraded or consumer["status"] != "ok" else "ok") if ready \
            else "not ready"
        return JSONResponse({"ready": ready, "status": status, "checks": checks,
                             "degraded": degraded, "consumer": consumer,
                             "service": ctx.spec.name if ctx is not None else None},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 10)
    except Exception:  # noqa: BLE001 - a connection broken by an outage cannot close politely
        pool.terminate()


async def _postgres_answers(dsn: str) -> bool:
    # a connection of its own: a probe cancelled by its timeout must not spoil a pooled one
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except Exception:  # noqa: BLE001 - a probe answers yes or no
        return False
    try:
        return await conn.fetchval("SELECT 1", timeout=2) == 1
    except Exception:  # noqa: BLE001
        return False
    finally:
        conn.terminate()


def serve(spec: ServiceSpec) -> None:
    """Entry point of `python -m services.<name>`."""
    import uvicorn

    settings = load_settings(spec.name)
    app = create_app(spec, settings)
    # uvloop and httptools: the C event loop and HTTP parser (runtime dependencies), not the
    # pure-Python asyncio loop and h11
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, loop="uvloop", http="httptools")
