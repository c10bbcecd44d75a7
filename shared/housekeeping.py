"""Pruning the kernel tables that would otherwise grow for ever: the outbox and the inbox.

Guarantees:
- An outbox row is deleted only once the broker acknowledged it (`sent_at` set) more than
  `outbox_retention_hours` ago. Unsent rows, and rows set aside because the broker refused them
  (`failed_reason`), are kept whatever their age. A sent row is only the relay's finished to-do
  item: the event itself stays in the event store and on its topic.
- An inbox row is deleted only when its event was applied or ignored more than
  `inbox_retention_days` ago. Dead-lettered rows (and any outcome this module does not know) are
  kept: replaying a dead letter re-claims its row.
- Rows go in batches of `housekeeping_batch_size`, each batch one statement in its own short
  transaction that skips rows another instance is deleting, so pruning never holds locks for
  long, never blocks the relay or the consumer, and every instance of a service may run it.

Why the inbox is kept so much longer than the outbox: the inbox row is what turns a redelivered
event into a no-op. The contract topics keep every event for ever, so a pruned event can come
back: not through a rebalance (that redelivers only the uncommitted tail, minutes at most), but
through a reset of the consumer group's offsets. Once its inbox row is gone, such a redelivery
applies the event a second time. The retention is therefore the furthest back an operator may
move a consumer group's offsets and call it a replay (30 days by default). An offset reset to a
point older than the inbox retention is not a replay but a rebuild: empty the consuming
service's database and consume the topics from the earliest offset (README, Operations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from shared.settings import ServiceSettings

if TYPE_CHECKING:
    from shared.service import ServiceContext

log = logging.getLogger("tkm.housekeeping")
ROWS_PRUNED = Counter("tkm_rows_pruned_total", "Kernel rows deleted by housekeeping",
                      ["service", "table"])

# the predicates repeat those of the partial indexes in shared.eventstore, so the planner uses
# them; the ids go through an array so each batch deletes by primary key, never by a scan (a
# generic plan does not know the LIMIT and would otherwise hash-join the whole table)
_PRUNE = {
    "outbox": "DELETE FROM outbox WHERE id = ANY(ARRAY(SELECT id FROM outbox "
              "WHERE sent_at < now() - $1::interval AND failed_reason IS NULL "
              "ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
    "inbox": "DELETE FROM inbox WHERE event_id = ANY(ARRAY(SELECT event_id FROM inbox "
             "WHERE processed_at < now() - $1::interval AND outcome IN ('applied', 'ignored') "
             "ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
}


async def prune(pool: asyncpg.Pool, settings: ServiceSettings,
                stop: asyncio.Event | None = None) -> dict[str, int]:
    """Delete what is past its retention, batch by batch, until a batch comes back short (or
    `stop` is set). Returns the rows deleted by table. Raises what the database raises; batches
    already deleted stay deleted."""
    ages = {"outbox": timedelta(hours=settings.outbox_retention_hours),
            "inbox": timedelta(days=settings.inbox_retention_days)}
    deleted = dict.fromkeys(_PRUNE, 0)
    for table, sql in _PRUNE.items():
        while stop is None or not stop.is_set():
            # outside a transaction block: the statement is its own transaction
            status = await pool.execute(sql, ages[table], settings.housekeeping_batch_size)
            count = int(status.split()[-1])
            deleted[table] += count
            if count < settings.housekeeping_batch_size:
                break
    return deleted


async def housekeeping(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """The background job every service runs: prune now, then every `housekeeping_interval_s`.
    A failed run (the database away) is logged and tried again at the next interval."""
    service = ctx.spec.name
    while not stop.is_set():
        try:
            deleted = await prune(ctx.pool, ctx.settings, stop)
        except Exception as exc:  # noqa: BLE001 - the next run tries again
            log.warning("housekeeping failed, will try again: %r", exc)
        else:
            for table, count in deleted.items():
                ROWS_PRUNED.labels(service, table).inc(count)
            if any(deleted.values()):
                log.info("pruned %d sent outbox rows and %d inbox rows", deleted["outbox"],
                         deleted["inbox"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ctx.settings.housekeeping_interval_s)
