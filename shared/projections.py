"""Rebuilding a service's own read models from its event store."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.aggregate import Projector
from shared.envelope import parse_payload
from shared.eventstore import envelope_from_row


async def rebuild(conn: asyncpg.Connection, projector: Projector, tables: Sequence[str], *,
                  batch_size: int = 2000) -> int:
    """Empty `tables` and replay every stored event through `projector`, all in one
    repeatable-read transaction: readers see the old read model until the new one commits, and
    the replay sees exactly the events committed when it began. Returns the events replayed."""
    replayed, position = 0, 0
    async with conn.transaction(isolation="repeatable_read"):
        # LOCK takes no snapshot: the replay's snapshot starts after every writer holding the
        # tables committed, so no event projected by one of them is wiped and not replayed
        await conn.execute("LOCK TABLE " + ", ".join(_quoted(t) for t in tables)
                           + " IN ACCESS EXCLUSIVE MODE")
        await conn.execute("TRUNCATE " + ", ".join(_quoted(t) for t in tables))
        while True:
            rows = await conn.fetch("SELECT * FROM events WHERE global_position > $1 "
                                    "ORDER BY global_position LIMIT $2", position, batch_size)
            if not rows:
                return replayed
            batch = [envelope_from_row(r) for r in rows]
            await projector(conn, [(env, parse_payload(env)) for env in batch])
            position, replayed = rows[-1]["global_position"], replayed + len(rows)


def _quoted(table: str) -> str:
    if not table.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {table!r}")
    return f'"{table}"'
