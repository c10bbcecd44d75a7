"""The console's database: connection pool and schema."""

from __future__ import annotations

from pathlib import Path

import asyncpg

SCHEMA = Path(__file__).with_name("schema.sql")


async def connect(url: str, *, max_size: int = 8) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
    async with pool.acquire() as conn:
        # several console processes may start at once: one migrates at a time
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(190019)")
            await conn.execute(SCHEMA.read_text())
    return pool
