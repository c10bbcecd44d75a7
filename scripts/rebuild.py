"""`tkm rebuild <service>`: replay a service's read models into shadow tables and swap them in
while the service keeps running (shared.projections). Reads `<SERVICE>_DATABASE_URL` and
`KAFKA_BOOTSTRAP_SERVERS` (the topics are read for the read models fed by other services), and
reads them as the service itself (`<SERVICE>_KAFKA_*`, shared.kafka_security)."""

from __future__ import annotations

import asyncio
import importlib
import os

import asyncpg

from shared.kafka_security import kafka_security
from shared.projections import RebuildError, RebuildStats, rebuild_plan
from shared.settings import SERVICE_PORTS, settings_class

SERVICES = tuple(SERVICE_PORTS)


async def rebuild_service(service: str, database_url: str, bootstrap: str) -> RebuildStats:
    """Rebuild `service`'s read models in the database at `database_url`. Raises ValueError for
    an unknown service, RebuildError when the rebuild cannot give the live answer."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    spec = importlib.import_module(f"services.{service}.app").build_spec()
    if spec.rebuild is None:
        raise ValueError(f"{service} declares no read models to rebuild")
    conn = await asyncpg.connect(database_url)
    try:
        # the service's own principal: it may Read the topics it consumes, and the rebuild's
        # consumer joins no group (it assigns the partitions itself)
        return await rebuild_plan(conn, spec.rebuild, topics=spec.consumes, bootstrap=bootstrap,
                                  kafka_options=kafka_security(service=service).consumer_kwargs())
    finally:
        await conn.close()


def connection_of(service: str) -> tuple[str, str]:
    """(database URL, Kafka bootstrap) from the environment the service itself reads; only
    those two (a rebuild signs no tokens)."""
    fields = settings_class(service).model_fields
    database_url = os.environ.get(str(fields["database_url"].validation_alias), "")
    if not database_url:
        raise ValueError(f"{service.upper()}_DATABASE_URL is not set")
    bootstrap = os.environ.get(str(fields["kafka_bootstrap_servers"].validation_alias),
                               fields["kafka_bootstrap_servers"].default)
    return database_url, bootstrap


def report(service: str, stats: RebuildStats) -> str:
    plan = importlib.import_module(f"services.{service}.app").build_spec().rebuild
    assert plan is not None
    return (f"{service}: {stats.replayed:,} events replayed into {', '.join(plan.tables)} "
            f"({stats.own_events:,} own, {stats.consumed_events:,} consumed; "
            f"{stats.caught_up:,} caught up after the first pass, {stats.in_swap:,} in the swap); "
            f"replay {stats.replay_seconds:.2f}s without locks, swap {stats.swap_seconds * 1000:.0f} ms")


def run(service: str) -> tuple[int, str]:
    """(exit code, message) of `tkm rebuild <service>`."""
    try:
        database_url, bootstrap = connection_of(service) if service in SERVICES else ("", "")
        stats = asyncio.run(rebuild_service(service, database_url, bootstrap))
    except ValueError as exc:
        return 2, str(exc)
    except RebuildError as exc:
        return 1, f"{service}: rebuild abandoned, the live tables are untouched: {exc}"
    return 0, report(service, stats)

