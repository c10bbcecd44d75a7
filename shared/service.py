"""The composition root every service uses: one process running the FastAPI HTTP API, the
faststream Kafka subscriber and the outbox relay under one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import idempotency, shedding
from shared.aggregate import Projector, UnitOfWork, run_command
from shared.auth import Actor
from shared.consumer import EventConsumer, Handler, PartitionHolds, record_lag
from shared.docs_assets import install_offline_docs
from shared.errors import ERROR_RESPONSES, DomainError, error_body
from shared.eventstore import EventStore, migrate
from shared.housekeeping import housekeeping
from shared.limits import BodySizeLimit, bounded_errors
from shared.observability import configure_logging, correlation_id_var
from shared.outbox import OutboxRelay
from shared.projections import RebuildPlan
from shared.settings import ServiceSettings, load_settings
from shared.topics import dead_letter_topic, ensure_topics

log = logging.getLogger("tkm.service")
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


@dataclass
class ServiceContext:
    spec: ServiceSpec
    settings: ServiceSettings
    pool: asyncpg.Pool
    store: EventStore
    relay: OutboxRelay
    broker: KafkaBroker

    async def command(self, decide: Callable[[UnitOfWork], Awaitable[Any]], actor: Actor, *,
                      isolation: str | None = None) -> Any:
        """Run a command's decision in one transaction (events + outbox + inline projection);
        `isolation` ("repeatable_read", "serializable") when its reads need one snapshot."""
        return await run_command(self.pool, self.store, idempotency.recording(decide),
                                 actor=actor.id,
                                 correlation_id=_correlation_uuid(), projector=self.spec.projector,
                                 isolation=isolation)


def _correlation_uuid() -> uuid.UUID:
    value = correlation_id_var.get()
    return uuid.UUID(value) if value else uuid.uuid4()


def context(request: Request) -> ServiceContext:
    """FastAPI dependency giving handlers the service's pool, store and settings."""
    return request.app.state.ctx


def create_app(spec: ServiceSpec, settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings(spec.name)
    configure_logging(spec.name, settings.log_level)
    # our own logger name: "faststream" comes with a coloured text handler, and per-message
    # "Received/Processed" lines belong at DEBUG, not in an operator's INFO stream
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=logging.getLogger("tkm.broker"),
                         log_level=logging.DEBUG)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conn = await _connect_with_retry(settings.database_url)
        try:
            applied = await migrate(conn, spec.name, spec.migrations)
        finally:
            await conn.close()
        if applied:
            log.info("migrations applied: %s", applied)
        dlq = dead_letter_topic(spec.name)
        await _retry(lambda: ensure_topics(
            settings.kafka_bootstrap_servers, [spec.topic, dlq, *spec.consumes],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor), "creating topics")
        pool = await shedding.create_pool(settings.database_url, min_size=2,
                                          max_size=settings.db_pool_max,
                                          acquire_timeout=settings.db_acquire_timeout_s)
        store = EventStore(spec.name)
        relay = OutboxRelay(settings.database_url, settings.kafka_bootstrap_servers, spec.name,
                            batch_size=settings.relay_batch_size,
                            poll_interval=settings.relay_poll_interval_s)
        app.state.ctx = ServiceContext(spec, settings, pool, store, relay, broker)
        watch: list[Background] = []
        try:
            if spec.consumes:
                watch.append(_subscribe(
                    broker, EventConsumer(pool, store, spec.name, spec.handlers, dlq,
                                          max_retries=settings.consumer_max_retries,
                                          projector=spec.projector),
                    spec, settings, app.state.holds))
            await broker.start()
        except BaseException:
            await _close_pool(pool)
            raise
        jobs_stop, relay_stop = asyncio.Event(), asyncio.Event()
        relay_task = asyncio.create_task(relay.run(relay_stop), name="outbox-relay")
        jobs = [_start_background(job, app.state.ctx, jobs_stop)
                for job in (*spec.background, housekeeping, idempotency.prune_keys, *watch)]
        log.info("%s ready on %s:%s", spec.name, settings.http_host, settings.http_port)
        try:
            yield
        finally:
            jobs_stop.set()
            if jobs:  # before the pool closes: they may be inside a transaction
                _, late = await asyncio.wait(jobs, timeout=BACKGROUND_STOP_S)
                for job in late:
                    job.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            await broker.stop()
            # last: what the jobs and the final consumer batch wrote goes out now, not at the
            # next start
            relay_stop.set()
            try:
                await asyncio.wait_for(relay_task, 10)
            except Exception:  # shutting down: the relay's fate no longer matters
                log.warning("outbox relay did not stop cleanly", exc_info=True)
            await _close_pool(pool)

    # docs pages of our own (install_offline_docs): FastAPI's load their assets from a CDN
    app = FastAPI(title=f"TKM {spec.name} service", description=spec.description,
                  version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.signing_key = settings.auth_signing_key.get_secret_value()
    app.state.settings = settings
    app.state.holds = PartitionHolds(spec.name)  # partitions paused before a newer version
    for router in spec.routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    idempotency.install(app, lease_s=settings.idempotency_lease_s)  # inside the body limit
    _add_operations(app)
    install_offline_docs(app)
    # outermost: a body over its cap is refused before it is read and before authentication
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes,
                       max_csv_bytes=settings.max_csv_bytes)
    # outermost of all: an overloaded service answers 503 before doing anything else
    shedding.install(app, service=spec.name, limit=settings.max_in_flight,
                     queue_wait_s=settings.queue_wait_s)
    return app


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

    @broker.subscriber(*spec.consumes, group_id=spec.consumer_group or spec.name, batch=True,
                       max_records=settings.consumer_batch_size, batch_timeout_ms=100,
                       ack_policy=AckPolicy.MANUAL, auto_offset_reset="earliest",
                       max_poll_interval_ms=15 * 60 * 1000, decoder=_keep_raw)
    async def on_events(msg: KafkaMessage) -> None:
        records = list(msg.raw_message) if isinstance(msg.raw_message, tuple) else [msg.raw_message]
        # waits out an unreachable database, splits a batch that keeps failing: returns when
        # every record is settled or held back
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
        record_lag(msg.consumer, spec.name, records)

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


async def _keep_raw(msg: Any) -> None:
    return None  # records are decoded by EventConsumer, which dead-letters what fails


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]
    # "degraded": ready, but a consumer paused partitions before events it cannot read yet
    status: str = "ok"
    consumer: dict[str, Any] | None = None


class CorrelationMiddleware:
    """Pure ASGI (a BaseHTTPMiddleware would run the endpoint in another task and buffer
    streamed bodies): the request's X-Correlation-ID, or a new one, is set for the logs and the
    events the request writes, and echoed on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-correlation-id"), b"")
        try:
            value = str(uuid.UUID(given.decode("latin-1")))
        except ValueError:
            value = str(uuid.uuid4())
        correlation_id_var.set(value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Correlation-ID"] = value
            await send(message)

        await self.app(scope, receive, send_with_id)


def _add_operations(app: FastAPI) -> None:
    app.add_middleware(CorrelationMiddleware)

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

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        ctx: ServiceContext | None = getattr(request.app.state, "ctx", None)
        checks = {"postgres": False, "kafka": False}
        if ctx is not None:
            checks["postgres"] = await _postgres_answers(ctx.settings.database_url)
            with contextlib.suppress(Exception):
                checks["kafka"] = bool(await ctx.broker.ping(timeout=2))
            checks["outbox_relay_active"] = ctx.relay.active
        ready = checks["postgres"] and checks["kafka"]
        holds: PartitionHolds | None = getattr(request.app.state, "holds", None)
        consumer = holds.report() if holds else {"status": "ok", "paused_partitions": []}
        status = consumer["status"] if ready else "not ready"
        return JSONResponse({"ready": ready, "status": status, "checks": checks,
                             "consumer": consumer}, status_code=200 if ready else 503)

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


async def _connect_with_retry(dsn: str, seconds: float = 60) -> asyncpg.Connection:
    return await _retry(lambda: asyncpg.connect(dsn), "connecting to Postgres", seconds)


async def _retry(make: Callable[[], Awaitable[Any]], what: str, seconds: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            return await make()
        except (OSError, KafkaError, asyncpg.CannotConnectNowError) as exc:
            if loop.time() > deadline:
                raise RuntimeError(f"{what} failed for {seconds:.0f}s: {exc!r}") from exc
            log.warning("%s failed, retrying: %r", what, exc)
            await asyncio.sleep(1)


def serve(spec: ServiceSpec) -> None:
    """Entry point of `python -m services.<name>`."""
    import uvicorn

    settings = load_settings(spec.name)
    app = create_app(spec, settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False)
