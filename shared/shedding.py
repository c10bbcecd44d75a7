"""Overload and outage answers: a bounded number of requests in flight, a bounded wait for a
database connection, and a 503 JSON answer with `Retry-After` for both and for a database that
cannot be reached, instead of an unbounded queue or a plain-text 500.

Guarantees:
- `ConcurrencyLimit` (pure ASGI, installed outermost by `create_app`): at most `limit` requests
  run at once; at most `limit` more wait, each at most `queue_wait_s`; any other request is
  answered 503 at once. Health, readiness and metrics are never limited (`EXEMPT`).
- `create_pool` gives a pool whose `acquire()` waits at most `acquire_timeout` seconds by
  default, then raises `DatabaseBusyError` (nothing was done with the database). Inside
  `patient()` (a bulk request already admitted, part-way through its items) it waits up to
  `patient_timeout` instead: contention must not cut such a request in the middle.
- `install_handlers` maps `DatabaseBusyError` and lost or refused database connections
  (`DATABASE_UNAVAILABLE`) to 503, and `ServiceUnavailableError` (a bulk request interrupted by
  an outage, with what was written per item in its details) to 503, each with `Retry-After`.
- Every `Retry-After` (whole seconds, at least 1, as HTTP has it) comes with `Retry-After-Ms`,
  the same advice in milliseconds for clients that can use it: for a request shed at the
  in-flight limit it is the recent time to answer a request (an exponential average, 10 ms to
  1 s), after which a slot has likely freed; otherwise the seconds times 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge

from shared.errors import DomainError

log = logging.getLogger("tkm.shedding")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
BUSY_RETRY_AFTER_S = 1
OUTAGE_RETRY_AFTER_S = 5
MIN_RETRY_AFTER_MS = 10
RETRY_AFTER_MS = "Retry-After-Ms"


def retry_after(seconds: int, ms: int | None = None) -> dict[str, str]:
    """The `Retry-After` (seconds) and `Retry-After-Ms` headers of an answer."""
    return {"Retry-After": str(seconds), RETRY_AFTER_MS: str(seconds * 1000 if ms is None else ms)}

SHED = Counter("tkm_http_requests_shed_total", "Requests answered 503 because the service "
               "was at its in-flight limit", ["service"])
IN_FLIGHT = Gauge("tkm_http_requests_in_flight", "Requests being answered now", ["service"])


class DatabaseBusyError(Exception):
    """No pooled connection became free within the pool's acquire timeout."""


class ServiceUnavailableError(DomainError):
    """The database went away part-way: `details` tell what was written (e.g. `results`)."""

    status = 503


# errors that mean the database cannot be reached or dropped the connection: the request
# is answered 503 (its transaction did not commit, or its fate is told per item)
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    DatabaseBusyError, ConnectionError, asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError, asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError)


def _error(status: int, reason: str, **details: Any) -> dict[str, Any]:
    return {"error": {**details, "status": status, "field": None, "reason": reason}}


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, *, service: str, limit: int, queue_wait_s: float) -> None:
        self.app = app
        self.limit = limit
        self.queue_wait_s = queue_wait_s
        self.slots = asyncio.Semaphore(limit)
        self.waiting = 0
        self.shed = SHED.labels(service)
        self.in_flight = IN_FLIGHT.labels(service)
        # recent time to answer an admitted request (exponential average): Retry-After-Ms
        self.typical_s = 0.05

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            self.shed.inc()
            await _answer(send, 503, _error(
                503, f"the service is answering {self.limit} requests already; retry shortly"),
                retry_after(BUSY_RETRY_AFTER_S, self.retry_after_ms()))
            return
        self.in_flight.inc()
        began = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.dec()
            self.slots.release()
            self.typical_s += (time.monotonic() - began - self.typical_s) * 0.1

    def retry_after_ms(self) -> int:
        """When a shed request had best come back: by then a slot has likely freed."""
        return max(MIN_RETRY_AFTER_MS, min(BUSY_RETRY_AFTER_S * 1000,
                                           round(self.typical_s * 1000)))

    async def _admit(self) -> bool:
        if not self.slots.locked():
            await self.slots.acquire()  # a free slot: returns without suspending
            return True
        if self.waiting >= self.limit or self.queue_wait_s <= 0:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_wait_s):
                await self.slots.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1


async def _answer(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]
                  ) -> None:
    raw = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
    await send({"type": "http.response.body", "body": raw})


_patient: contextvars.ContextVar[bool] = contextvars.ContextVar("patient", default=False)


@contextlib.contextmanager
def patient() -> Iterator[None]:
    """Connections acquired inside wait up to the pool's `patient_timeout`."""
    token = _patient.set(True)
    try:
        yield
    finally:
        _patient.reset(token)


class Connection(asyncpg.Connection):
    """A pooled connection that may be handed back without the pool's reset query (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL: one more statement) when its user says it changed
    nothing beyond its transaction (`shared.aggregate.run_command`)."""

    __slots__ = ("_transaction_only",)

    def transaction_only(self) -> None:
        """What this session did since it was acquired ended with its transaction."""
        self._transaction_only = True

    def take_transaction_only(self) -> bool:
        clean, self._transaction_only = getattr(self, "_transaction_only", False), False
        return clean


def transaction_only(conn: Any) -> None:
    """Tell the pool (`create_pool`) that `conn`, acquired from it, changed no session state:
    it returns to the pool without the reset query. A no-op on other pools' connections."""
    mark = getattr(conn, "transaction_only", None)
    if mark is not None:
        mark()


async def _reset(conn: asyncpg.Connection) -> None:
    # the pool has rolled back any open transaction already
    if isinstance(conn, Connection) and conn.take_transaction_only():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


class BoundedPool(asyncpg.Pool):
    __slots__ = ("_acquire_timeout", "_patient_timeout")

    def __init__(self, *args: Any, acquire_timeout: float, patient_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout
        self._patient_timeout = max(patient_timeout, acquire_timeout)

    def acquire(self, *, timeout: float | None = None):
        if timeout is None:
            timeout = self._patient_timeout if _patient.get() else self._acquire_timeout
        return super().acquire(timeout=timeout)

    async def _acquire(self, timeout: float | None) -> Any:
        try:
            return await super()._acquire(timeout)
        except TimeoutError as exc:
            raise DatabaseBusyError(f"no database connection free within {timeout}s") from exc


async def create_pool(dsn: str, *, min_size: int, max_size: int, acquire_timeout: float,
                      patient_timeout: float = 60.0) -> asyncpg.Pool:
    """`asyncpg.create_pool` with its defaults, whose `acquire()` waits at most
    `acquire_timeout` seconds (then DatabaseBusyError), `patient_timeout` in `patient()`, and
    which skips the reset query for a connection marked `transaction_only()`."""
    return await BoundedPool(
        dsn, acquire_timeout=acquire_timeout, patient_timeout=patient_timeout,
        min_size=min_size, max_size=max_size,
        max_queries=50000, max_inactive_connection_lifetime=300.0, loop=None,
        connection_class=Connection, record_class=asyncpg.Record, reset=_reset)


def install(app: FastAPI, *, service: str, limit: int, queue_wait_s: float) -> None:
    """The in-flight limit (outermost middleware) and the 503 answers."""
    install_handlers(app)
    app.add_middleware(ConcurrencyLimit, service=service, limit=limit,
                       queue_wait_s=queue_wait_s)


def install_handlers(app: FastAPI) -> None:
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DatabaseBusyError):
            log.warning("request shed: %s", exc)
            return JSONResponse(_error(503, "the service is busy: no database connection "
                                       "became free in time; retry shortly"),
                                status_code=503, headers=retry_after(BUSY_RETRY_AFTER_S))
        log.warning("database unavailable while answering a request: %r", exc)
        return JSONResponse(_error(503, "the database is unavailable: the request did not "
                                   "complete; retry later (with the same Idempotency-Key, a "
                                   "retry never applies it twice)"), status_code=503,
                            headers=retry_after(OUTAGE_RETRY_AFTER_S))

    async def interrupted(_: Request, exc: ServiceUnavailableError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=503,
                            headers=retry_after(OUTAGE_RETRY_AFTER_S))

    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, database_unavailable)
    app.add_exception_handler(ServiceUnavailableError, interrupted)
