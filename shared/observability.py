"""JSON logs carrying service, event id and correlation id; Prometheus metrics.

Log lines carry a millisecond UTC timestamp (`2026-12-01T21:45:03.123Z`). The connection errors
the Kafka clients log during an outage (aiokafka, faststream, and our own records logged with
`extra={"ratelimit": True}`) are rate-limited (`RateLimit`): a few lines a minute per message,
the next one that passes says how many were suppressed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

service_var: ContextVar[str] = ContextVar("service", default="-")
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)  # uvicorn's terminal copy of the message
        record.service = service_var.get()
        if not hasattr(record, "event_id"):
            record.event_id = event_id_var.get()
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id_var.get()
        return True


@contextlib.contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Set context variables (`correlation_id`, `event_id`) for a request or a batch, and reset
    them when it ends, so they never tag a later, unrelated line."""
    variables = {"correlation_id": correlation_id_var, "event_id": event_id_var}
    tokens = [(variables[name], variables[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _UtcMillisFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{int(record.msecs):03d}Z"


RATE_LIMITED = ("aiokafka", "kafka", "faststream", "tkm.broker")


class RateLimit(logging.Filter):
    """Lets `per_key` records of one message (logger + message template) and `per_family` of
    one library through per `window_s`; counts the rest, and the next record of that message
    that passes carries `suppressed` (how many were dropped). Applies to WARNING and above of
    the `RATE_LIMITED` loggers and to records logged with `extra={"ratelimit": True}`."""

    def __init__(self, window_s: float = 60.0, per_key: int = 2, per_family: int = 6) -> None:
        super().__init__()
        self.window_s, self.per_key, self.per_family = window_s, per_key, per_family
        self._keys: dict[tuple[str, str], list[float | int]] = {}  # key -> [start, passed, dropped]
        self._families: dict[str, list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        family = next((f for f in RATE_LIMITED
                       if record.name == f or record.name.startswith(f + ".")), None)
        if getattr(record, "ratelimit", False):
            family = family or record.name
        elif family is None or record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        key = (record.name, str(record.msg))
        k = self._window(self._keys, key, now)
        f = self._window(self._families, family, now)
        if k[1] >= self.per_key or f[1] >= self.per_family:
            k[2] += 1
            return False
        k[1] += 1
        f[1] += 1
        if k[2]:
            record.suppressed = int(k[2])
            record.msg = f"{record.msg} [{int(k[2])} similar lines suppressed]"
            k[2] = 0
        return True

    def _window(self, table: dict, key: object, now: float) -> list[float | int]:
        entry = table.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            dropped = entry[2] if entry is not None else 0
            entry = table[key] = [now, 0, dropped]
        if len(table) > 1000:  # bounded: messages with ever-changing text
            for stale in [k for k, v in table.items() if now - v[0] >= self.window_s]:
                del table[stale]
        return entry


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every log record, ours and the libraries', as one JSON object per line to stdout."""
    service_var.set(service)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RateLimit())
    handler.addFilter(_ContextFilter())
    handler.setFormatter(_UtcMillisFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(event_id)s %(correlation_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "uvicorn.access", "faststream.access.kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


HANDLER_SECONDS = Histogram("tkm_handler_seconds", "Time to handle one consumed batch",
                            ["service", "topic"])
EVENTS_CONSUMED = Counter("tkm_events_consumed_total", "Consumed events by outcome",
                          ["service", "topic", "outcome"])
# measured, not remembered (shared.health, on a timer): the group's committed offsets against
# the partitions' end offsets on the broker; the outbox and the inbox by SQL
CONSUMER_LAG = Gauge("tkm_consumer_lag", "Records of a consumed partition after the consumer "
                     "group's committed offset (broker-side)", ["service", "topic", "partition"])
CONSUMER_LAG_TOTAL = Gauge("tkm_consumer_lag_total", "Sum of tkm_consumer_lag of the service",
                           ["service"])
OUTBOX_BACKLOG = Gauge("tkm_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge("tkm_outbox_oldest_unsent_age_seconds",
                          "Age of the oldest outbox row not yet published (0 when none)",
                          ["service"])
DLQ_LETTERS = Gauge("tkm_dlq_letters", "Dead-lettered inbox rows still pending (not replayed)",
                    ["service"])
DEPENDENCY_UP = Gauge("tkm_dependency_up", "1 when the dependency answered the last probe",
                      ["service", "dependency"])
DEGRADED = Gauge("tkm_degraded", "1 while the service is degraded for this reason",
                 ["service", "reason"])
BUILD_INFO = Gauge("tkm_build_info", "Always 1: the running version", ["service", "version",
                                                                       "git_sha"])
HTTP_REQUESTS = Counter("tkm_http_requests_total", "HTTP requests answered",
                        ["service", "method", "route", "status"])
HTTP_SECONDS = Histogram("tkm_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["service", "method", "route"],
                         buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
RELAY_PUBLISH_SECONDS = Histogram("tkm_relay_publish_seconds",
                                  "Time for the broker to acknowledge one relay batch",
                                  ["service"])
OUTBOX_FAILED = Counter("tkm_outbox_failed_total", "Outbox rows the broker refused for good",
                        ["service"])
EVENTS_PUBLISHED = Counter("tkm_events_published_total", "Outbox rows published", ["service"])
CONSUMER_PAUSED = Gauge("tkm_consumer_paused_partitions",
                        "Partitions paused before an event of a version this consumer does not "
                        "know yet", ["service", "topic"])


def build_info(service: str, version: str) -> None:
    """tkm_build_info: the version, and the commit from TKM_GIT_SHA (set by the image build)."""
    BUILD_INFO.labels(service, version, os.environ.get("TKM_GIT_SHA", "unknown")).set(1)
