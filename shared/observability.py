"""JSON logs carrying service, event id and correlation id; Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

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


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every log record, ours and the libraries', as one JSON object per line to stdout."""
    service_var.set(service)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(event_id)s %(correlation_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "uvicorn.access", "faststream.access.kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


HANDLER_SECONDS = Histogram("tkm_handler_seconds", "Time to handle one consumed batch",
                            ["service", "topic"])
EVENTS_CONSUMED = Counter("tkm_events_consumed_total", "Consumed events by outcome",
                          ["service", "topic", "outcome"])
CONSUMER_LAG = Gauge("tkm_consumer_lag", "Messages behind the partition end", ["service", "topic"])
OUTBOX_BACKLOG = Gauge("tkm_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_FAILED = Counter("tkm_outbox_failed_total", "Outbox rows the broker refused for good",
                        ["service"])
EVENTS_PUBLISHED = Counter("tkm_events_published_total", "Outbox rows published", ["service"])
CONSUMER_PAUSED = Gauge("tkm_consumer_paused_partitions",
                        "Partitions paused before an event of a version this consumer does not "
                        "know yet", ["service", "topic"])
