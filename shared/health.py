"""What a service knows about its own health, measured on a timer (`HealthMonitor.run`), so the
gauges and /healthz move when nothing else does (a frozen consumer, a Kafka outage):

- consumer lag from the broker: the group's committed offsets (admin client) against the end
  offsets (a consumer without a group), for every partition of every consumed topic, from
  start-up on; `tkm_consumer_lag{service,topic,partition}` and `tkm_consumer_lag_total`;
- the outbox backlog and the age of its oldest unsent row, and the pending dead letters, by SQL,
  independently of the relay;
- whether Postgres and Kafka answer (`tkm_dependency_up`), and the reasons the service is
  degraded (`tkm_degraded{reason}`, /healthz): kafka unreachable, relay not publishing (the
  oldest unsent row is older than `relay_stale_s`), consumer paused (a newer event version),
  consumer stuck (lag above zero while the group's committed offsets have not moved for
  `stuck_s`), consumer not started (the broker has not answered since start-up).
Readiness (/readyz) depends on Postgres only: the outbox absorbs commands during a Kafka outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.observability import (
    CONSUMER_LAG,
    CONSUMER_LAG_TOTAL,
    DEGRADED,
    DEPENDENCY_UP,
    DLQ_LETTERS,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
)

log = logging.getLogger("tkm.health")

KAFKA_UNREACHABLE = "kafka unreachable"
POSTGRES_UNREACHABLE = "postgres unreachable"
RELAY_STALE = "relay not publishing"
CONSUMER_PAUSED = "consumer paused"
CONSUMER_STUCK = "consumer stuck"
CONSUMER_NOT_STARTED = "consumer not started"
REASONS = (KAFKA_UNREACHABLE, POSTGRES_UNREACHABLE, RELAY_STALE, CONSUMER_PAUSED,
           CONSUMER_STUCK, CONSUMER_NOT_STARTED)

OUTBOX_SQL = ("SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) "
              "AS age FROM outbox WHERE sent_at IS NULL AND failed_reason IS NULL")
DLQ_SQL = "SELECT count(*) FROM inbox WHERE outcome = 'dead-lettered'"


class HealthMonitor:
    """One per service process. `pool` is set once the database is migrated; `consumer_started`
    by the service once its broker runs; `paused` reports partitions held before a newer event
    version (PartitionHolds)."""

    def __init__(self, service: str, bootstrap: str, *, group: str | None,
                 topics: tuple[str, ...], client: dict[str, Any] | None = None,
                 interval_s: float = 5.0, relay_stale_s: float = 60.0, stuck_s: float = 60.0,
                 paused: Callable[[], bool] = lambda: False, dsn: str | None = None) -> None:
        self.service, self.bootstrap, self.group, self.topics = service, bootstrap, group, topics
        self.dsn = dsn  # probed directly until the pool exists (start-up)
        self._rounds = 0
        self._client = client
        self.interval_s, self.relay_stale_s, self.stuck_s = interval_s, relay_stale_s, stuck_s
        self.paused = paused
        self.pool: asyncpg.Pool | None = None
        self.consumer_started = not topics
        self.postgres_up: bool | None = None
        self.kafka_up: bool | None = None
        self.lag: dict[tuple[str, int], int] = {}
        self.backlog = 0
        self.oldest_unsent_s = 0.0
        self._position = -1  # sum of the group's committed offsets
        self._progress_at = time.monotonic()  # when they last moved (or nothing waited)
        self._waiting = False
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self.measured = asyncio.Event()  # set after the first full round
        for dependency in ("postgres", "kafka"):
            DEPENDENCY_UP.labels(service, dependency).set(0)
        self._publish_degraded()

    # -- what /healthz says ------------------------------------------------------------------

    def degraded(self) -> list[str]:
        reasons = []
        if self.kafka_up is False:
            reasons.append(KAFKA_UNREACHABLE)
        if self.postgres_up is False:
            reasons.append(POSTGRES_UNREACHABLE)
        if self.backlog and self.oldest_unsent_s > self.relay_stale_s:
            reasons.append(RELAY_STALE)
        if self.topics and not self.consumer_started:
            reasons.append(CONSUMER_NOT_STARTED)
        if self.paused():
            reasons.append(CONSUMER_PAUSED)
        if (self._waiting and self.kafka_up
                and time.monotonic() - self._progress_at > self.stuck_s):
            reasons.append(CONSUMER_STUCK)
        return reasons

    def report(self) -> dict[str, Any]:
        reasons = self.degraded()
        self._publish_degraded(reasons)  # the gauges say what /healthz says
        return {"status": "degraded" if reasons else "ok", "degraded": reasons,
                "dependencies": {"postgres": self.postgres_up, "kafka": self.kafka_up},
                "consumer_lag": sum(self.lag.values()), "outbox_backlog": self.backlog,
                "outbox_oldest_unsent_age_s": round(self.oldest_unsent_s, 1)}

    def _publish_degraded(self, reasons: list[str] | None = None) -> None:
        current = set(self.degraded() if reasons is None else reasons)
        for reason in REASONS:
            DEGRADED.labels(self.service, reason).set(1 if reason in current else 0)

    # -- the timer ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.measure()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await self._close_kafka()

    async def measure(self) -> None:
        """One round: the database, then the broker; each bounded by the interval."""
        await self._measure_postgres()
        await self._measure_kafka()
        self._publish_degraded()
        self.measured.set()

    async def _measure_postgres(self) -> None:
        pool, up = self.pool, False
        self._rounds += 1
        try:
            async with asyncio.timeout(max(2.0, self.interval_s)):
                if pool is None:  # starting: does the server answer at all?
                    if self.dsn is None:
                        return
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                    await conn.close()
                else:
                    async with pool.acquire() as conn:
                        row = await conn.fetchrow(OUTBOX_SQL)
                        # a scan of the inbox: every sixth round is often enough
                        letters = (await conn.fetchval(DLQ_SQL)
                                   if self._rounds % 6 == 1 else None)
                    self.backlog, self.oldest_unsent_s = int(row["n"]), float(row["age"])
                    OUTBOX_BACKLOG.labels(self.service).set(self.backlog)
                    OUTBOX_OLDEST_AGE.labels(self.service).set(self.oldest_unsent_s)
                    if letters is not None:
                        DLQ_LETTERS.labels(self.service).set(letters)
            up = True
        except Exception as exc:  # noqa: BLE001 - a probe answers yes or no
            log.debug("postgres probe failed: %r", exc)
        self._transition("postgres", self.postgres_up, up)
        self.postgres_up = up
        DEPENDENCY_UP.labels(self.service, "postgres").set(1 if up else 0)

    async def _measure_kafka(self) -> None:
        up = False
        try:
            async with asyncio.timeout(max(3.0, self.interval_s)):
                admin = await self._admin_client()
                if self.topics and self.group:
                    await self._measure_lag(admin)
                else:
                    await admin.list_topics()
            up = True
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, refused
            log.debug("kafka probe failed: %r", exc)
            await self._close_kafka()
        self._transition("kafka", self.kafka_up, up)
        self.kafka_up = up
        DEPENDENCY_UP.labels(self.service, "kafka").set(1 if up else 0)

    def _transition(self, dependency: str, before: bool | None, now: bool) -> None:
        if before is not False and not now:
            log.warning("%s unreachable: %s is degraded", dependency, self.service)
        elif before is False and now:
            log.info("%s reachable again", dependency)

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000,
                                        **self._kwargs("admin"))
            try:
                await admin.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await admin.close()
                raise
            self._admin = admin
        return self._admin

    def _kwargs(self, kind: str) -> dict[str, Any]:
        if self._client is not None:
            return dict(self._client)
        from shared.kafka_security import kafka_security

        security = kafka_security(self.service)
        return security.admin_kwargs() if kind == "admin" else security.consumer_kwargs()

    async def _measure_lag(self, admin: AIOKafkaAdminClient) -> None:
        if self._ends is None:
            ends = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    request_timeout_ms=5000, **self._kwargs("consumer"))
            try:
                await ends.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await ends.stop()
                raise
            self._ends = ends
        # partitions looked up again every twelfth round: a topic may have gained some
        if {tp.topic for tp in self._partitions} != set(self.topics) or self._rounds % 12 == 0:
            found = []
            for described in await admin.describe_topics(list(self.topics)):
                if described.get("error_code", 0) == 0:
                    found += [TopicPartition(described["topic"], p["partition"])
                              for p in sorted(described["partitions"],
                                              key=lambda p: p["partition"])]
            self._partitions = found
        if not self._partitions:
            return
        end = await self._ends.end_offsets(self._partitions)
        committed = await admin.list_consumer_group_offsets(self.group,
                                                            partitions=self._partitions)
        start: dict[TopicPartition, int] = {}
        if any(committed.get(tp) is None or committed[tp].offset < 0 for tp in self._partitions):
            start = await self._ends.beginning_offsets(self._partitions)
        lag = {}
        for tp in self._partitions:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else start[tp]
            lag[(tp.topic, tp.partition)] = max(0, end[tp] - position)
            CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(
                lag[(tp.topic, tp.partition)])
        self.lag = lag
        total = sum(lag.values())
        CONSUMER_LAG_TOTAL.labels(self.service).set(total)
        # stuck: records wait, and the group's committed offsets have not moved meanwhile
        position = sum(c.offset for c in committed.values() if c is not None and c.offset >= 0)
        now = time.monotonic()
        if total == 0 or position != self._position:
            self._position, self._progress_at = position, now
        self._waiting = total > 0

    async def _close_kafka(self) -> None:
        admin, ends, self._admin, self._ends = self._admin, self._ends, None, None
        self._partitions = []
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 5)
        if ends is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ends.stop(), 5)
