"""The paths through running services: the four started as processes against the run's Kafka and
Postgres (scripts.services), as `make demo` runs them.

- HTTP single command: POST /groups/<id>/funding with `wrk` (compiled: the client is not the
  bottleneck) at c connections, beside GET /healthz (the ceiling of the HTTP stack alone), and
  the service process's CPU per call (/proc/<pid>/stat before and after). Each call carries an
  Idempotency-Key, as the project's clients send it. Four eyes (docs/four-eyes.md): a funding
  answered 202 pending is granted by a second admin as the connection's next call
  (POST /approvals/<id>/grant), so the calls are the maker's and the checker's, half each.
- End to end: commands offered at a fixed rate (open loop: a call leaves on time whether or not
  the earlier ones were answered): fundings at half the rate, each asked and then granted (two
  commands, four eyes); a separate poller
  (bench/poller.py, a process of its own) sees each group appear in mentoring's read model:
  the time from the grant's 2xx (the funding carried out) to that commit becoming visible.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import Progress

from bench.common import BenchEnv, cpu_seconds, summary
from scripts import services as service_processes
from scripts.api_client import Api
from scripts.approvals import CHECKER, pending_id
from scripts.scenario import GroupPlan, Scenario, build
from scripts.simulate import Options, Simulation, _chunks
from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY

HERE = Path(__file__).parent
ROOT = HERE.parent
FUNDED_ON = "2023-06-01"  # within the scenario's year (2023) and its budget year


class Services:
    def __init__(self, env: BenchEnv):
        self.env = env
        self.running: service_processes.RunningServices | None = None
        self.api: Api | None = None
        self._plans: list[GroupPlan] = []
        self._reserved: list[GroupPlan] = []  # the end-to-end runs' own, whatever HTTP takes

    async def __aenter__(self) -> Services:
        log_dir = self.env.state / "bench-logs"
        self.running = await asyncio.to_thread(
            service_processes.start, self.env.endpoints, log_dir, kafka_env=self.env.kafka_env,
            extra_env={"TKM_LOG_LEVEL": "WARNING"})
        self.api = Api(self.running.urls, concurrency=8)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.api is not None:
            await self.api.close()
        if self.running is not None:
            await asyncio.to_thread(self.running.stop)

    @property
    def groups_url(self) -> str:
        assert self.running is not None
        return self.running.urls["groups"]

    @property
    def groups_pid(self) -> int:
        assert self.running is not None
        return self.running.processes["groups"].pid

    def plan(self, groups: int, seed: int = 7) -> None:
        """The groups the runs may register (one scenario: its NIKs and names never clash)."""
        scenario = build(seed=seed, groups=groups)
        self._plans = [g for st in scenario.stages for r in st.regencies for g in r.groups]

    def reserve(self, count: int) -> None:
        """Set `count` planned groups aside for `approved_groups(..., reserved=True)`: the HTTP
        runs take groups at the rate the machine allows, and a fast machine must not leave the
        end-to-end runs without any."""
        if count:
            self._plans, self._reserved = self._plans[:-count], self._plans[-count:]

    @property
    def left(self) -> int:
        return len(self._plans)

    async def approved_groups(self, count: int, *, reserved: bool = False) -> list[str]:
        """`count` more groups (fewer when the plan runs out) registered from CSV and approved
        through the API, not yet funded; from the reserved ones with `reserved`."""
        assert self.api is not None
        if reserved:
            plans, self._reserved = self._reserved[:count], self._reserved[count:]
        else:
            plans, self._plans = self._plans[:count], self._plans[count:]
        if not plans:
            return []
        with Progress(disable=True, console=Console(quiet=True)) as progress:
            sim = Simulation(self.api, Scenario(2023, 7, [], 10), Options(), progress)
            task = progress.add_task("register", total=len(plans))
            await asyncio.gather(*(sim._import(chunk, task) for chunk in _chunks(plans, 250)))
            ids = [sim.run.group_ids[g.ref] for g in plans]
            for chunk in _chunks(ids, 500):
                await sim._bulk_ok("/groups/approvals", {"group_ids": chunk}, "approval")
        return ids


def _token(subject: str = "bench") -> str:
    return mint_token(DEV_SIGNING_KEY, subject, Role.ADMIN)


def wrk(url: str, connections: int, seconds: float, script: Path, *args: str) -> dict[str, Any]:
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is missing: make tools (scripts/install_wrk.sh)")
    threads = min(2, connections)
    cmd = [exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s",
           "--timeout", "30s", "-s", str(script), url]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    result = json.loads(line.removeprefix("WRK_JSON "))
    result["threads"] = threads
    return result


async def http(env: BenchEnv, services: Services, *, concurrencies: tuple[int, ...],
               seconds: float, repeats: int) -> list[dict[str, Any]]:
    token, pid, rows = _token(), services.groups_pid, []
    fastest = 50.0  # fundings/s seen so far: how many fresh groups the next run needs

    async def fund(c: int, first: bool) -> dict[str, Any]:
        nonlocal fastest
        # each request a fresh group, then the next tranche of each (3 per group): enough
        # groups for this run at the fastest rate seen (twice that at a new concurrency)
        expected = fastest * (2 if first else 1.3) * seconds + 4 * c
        # at least 4c: a group's next tranche leaves only long after its last one was answered
        ids = await services.approved_groups(max(math.ceil(expected / 3), 4 * c))
        if not ids:
            raise RuntimeError("no groups left to fund: raise --http-groups")
        ids_file = env.state / "bench-fund-groups.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        before = cpu_seconds(pid)
        result = await asyncio.to_thread(
            wrk, services.groups_url, c, seconds, HERE / "fund.lua", str(ids_file), "0", token,
            str(min(2, c)), uuid.uuid4().hex[:12], FUNDED_ON, _token(CHECKER))
        result["cpu_s"] = cpu_seconds(pid) - before
        result["groups"] = len(ids)
        fastest = max(fastest, result["requests"] / (result["duration_us"] / 1e6))
        return result

    async def healthz(c: int) -> dict[str, Any]:
        before = cpu_seconds(pid)
        result = await asyncio.to_thread(wrk, services.groups_url + "/healthz", c, seconds,
                                         HERE / "healthz.lua")
        result["cpu_s"] = cpu_seconds(pid) - before
        return result

    await healthz(2)  # warm-up
    await fund(2, True)
    for c in concurrencies:
        funds, checks = [], []
        for i in range(repeats):
            funds.append(await fund(c, i == 0))
            checks.append(await healthz(c))
        ok = [(r["requests"] - r["status_errors"]) / (r["duration_us"] / 1e6) for r in funds]
        refused = sum(r["status_errors"] for r in funds)
        granted = sum(r.get("grants", 0) for r in funds)
        cpu = [r["cpu_s"] * 1000 / max(1, r["requests"]) for r in funds]
        rate = summary(ok)
        ceiling = summary([r["requests"] / (r["duration_us"] / 1e6) for r in checks])
        env.log(f"HTTP fund-group c={c}: {rate['median']:,.0f}/s (2xx; {refused} refused), "
                f"healthz {ceiling['median']:,.0f}/s, service CPU {summary(cpu)['median']:.2f} "
                "ms per call")
        rows.append({"path": f"HTTP fund-group c={c}", "unit": "commands/s (2xx)",
                     "value": rate, "ceiling_name": "GET /healthz", "ceiling": ceiling,
                     "note": f"{refused} non-2xx; {granted:,} of the "
                             f"{sum(r['requests'] for r in funds):,} calls checkers' grants; "
                             f"p99 {_median_ms(funds, 'p99_us'):.0f} ms, "
                             f"healthz p99 {_median_ms(checks, 'p99_us'):.0f} ms"})
        rows.append({"path": f"HTTP service CPU per call c={c}", "unit": "ms CPU per call",
                     "value": summary(cpu), "ceiling_name": "GET /healthz",
                     "ceiling": summary([r["cpu_s"] * 1000 / max(1, r["requests"])
                                         for r in checks]),
                     "lower_is_better": True})
    return rows


def _median_ms(results: list[dict[str, Any]], key: str) -> float:
    return summary([r[key] / 1000 for r in results])["median"]


def e2e_fundings(rate: float, seconds: float) -> int:
    """Fundings a run of `seconds` at `rate` commands/s offers: each is two commands, the
    maker's ask and the checker's grant (four eyes)."""
    return max(1, int(rate / 2 * seconds))


async def end_to_end(env: BenchEnv, services: Services, *, rate: float, seconds: float,
                     repeats: int) -> list[dict[str, Any]]:
    """p50/p95/p99 of the time from a funding's 2xx (its grant's, with four eyes) to
    mentoring's commit of it, `rate` commands/s offered (fundings at half of it)."""
    per_run = e2e_fundings(rate, seconds)
    mentoring_dsn = env.endpoints.database_url("mentoring")
    mentoring = await asyncpg.connect(mentoring_dsn)
    token = _token()
    p50s, p95s, p99s, achieved, lost = [], [], [], [], 0
    refused: dict[str, int] = {}
    try:
        async with httpx.AsyncClient(base_url=services.groups_url, timeout=60, limits=httpx.Limits(
                max_connections=256), headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(repeats):
                batch = await services.approved_groups(per_run, reserved=True)
                if len(batch) < per_run:
                    raise RuntimeError("not enough groups left for the end-to-end runs")
                await _settled(mentoring)
                latencies, offered, missing, no = await _offer(client, mentoring_dsn, batch,
                                                               rate / 2, env.state)
                lost += missing
                for k, v in no.items():
                    refused[k] = refused.get(k, 0) + v
                q = _quantiles(latencies)
                p50s.append(q[50])
                p95s.append(q[95])
                p99s.append(q[99])
                achieved.append(offered * 2)  # fundings/s -> commands/s
    finally:
        await mentoring.close()
    env.log(f"end to end at {rate:.0f} commands/s offered: p50 {summary(p50s)['median']:.0f} ms, "
            f"p95 {summary(p95s)['median']:.0f} ms, p99 {summary(p99s)['median']:.0f} ms")
    note = (f"offered {summary(achieved)['median']:,.0f} commands/s (fundings at half of it, each "
            f"asked and granted); {lost} answered 2xx but not seen "
            f"downstream in 60 s; not 2xx: {refused or 'none'}")
    target = {"median": 100.0, "min": 100.0, "max": 100.0, "runs": [100.0]}
    rows: list[dict[str, Any]] = [
        {"path": f"end to end p{p} at {rate:.0f} commands/s", "unit": "ms (2xx -> downstream commit)",
         "value": summary(v), "lower_is_better": True, "note": note}
        for p, v in ((50, p50s), (95, p95s), (99, p99s))]
    rows[-1].update(ceiling_name="the issue's target, p99 100 ms", ceiling=target)
    return rows


async def _settled(mentoring: asyncpg.Connection, timeout: float = 180) -> None:
    """Wait until mentoring's consumer has nothing left of the earlier runs (its inbox stops
    growing), so a run's latencies are its own."""
    deadline = time.monotonic() + timeout
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = await mentoring.fetchval("SELECT count(*) FROM inbox")
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since >= 1.5:
            return
        await asyncio.sleep(0.1)


async def _offer(client: httpx.AsyncClient, mentoring_dsn: str, groups: list[str],
                 rate: float, state: Path) -> tuple[list[float], float, int, dict[str, int]]:
    answered: dict[str, float] = {}
    refused: dict[str, int] = {}
    checker = {"Authorization": f"Bearer {_token(CHECKER)}"}

    async def call(group_id: str) -> None:
        try:
            response = await client.post(
                f"/groups/{group_id}/funding",
                json={"tranche": 1, "amount": 1_000_000, "disbursed_on": FUNDED_ON,
                      "budget_year": 2023},
                headers={"Idempotency-Key": uuid.uuid4().hex})
            request_id = pending_id(response.json()) if response.status_code == 202 else None
            if request_id is not None:  # four eyes: carried out by the checker's grant
                response = await client.post(
                    f"/approvals/{request_id}/grant",
                    headers={**checker, "Idempotency-Key": uuid.uuid4().hex})
        except httpx.HTTPError as exc:  # an overloaded service may drop the connection
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
            return
        if response.status_code < 300:
            answered[group_id] = time.perf_counter()
        else:  # 503 when shedding load: counted, not timed
            refused[str(response.status_code)] = refused.get(str(response.status_code), 0) + 1

    ids_file = state / "bench-e2e-groups.txt"
    ids_file.write_text("\n".join(groups) + "\n")
    # the poller: a process of its own, told to finish (stdin closed) once every call is back
    poller = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.poller", mentoring_dsn, str(ids_file), "60", cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    calls: list[asyncio.Task] = []
    try:
        assert poller.stderr is not None and poller.stdin is not None
        if (await poller.stderr.readline()).strip() != b"ready":
            raise RuntimeError("the end-to-end poller did not start")
        began = time.perf_counter()
        for i, group_id in enumerate(groups):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            calls.append(asyncio.create_task(call(group_id)))
        offered = len(groups) / (time.perf_counter() - began)
        await asyncio.gather(*calls)
        poller.stdin.close()
        out, err = await poller.communicate()
        if poller.returncode != 0:
            raise RuntimeError(f"the end-to-end poller failed: {err.decode()[-1000:]}")
    finally:
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if poller.returncode is None:
            poller.kill()
            await poller.wait()
    seen: dict[str, float] = json.loads(out)
    # a commit seen before the client had read its 2xx counts as 0
    latencies = [max(0.0, seen[g] - answered[g]) * 1000 for g in answered if g in seen]
    if not latencies:
        raise RuntimeError(f"mentoring applied none of the fundings (refused: {refused})")
    return latencies, offered, len(answered) - len(latencies), refused


def _quantiles(values: list[float]) -> dict[int, float]:
    ordered = sorted(values)

    def at(p: int) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {50: at(50), 95: at(95), 99: at(99)}
