"""Personal data as a person might type it into a free-text field, and how to find it in what a
topic holds: a 16-digit NIK, an Indonesian mobile number (+62 / 62 / 0, then 8...), an e-mail."""

from __future__ import annotations

import re

import asyncpg

NIK = "3201014506990001"
PHONE = "+6281234567890"
LOCAL_PHONE = "081298765432"
EMAIL = "siti.aminah@example.id"
TYPED = f"Siti {NIK} {LOCAL_PHONE} {PHONE} {EMAIL}"
PATTERNS = (re.compile(r"(?<![0-9A-Za-z])\d{16}(?![0-9A-Za-z])"),
            re.compile(r"(?<![0-9A-Za-z])(?:\+62|62|0)\s?8\d{7,11}(?![0-9A-Za-z])"),
            re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"))


def personal_data_in(text: str) -> list[str]:
    return [m.group(0) for pattern in PATTERNS for m in pattern.finditer(text)]


async def database_text(conn: asyncpg.Connection) -> str:
    """Every value of every column of every table (events' payloads, read models, the rule
    table, stored answers, keys), as text: what a plaintext search of the database would see."""
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
    tables: dict[str, list[str]] = {}
    for c in columns:
        expr = (f"encode(\"{c['column_name']}\", 'escape')" if c["data_type"] == "bytea"
                else f"\"{c['column_name']}\"::text")
        tables.setdefault(c["table_name"], []).append(f"coalesce({expr}, '')")
    parts = []
    for table, exprs in tables.items():
        parts.append(await conn.fetchval(
            f"SELECT coalesce(string_agg(concat_ws(' ', {', '.join(exprs)}), E'\\n'), '') "
            f"FROM \"{table}\""))
    return "\n".join(parts)
