"""`tkm status`: every service's readiness, degraded reasons, consumer lag per topic, outbox
backlog and its oldest age, dead letters and relay leader, in one table.

Read from each service's /healthz, /readyz and /metrics (base URL `<SERVICE>_URL`, else
http://127.0.0.1:<SERVICE>_HTTP_PORT, default ports 8101-8104) and, with `--database`, from each
service database (`<SERVICE>_DATABASE_URL`): outbox, pending dead letters and the relay lease.
Healthy means answering, ready and not degraded; anything else makes the exit code 1."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import SERVICE_PORTS

SERVICES = tuple(SERVICE_PORTS)
EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1


@dataclass
class ServiceStatus:
    service: str
    url: str
    up: bool = False
    ready: bool = False
    degraded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it is not healthy, in words
    lag: dict[str, int] = field(default_factory=dict)  # by topic
    lag_total: int | None = None
    outbox_backlog: int | None = None
    outbox_oldest_age_s: float | None = None
    dlq_letters: int | None = None
    relay_leader: str | None = None  # the instance holding the relay lease, if known
    version: str | None = None

    @property
    def healthy(self) -> bool:
        return self.up and self.ready and not self.degraded

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def base_urls(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    urls = {}
    for name, port in SERVICE_PORTS.items():
        given = env.get(f"{name.upper()}_URL")
        urls[name] = (given or f"http://127.0.0.1:{env.get(f'{name.upper()}_HTTP_PORT') or port}"
                      ).rstrip("/")
    return urls


def database_urls(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {n: env[f"{n.upper()}_DATABASE_URL"] for n in SERVICES
            if env.get(f"{n.upper()}_DATABASE_URL")}


async def collect(urls: Mapping[str, str], databases: Mapping[str, str] | None = None, *,
                  timeout: float = 3.0) -> list[ServiceStatus]:
    async with httpx.AsyncClient(timeout=timeout) as client:
        statuses = await asyncio.gather(*(_probe(client, n, u) for n, u in urls.items()))
    for status in statuses:
        if databases and status.service in databases:
            await _from_database(status, databases[status.service], timeout)
    return list(statuses)


async def _probe(client: httpx.AsyncClient, service: str, url: str) -> ServiceStatus:
    status = ServiceStatus(service, url)
    try:
        health = await client.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        status.problems.append(f"down: {_one_line(exc) or type(exc).__name__} ({url})")
        return status
    status.up = health.status_code == 200
    if not status.up:
        status.problems.append(f"/healthz answered {health.status_code}")
    body = _json(health)
    status.degraded += [str(r) for r in body.get("degraded", []) or []]
    try:
        ready = await client.get(f"{url}/readyz")
        rbody = _json(ready)
        status.ready = ready.status_code == 200 and rbody.get("ready", True) is not False
        if not status.ready:
            failed = [k for k, v in (rbody.get("checks") or {}).items() if v is False]
            status.problems.append("not ready" + (f": {', '.join(failed)} failing" if failed
                                                  else f" ({ready.status_code})"))
        for reason in rbody.get("degraded", []) or []:
            if str(reason) not in status.degraded:
                status.degraded.append(str(reason))
        paused = (rbody.get("consumer") or {}).get("paused_partitions") or []
        if paused and "consumer paused" not in status.degraded:
            status.degraded.append("consumer paused")
        if rbody.get("status") == "degraded" and not status.degraded:
            status.degraded.append("degraded")
    except httpx.HTTPError as exc:
        status.problems.append(f"/readyz: {_one_line(exc)}")
    try:
        metrics = await client.get(f"{url}/metrics")
        if metrics.status_code == 200:
            _from_metrics(status, metrics.text)
    except (httpx.HTTPError, ValueError) as exc:
        status.problems.append(f"/metrics: {_one_line(exc)}")
    if status.degraded:
        status.problems.append("degraded: " + ", ".join(status.degraded))
    return status


def _from_metrics(status: ServiceStatus, text: str) -> None:
    lag_total = 0.0
    saw_lag_total = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if labels.get("service", status.service) != status.service:
                continue
            name = sample.name
            if name == "tkm_consumer_lag":
                topic = labels.get("topic", "?")
                status.lag[topic] = status.lag.get(topic, 0) + int(value)
            elif name == "tkm_consumer_lag_total":
                lag_total, saw_lag_total = lag_total + value, True
            elif name == "tkm_outbox_backlog":
                status.outbox_backlog = int(value)
            elif name == "tkm_outbox_oldest_unsent_age_seconds":
                status.outbox_oldest_age_s = round(value, 1)
            elif name == "tkm_dlq_letters":
                status.dlq_letters = int(value)
            elif name == "tkm_relay_leader" and value >= 1:
                status.relay_leader = labels.get("instance", "this instance")
            elif name == "tkm_degraded" and value >= 1:
                reason = labels.get("reason", "degraded")
                if reason not in status.degraded:
                    status.degraded.append(reason)
            elif name == "tkm_build_info":
                status.version = labels.get("version")
    if saw_lag_total:
        status.lag_total = int(lag_total)
    elif status.lag:
        status.lag_total = sum(status.lag.values())


async def _from_database(status: ServiceStatus, dsn: str, timeout: float) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        status.problems.append(f"database: {_one_line(exc)}")
        return
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age "
            "FROM outbox WHERE sent_at IS NULL AND failed_reason IS NULL")
        status.outbox_backlog = int(row["n"])
        status.outbox_oldest_age_s = round(float(row["age"] or 0), 1)
        status.dlq_letters = int(await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE outcome = 'dead-lettered'"))
        if await conn.fetchval("SELECT to_regclass('relay_lease') IS NOT NULL"):
            lease = await conn.fetchrow("SELECT holder FROM relay_lease WHERE service = $1 "
                                        "AND expires_at > now()", status.service)
            status.relay_leader = lease["holder"] if lease else None
            if lease is None and status.outbox_backlog:
                status.problems.append("no relay holds the lease and the outbox has a backlog")
    except Exception as exc:  # noqa: BLE001 - reported in the row
        status.problems.append(f"database: {_one_line(exc)}")
    finally:
        conn.terminate()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def render(statuses: list[ServiceStatus], *, as_json: bool = False, plain: bool = False) -> str:
    if as_json:
        return json.dumps({"healthy": all(s.healthy for s in statuses),
                           "services": [s.as_dict() for s in statuses]}, indent=2)
    headers = ("service", "state", "ready", "degraded", "lag by topic", "outbox", "oldest",
               "dlq", "relay leader", "why")
    rows = [_row(s) for s in statuses]
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(line.rstrip() for line in lines)
    table = Table(title="TKM services")
    for h in headers:
        table.add_column(h, overflow="fold")
    for status, row in zip(statuses, rows, strict=True):
        table.add_row(*row, style=None if status.healthy else "red")
    console = Console(width=200, force_terminal=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip()


def _row(s: ServiceStatus) -> tuple[str, ...]:
    state = "healthy" if s.healthy else ("down" if not s.up else
                                        "not ready" if not s.ready else "degraded")
    lag = ", ".join(f"{t}={n}" for t, n in sorted(s.lag.items())) or (
        "-" if s.lag_total is None else str(s.lag_total))
    return (s.service, state, "yes" if s.ready else "no", ", ".join(s.degraded) or "-", lag,
            "-" if s.outbox_backlog is None else str(s.outbox_backlog),
            "-" if s.outbox_oldest_age_s is None else f"{s.outbox_oldest_age_s:g}s",
            "-" if s.dlq_letters is None else str(s.dlq_letters), s.relay_leader or "-",
            "; ".join(s.problems) or "-")


def run(*, services: list[str] | None = None, as_json: bool = False, database: bool = False,
        plain: bool = False, timeout: float = 3.0) -> tuple[int, str]:
    urls = base_urls()
    if services:
        unknown = sorted(set(services) - set(urls))
        if unknown:
            raise ValueError(f"unknown service {', '.join(unknown)}: "
                             f"expected {', '.join(SERVICES)}")
        urls = {n: u for n, u in urls.items() if n in services}
    statuses = asyncio.run(collect(urls, database_urls() if database else None,
                                   timeout=timeout))
    code = EXIT_HEALTHY if all(s.healthy for s in statuses) else EXIT_UNHEALTHY
    return code, render(statuses, as_json=as_json, plain=plain)
