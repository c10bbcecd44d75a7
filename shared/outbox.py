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
- One active relay per service database: a session advisory lock; other instances wait on standby.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from shared.eventstore import OUTBOX_CHANNEL
from shared.observability import EVENTS_PUBLISHED, OUTBOX_BACKLOG, OUTBOX_FAILED

log = logging.getLogger("tkm.outbox")


class OutboxRelay:
    def __init__(self, dsn: str, bootstrap_servers: str, service: str, *, batch_size: int = 500,
                 poll_interval: float = 0.5):
        self.dsn, self.bootstrap, self.service = dsn, bootstrap_servers, service
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self.active = False
        self._wake = asyncio.Event()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024, request_timeout_ms=15000)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; survives database and broker outages by reconnecting."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as exc:  # noqa: BLE001 - the relay outlives any outage or driver fault
                self.active = False
                log.warning("outbox relay interrupted, reconnecting: %r", exc)
                await _sleep_or_stop(stop, 1.0)

    async def _session(self, stop: asyncio.Event) -> None:
        # timeouts and server-side keepalives: a half-open connection must not hang the relay
        # while its session still holds the relay lock that a standby waits for
        conn = await asyncpg.connect(self.dsn, timeout=10, command_timeout=60, server_settings={
            "tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3"})
        producer: AIOKafkaProducer | None = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('tkm-outbox-relay'))"):
                await _sleep_or_stop(stop, 2.0)
                if stop.is_set():
                    return
            self.active = True
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            while not stop.is_set():
                if producer is None:
                    producer = self._new_producer()
                    await producer.start()
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
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            self.active = False
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _relay_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch("SELECT id, topic, message_key, value FROM outbox "
                                "WHERE sent_at IS NULL AND failed_reason IS NULL "
                                "ORDER BY id LIMIT $1", self.batch_size)
        if not rows:
            OUTBOX_BACKLOG.labels(self.service).set(0)
            return 0
        futures, sent = [], []
        for r in rows:
            try:
                futures.append(await producer.send(r["topic"], value=r["value"],
                                                   key=r["message_key"].encode()))
                sent.append(r["id"])
            except MessageSizeTooLargeError as exc:
                # no retry can ever deliver it; set it aside loudly rather than block the rest
                log.error("outbox row %s (%d bytes) refused by the broker: %r", r["id"],
                          len(r["value"]), exc)
                await conn.execute("UPDATE outbox SET failed_reason = $2 WHERE id = $1",
                                   r["id"], f"{type(exc).__name__}: {exc}")
                OUTBOX_FAILED.labels(self.service).inc()
        await asyncio.gather(*futures)
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", sent)
        EVENTS_PUBLISHED.labels(self.service).inc(len(sent))
        if len(rows) == self.batch_size:
            OUTBOX_BACKLOG.labels(self.service).set(await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_reason IS NULL"))
        else:
            OUTBOX_BACKLOG.labels(self.service).set(0)
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
    args = parser.parse_args()
    relay = OutboxRelay(args.dsn, args.bootstrap, args.service, batch_size=args.batch_size)
    asyncio.run(relay.run(asyncio.Event()))


if __name__ == "__main__":
    main()
