"""The outbox relay: publishes committed outbox rows to Kafka, then marks them sent.

Guarantees:
- At least once: a row is marked sent only after the broker acknowledged it (acks=all,
  idempotent producer). A relay killed between the two resends the row; consumers drop the
  duplicate by event id.
- Per-stream order: rows are read in id order (a stream's rows are inserted in version order)
  and the message key is the stream id, so one partition receives a stream's events in order.
- No skips: unsent rows are found by `sent_at IS NULL`, not by a moving position, so a row that
  commits late is still picked up. A row the broker refuses for good (larger than it accepts)
  is set aside with `failed_reason`, logged and counted, instead of blocking every row after it.
- One active relay per service database, by a lease, not a lock: the leader holds a row of
  `relay_lease` (holder, fencing token, expiry) for LEASE_S seconds and renews it every RENEW_S
  on a connection of its own; standbys try to take it every STANDBY_POLL_S and succeed only once
  it has expired. A frozen leader (SIGSTOP, a long GC or VM pause, a partitioned host) stops
  renewing, so a standby takes over within LEASE_S (+ one poll) of the last renewal; a session
  advisory lock would instead stay held by the frozen process's live connection for as long as
  it is frozen, and nothing would be published meanwhile.

Fencing, and why order still holds after a takeover:
- Each acquisition increments `fencing_token`. Rows are marked sent only by a statement that
  checks, in the same statement, that this relay still holds the lease with the token it had
  when it read the batch and that the lease has not expired by the database's clock. A thawed
  old leader's mark therefore changes nothing: its rows stay unsent and the new leader sends
  them (again), so a takeover can only ever cause duplicates, never a loss.
- The relay also stops by its own clock: it treats the lease as lost LEASE_MARGIN_S before the
  expiry it computed from the moment it *asked* for the renewal (monotonic clock, which keeps
  running while the process is stopped), and checks that before reading a batch and before
  every single send. A renewal that fails or returns no row ends leadership at once. So a thawed
  leader publishes at most the one message it was handing to its producer when it froze, plus
  what its producer had already buffered.
- Per-stream order of first occurrences: a stream's rows are appended in version order (the
  append of version n+1 needs version n committed), so their outbox ids increase with the
  version. A new leader reads from the oldest unsent row in id order, so it sends a stream's
  unsent events in order, after every event of that stream an earlier leader marked sent (those
  were acknowledged by the broker before the mark). A thawed leader's late message for version
  n of a stream comes from a batch it sent in id order through one idempotent producer, so
  versions < n of that stream were already written to the same partition before it (by that
  producer, or marked sent earlier). Either way the first occurrence of every version follows
  the first occurrences of the versions before it: a late message is at worst a duplicate,
  which consumers drop by event id (the inbox).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from prometheus_client import Gauge

from shared.eventstore import OUTBOX_CHANNEL
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.observability import EVENTS_PUBLISHED, OUTBOX_FAILED, RELAY_PUBLISH_SECONDS

log = logging.getLogger("tkm.outbox")

LEASE_S = 10.0  # how long a lease lasts without a renewal
RENEW_S = 3.0  # how often the leader renews it
STANDBY_POLL_S = 1.0  # how often a standby tries to take it
LEASE_MARGIN_S = 1.0  # the leader stops this long before the expiry by its own clock

# 1 on the instance holding the relay lease of its service database, 0 on standbys
RELAY_LEADER = Gauge("tkm_relay_leader", "1 while this instance holds the outbox relay lease",
                     ["service", "instance"])

# take the lease when it expired, or renew it when it is ours; a new holder (or ours again after
# an expiry) gets the next fencing token
_LEASE_SQL = """
INSERT INTO relay_lease AS l (service, holder, fencing_token, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (service) DO UPDATE
SET holder = $2, expires_at = now() + make_interval(secs => $3),
    fencing_token = CASE WHEN l.holder = $2 AND l.expires_at > now() THEN l.fencing_token
                         ELSE l.fencing_token + 1 END
WHERE l.expires_at <= now() OR l.holder = $2
RETURNING l.fencing_token
"""
# "this relay still holds the lease with this token": guards every write of the relay
_HOLDS = ("EXISTS (SELECT 1 FROM relay_lease WHERE service = $2 AND holder = $3 "
          "AND fencing_token = $4 AND expires_at > now())")


class OutboxRelay:
    # lease timings, per instance when set before run() (tests, `python -m shared.outbox`)
    lease_s, renew_s, standby_poll_s, lease_margin_s = (LEASE_S, RENEW_S, STANDBY_POLL_S,
                                                        LEASE_MARGIN_S)
    holder: str = ""
    _token: int | None = None
    _valid_until = 0.0  # time.monotonic() until which this relay may publish

    def __init__(self, dsn: str, bootstrap_servers: str, service: str, *, batch_size: int = 500,
                 poll_interval: float = 0.5, security: KafkaSecurity | None = None):
        self.dsn, self.bootstrap, self.service = dsn, bootstrap_servers, service
        # how the producer authenticates: the service's own principal unless given (fails fast)
        self.security = security or kafka_security(service=service)
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self.active = False
        self._wake = asyncio.Event()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024, request_timeout_ms=15000,
                                **self.security.producer_kwargs())

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; survives database and broker outages by reconnecting.
        Publishes only while holding the service's relay lease (kept by a task of its own)."""
        self.holder = self.holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(stop, done), name="outbox-relay-lease")
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                except Exception as exc:  # noqa: BLE001 - the relay outlives any outage or fault
                    self._set_active(False)
                    log.warning("outbox relay interrupted, reconnecting: %r", exc)
                    await _sleep_or_stop(stop, 1.0)
        finally:
            done.set()  # publishing has ended: the keeper hands the lease back and stops
            with contextlib.suppress(Exception):
                await asyncio.wait_for(keeper, 5)
            self._set_active(False)

    def holds_lease(self) -> bool:
        """True while this relay may publish: it holds the lease by its own clock."""
        return self._token is not None and time.monotonic() < self._valid_until

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            log.info("outbox relay %s %s (fencing token %s)", self.holder,
                     "leads" if active else "is on standby", self._token)
        self.active = active
        RELAY_LEADER.labels(self.service, self.holder).set(1 if active else 0)

    def _lose(self, why: str) -> None:
        if self._token is not None:
            log.warning("outbox relay %s lost the lease: %s", self.holder, why)
        self._token, self._valid_until = None, 0.0

    async def _keep_lease(self, stop: asyncio.Event, done: asyncio.Event) -> None:
        """Take the lease when it is free, renew it while held, on a connection of its own."""
        while not done.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5, command_timeout=self.renew_s)
                while not done.is_set():
                    asked = time.monotonic()
                    token = await conn.fetchval(_LEASE_SQL, self.service, self.holder,
                                                float(self.lease_s))
                    if token is None:
                        self._lose("another relay holds it")
                    else:
                        if token != self._token:
                            log.info("outbox relay %s took the lease (fencing token %d)",
                                     self.holder, token)
                        self._token = token
                        self._valid_until = asked + self.lease_s - self.lease_margin_s
                        self._wake.set()
                    await _sleep_or_stop(done, self.renew_s if self._token is not None
                                         else self.standby_poll_s)
                # shut down cleanly: hand the lease back so a standby need not wait it out
                if self._token is not None:
                    await conn.execute("UPDATE relay_lease SET expires_at = '-infinity' "
                                       "WHERE service = $1 AND holder = $2", self.service,
                                       self.holder)
                    log.info("outbox relay %s handed the lease back", self.holder)
                self._token, self._valid_until = None, 0.0
            except Exception as exc:  # noqa: BLE001 - a renewal that fails ends leadership
                self._lose(f"renewal failed: {exc!r}")
                await _sleep_or_stop(done, 1.0)
            finally:
                if conn is not None:
                    conn.terminate()

    async def _session(self, stop: asyncio.Event) -> None:
        # timeouts and server-side keepalives: a half-open connection must not hang the relay
        conn = await asyncpg.connect(self.dsn, timeout=10, command_timeout=60, server_settings={
            "tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3"})
        producer: AIOKafkaProducer | None = None
        try:
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            while not stop.is_set():
                if not self.holds_lease():
                    self._set_active(False)
                    if producer is not None:  # a standby holds no producer open
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = None
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.standby_poll_s)
                    continue
                self._set_active(True)
                if producer is None:
                    producer = self._new_producer()
                    await producer.start()
                # cleared before the batch reads, not after: a commit's wake-up arriving while
                # the batch runs (its rows committed after the read) keeps the wait below from
                # sleeping a whole poll interval with rows waiting
                self._wake.clear()
                try:
                    sent = await self._relay_batch(conn, producer)
                except KafkaError as exc:
                    # an idempotent producer can stay stuck after a broker blip (aiokafka #1017):
                    # start over with a new one; unsent rows are simply sent again
                    log.warning("publishing failed, recreating the producer: %r", exc)
                    await producer.stop()
                    producer = None
                    await _sleep_or_stop(stop, 1.0)
                    continue
                if sent < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            self._set_active(False)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _relay_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        token = self._token
        rows = await conn.fetch("SELECT id, topic, message_key, value FROM outbox "
                                "WHERE sent_at IS NULL AND failed_reason IS NULL "
                                "ORDER BY id LIMIT $1", self.batch_size)
        if not rows:  # the backlog gauges are measured by shared.health, not remembered here
            return 0
        futures, sent = [], []
        for r in rows:
            if not self.holds_lease() or self._token != token:
                break  # frozen past the lease, or it changed hands: not one more send
            try:
                futures.append(await producer.send(r["topic"], value=r["value"],
                                                   key=r["message_key"].encode()))
                sent.append(r["id"])
            except MessageSizeTooLargeError as exc:
                # no retry can ever deliver it; set it aside loudly rather than block the rest
                log.error("outbox row %s (%d bytes) refused by the broker: %r", r["id"],
                          len(r["value"]), exc)
                await conn.execute(f"UPDATE outbox SET failed_reason = $5 WHERE id = $1 "
                                   f"AND {_HOLDS}", r["id"], self.service, self.holder, token,
                                   f"{type(exc).__name__}: {exc}")
                OUTBOX_FAILED.labels(self.service).inc()
        with RELAY_PUBLISH_SECONDS.labels(self.service).time():
            await asyncio.gather(*futures)
        # fenced: only while this relay still holds the lease with the token it read under
        marked = int((await conn.execute(
            f"UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[]) AND {_HOLDS}",
            sent, self.service, self.holder, token)).split()[-1])
        EVENTS_PUBLISHED.labels(self.service).inc(marked)
        if marked < len(sent):
            self._lose(f"{len(sent) - marked} published rows could not be marked sent (fenced); "
                       "the leader sends them again")
            return 0
        return len(rows)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def main() -> None:
    """Run a relay on its own (used by the kill-mid-batch test and for operations)."""
    parser = argparse.ArgumentParser(description="TKM outbox relay")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--lease-seconds", type=float, default=LEASE_S)
    parser.add_argument("--renew-seconds", type=float, default=RENEW_S)
    parser.add_argument("--holder", default="", help="this instance's name in relay_lease")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    relay = OutboxRelay(args.dsn, args.bootstrap, args.service, batch_size=args.batch_size)
    relay.lease_s, relay.renew_s, relay.holder = args.lease_seconds, args.renew_seconds, args.holder
    asyncio.run(relay.run(asyncio.Event()))


if __name__ == "__main__":
    main()
