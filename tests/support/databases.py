"""Fresh databases on the session's Postgres server, so tests never share state."""

from __future__ import annotations

import uuid

import asyncpg


async def create_database(infra, prefix: str = "t") -> str:
    """A new, empty database named `<prefix>_<random>`; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.database_url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return infra.database_url(name)


async def drop_database(infra, url: str) -> None:
    conn = await asyncpg.connect(infra.database_url("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()
