"""`make demo`: fresh Kafka and Postgres, the four services as processes, a programme year
through their HTTP APIs, and the results read back from them. Money goes maker -> checker
(four eyes: scripts/simulate.py); at its end the demo asks the audit trail, as an inspector,
for one province's funding decisions of the month with both actors (docs/audit.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from scripts import infra
from scripts import services as service_processes
from scripts.api_client import Api, ApiError
from scripts.results import collect, render
from scripts.scenario import build
from scripts.simulate import Options, Simulation, SimulationError, progress_bar
from shared.auth import Role
from shared.localtime import zone_of
from shared.regions import province as province_named

EXIT_OK, EXIT_SCENARIO, EXIT_SERVICES, EXIT_INFRA = 0, 1, 2, 3
# the demo's own infrastructure, wiped at each start: under TKM_INFRA_DIR (default .infra/)
DEMO_STATE = Path(os.environ.get("TKM_INFRA_DIR") or infra.ROOT / ".infra") / "demo"


def run_demo(*, seed: int = 2023, groups: int | None = None, json_out: Path | None = None,
             keep_running: bool = False, options: Options | None = None,
             instances: int = 1) -> int:
    console = Console(width=max(200, Console().width))  # the tables are wide
    options = options or Options()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # a demo of its own: fresh broker and databases, so its figures never mix with other runs
    infra.down(DEMO_STATE)
    shutil.rmtree(DEMO_STATE, ignore_errors=True)
    running = None
    try:
        with _phase(console, "starting Kafka and PostgreSQL"):
            t0 = time.perf_counter()
            try:
                # fixed ports when TKM_KAFKA_PORT / TKM_POSTGRES_PORT say so, else free ones
                endpoints, _ = infra.up(DEMO_STATE, _env_port("TKM_KAFKA_PORT"),
                                        _env_port("TKM_POSTGRES_PORT"))
            except (infra.InfraError, OSError) as exc:
                console.print(f"[red]infrastructure did not come up:[/red] {exc}")
                return EXIT_INFRA
            timings["infrastructure"] = round(time.perf_counter() - t0, 1)
        console.print(f"Kafka {infra.kafka_version()} at {endpoints.kafka_bootstrap}, "
                      f"PostgreSQL at {endpoints.postgres_url}")
        with _phase(console, "starting the four services"):
            t0 = time.perf_counter()
            ports = {n: _env_port(f"{n.upper()}_HTTP_PORT") or infra.free_port()
                     for n in service_processes.SERVICES}
            try:
                running = service_processes.start(endpoints, DEMO_STATE / "logs", ports=ports,
                                                  kafka_env=infra.kafka_client_env(DEMO_STATE),
                                                  instances=instances)
            except service_processes.ServiceStartError as exc:
                console.print(f"[red]a service did not come up:[/red] {exc}")
                return EXIT_SERVICES
            timings["services"] = round(time.perf_counter() - t0, 1)
        for name, url in running.urls.items():
            console.print(f"  {name:<12} {url}/docs   log: {running.logs[name]}")
        scenario = build(seed=seed, groups=groups)
        console.print(f"Scenario: year {scenario.year}, seed {seed}, "
                      f"{sum(s.tks_count for s in scenario.stages):,} TKS, "
                      f"{sum(s.group_count for s in scenario.stages):,} groups of "
                      f"{scenario.members_per_group}")
        try:
            # several instances: the simulator's requests go round-robin over them
            urls = running.instance_urls if instances > 1 else running.urls
            results, phases = asyncio.run(_simulate(urls, scenario, options,
                                                    endpoints.kafka_bootstrap, console,
                                                    _admin_client(DEMO_STATE)))
        except (SimulationError, ApiError) as exc:
            console.print(f"[red]the programme year failed:[/red] {exc}")
            return EXIT_SCENARIO
        timings.update(phases)
        timings["total"] = round(time.perf_counter() - started, 1)
        audit = results.pop("audit", None)
        render(results, timings, console)
        if audit:
            print_audit(console, audit)
            results["audit"] = audit
        # the programme console (issue 19): its figures checked against these tables, a demo
        # user signed in, screenshots of its pages; stopped with the services
        from services.console.demo import show as show_console
        show_console(console, DEMO_STATE, endpoints, running.urls, results,
                     keep_running=keep_running)
        if json_out:
            json_out.write_text(json.dumps({"results": results, "timings": timings,
                                            "options": asdict(options), "seed": seed},
                                           indent=2, default=str))
            console.print(f"results written to {json_out}")
        return EXIT_OK
    finally:
        if keep_running and running is not None:
            _print_kept(console, running)
        else:
            if running is not None:
                running.stop()
            infra.down(DEMO_STATE)


def _admin_client(state: Path) -> dict:
    """aiokafka security kwargs of the admin of the Kafka of `state` (the tallies read every
    contract topic)."""
    from shared.kafka_security import kafka_security

    env = infra.kafka_client_env(state)
    fields = {k.removeprefix("ADMIN_").lower(): v for k, v in env.items()
              if k.startswith(("ADMIN_KAFKA_", "KAFKA_")) or k == "TKM_KAFKA_ALLOW_PLAINTEXT"}
    return kafka_security(kafka_password=None, **fields).client_kwargs()


def _env_port(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{name}={value!r} is not a port number")
    return int(value)


@contextlib.contextmanager
def _phase(console: Console, what: str):
    """A spinner on a terminal; on a log (CI, a pipe) one line when the phase starts and one
    when it ends, so a long run shows where it is."""
    if console.is_terminal:
        with console.status(what):
            yield
        return
    t0 = time.perf_counter()
    console.print(f"{what} ...", highlight=False)
    yield
    console.print(f"{what}: done in {time.perf_counter() - t0:.1f}s", highlight=False)


def _print_kept(console: Console, running: service_processes.RunningServices) -> None:
    pids = {name if i == 0 else f"{name}.{i}": proc.pid
            for name, procs in running.instance_processes.items()
            for i, proc in enumerate(procs)}
    for server in ("kafka", "postgres"):
        with contextlib.suppress(OSError, ValueError):
            pids[server] = int((DEMO_STATE / f"{server}.pid").read_text().strip())
    console.print("still running (--keep-running): "
                  + ", ".join(f"{name} pid {pid}" for name, pid in pids.items()), highlight=False)
    services = " ".join(str(proc.pid) for procs in running.instance_processes.values()
                        for proc in procs)
    console.print(f"stop them with: kill {services} && TKM_INFRA_DIR={DEMO_STATE} "
                  "python -m scripts.infra down", highlight=False, soft_wrap=True)


async def _simulate(urls: dict, scenario, options: Options, bootstrap: str,
                    console: Console, client: dict | None = None) -> tuple[dict, dict[str, float]]:
    api = Api(urls)
    try:
        with progress_bar(console=console) as progress:
            run = await Simulation(api, scenario, options, progress).execute()
        t0 = time.perf_counter()
        results = await collect(api, scenario.year, bootstrap, client)
        run.phases["read back results"] = round(time.perf_counter() - t0, 1)
        results["audit"] = await audit_example(api, results)
        return results, run.phases
    finally:
        await api.close()


AUDITOR = "inspektur@itjen.kemnaker.go.id"
FUNDING_TRAIL = ("approvals.ApprovalRequested", "approvals.ApprovalGranted", "GroupFunded")


async def audit_example(api: Api, results: dict[str, Any], *,
                        now: datetime | None = None) -> dict[str, Any]:
    """The inspector's question of issue 18, asked of groups' audit trail with an auditor token:
    the funding decisions of one province (Papua Tengah when the year funded any there, else
    the province with the fewest) in this month, in its own time, and one of them followed
    from the maker's request to the checker's grant. Never fails the demo: an error is
    reported in the answer."""
    funded = [r for r in results.get("by_province", []) if r.get("groups_funded")]
    if not funded:
        return {"error": "no group was funded"}
    code = "94" if any(r["province_code"] == "94" for r in funded) else \
        min(funded, key=lambda r: (r["groups_funded"], r["province_code"]))["province_code"]
    zone = zone_of(code)
    local = (now or datetime.now(UTC)).astimezone(zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    window = {"province": code, "from": start.isoformat(), "to": end.isoformat()}
    auditor = api.person(AUDITOR, Role.AUDITOR)
    named = province_named(code)
    example: dict[str, Any] = {
        "province": f"{named.name if named else code} ({code})",
        "month": f"{start:%B %Y} {start.tzname()}",
        "query": "GET /audit?province={province}&type=GroupFunded&from={from}&to={to}".format(
            **window).replace("+", "%2B")}
    try:
        fundings = await auditor.get("groups", "/audit", type="GroupFunded", limit=1, **window)
        requests = await auditor.get("groups", "/audit", type="approvals.ApprovalRequested",
                                     limit=1, **window)
        example["funding_decisions"] = fundings["total"]
        example["requests_made"] = requests["total"]
        trail = []
        if requests["items"]:  # the oldest request of the month: a funding's, followed through
            first = requests["items"][0]
            target = _summary_field(first["summary"], "target")
            trail = (await auditor.get("groups", "/audit", stream=first["stream_id"]))["items"]
            if target:
                trail += (await auditor.get("groups", "/audit", stream=target,
                                            type="GroupFunded"))["items"]
        elif fundings["items"]:  # no four eyes: the funding alone, with its one actor
            trail = fundings["items"]
        example["rows"] = [_audit_line(r) for r in trail
                           if r["event_type"] in FUNDING_TRAIL][:4]
    except ApiError as exc:
        example["error"] = str(exc)[:200]
    return example


def _summary_field(summary: str, key: str) -> str | None:
    for part in summary.split():
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None


def _audit_line(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("amount", "tranche", "command_type", "request_id", "group_id", "disbursed_on")
    summary = " ".join(p for p in row["summary"].split() if p.partition("=")[0] in keep)
    who = "maker" if row["event_type"].endswith("Requested") else "checker" \
        if row["event_type"].endswith("Granted") else "actor"
    return {"recorded_at": row["recorded_at"], "event_type": row["event_type"],
            "who": who, "actor": f"{row['actor_role']}:{row['actor']}", "summary": summary}


def print_audit(console: Console, example: dict[str, Any]) -> None:
    """A few lines: the query, its count, one funding from request to grant."""
    console.print(f"Audit trail (as an auditor, docs/audit.md): funding decisions in "
                  f"{example.get('province')}, {example.get('month')}", highlight=False)
    console.print(f"  groups {example.get('query')}", highlight=False, soft_wrap=True)
    if "error" in example:
        console.print(f"  [yellow]not answered:[/yellow] {example['error']}", highlight=False)
        return
    console.print(f"  {example['funding_decisions']:,} GroupFunded rows, "
                  f"{example['requests_made']:,} four-eyes requests made; one of them:",
                  highlight=False)
    for r in example["rows"]:
        who = "" if r["who"] == "actor" else r["who"]
        console.print(f"  {r['recorded_at'][:19]}Z  {r['event_type']:<28} {who:<8}{r['actor']}  "
                      f"{r['summary']}", highlight=False, soft_wrap=True)
