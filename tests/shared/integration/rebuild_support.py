"""Comparing a service's tables before and after `tkm rebuild` (shared.projections)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg


async def table_rows(conn: asyncpg.Connection, tables: Iterable[str]) -> dict[str, list[tuple]]:
    """Every row of each table, ordered by all its columns."""
    rows = {}
    for table in tables:
        width = await conn.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::text::regclass "
            "AND attnum > 0 AND NOT attisdropped", table)
        order = ", ".join(str(i) for i in range(1, width + 1))
        rows[table] = [tuple(r) for r in await conn.fetch(
            f'SELECT * FROM "{table}" ORDER BY {order}')]
    return rows


async def table_shapes(conn: asyncpg.Connection, tables: Iterable[str]) -> dict[str, list]:
    """Columns, indexes and constraints of each table, by name: a swapped-in copy must keep
    them (later migrations name them)."""
    shapes = {}
    for table in tables:
        columns = await conn.fetch(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = $1 ORDER BY ordinal_position", table)
        indexes = await conn.fetch(
            "SELECT indexname, regexp_replace(indexdef, ' ON \\S+ ', ' ON t ') FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = $1 ORDER BY 1", table)
        constraints = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = $1::text::regclass ORDER BY 1", table)
        shapes[table] = [tuple(r) for r in (*columns, *indexes, *constraints)]
    return shapes


async def leftovers(conn: asyncpg.Connection) -> list[str]:
    """Schemas a rebuild works in: none may remain after it."""
    return [r["nspname"] for r in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tkm_rebuild%'")]
