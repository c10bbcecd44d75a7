"""The end-to-end poller, a process of its own (so the load generator's work never delays it):
polls mentoring's read model every 5 ms for the groups listed in a file and prints, as JSON,
when each was first seen (time.perf_counter(), CLOCK_MONOTONIC: comparable across processes on
Linux). Stops when every group was seen, or `idle` seconds after stdin closes.

    python -m bench.poller <mentoring database URL> <file of group ids> [idle seconds]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg


async def poll(dsn: str, ids: list[str], idle: float) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stdin_closed() -> None:  # nothing is ever written: readable means end of file
        loop.remove_reader(sys.stdin.fileno())
        closed.set()

    loop.add_reader(sys.stdin.fileno(), stdin_closed)
    seen: dict[str, float] = {}
    pending = set(ids)
    deadline: float | None = None
    try:
        print("ready", file=sys.stderr, flush=True)
        while pending:
            rows = await conn.fetch(
                "SELECT group_id FROM mentored_groups WHERE group_id = ANY($1::text[])",
                list(pending))
            now = time.perf_counter()
            for r in rows:
                seen[r["group_id"]] = now
                pending.discard(r["group_id"])
            if closed.is_set():
                deadline = deadline or now + idle
                if now > deadline:
                    break
            await asyncio.sleep(0.005)
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await conn.close()
    return seen


def main() -> None:
    dsn, path = sys.argv[1], sys.argv[2]
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    ids = [line for line in open(path).read().splitlines() if line]
    print(json.dumps(asyncio.run(poll(dsn, ids, idle))))


if __name__ == "__main__":
    main()
