"""What every benchmark path shares: the run's infrastructure, fresh databases, repeated figures."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from scripts import infra
from shared.eventstore import migrate


@dataclass
class BenchEnv:
    """The one Kafka and Postgres of a run, and how to reach them."""

    endpoints: infra.Endpoints
    state: Path
    kafka_env: dict[str, str]  # shared.kafka_security's variables for this broker
    smoke: bool = False
    log: Callable[[str], None] = print
    created: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.endpoints.kafka_bootstrap

    async def fresh_database(self, prefix: str, component: str | None = None,
                             migrations: Path | None = None) -> str:
        """A new empty database (kernel schema, plus `migrations` of `component` when given)."""
        name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.endpoints.database_url("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.created.append(name)
        url = self.endpoints.database_url(name)
        if component is not None:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn, component, migrations)
            finally:
                await conn.close()
        return url

    async def drop_databases(self) -> None:
        admin = await asyncpg.connect(self.endpoints.database_url("postgres"))
        try:
            for name in self.created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        self.created.clear()


def summary(values: list[float]) -> dict[str, Any]:
    """Median and spread of one figure's runs."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


async def repeat(times: int, measure: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    return summary([await measure() for _ in range(times)])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | str = "self") -> float:
    """The peak resident set size (VmHWM) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


class Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started
