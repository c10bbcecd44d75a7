"""`make faults` (`tkm faults`): the project's own fault suite.

Real processes on the real broker and Postgres: fresh infrastructure of its own (under
TKM_INFRA_DIR, default .infra/, in `faults/`), the four services, and a seeded workload through
their HTTP APIs (a slice of a programme year, scripts/simulate.py, plus a steady trickle of
groups registered, approved and funded: the admin asks, a second admin grants, four eyes)
while faults are injected one after the other:

- `kill`: kill -9 of a service (an instance, with --instances 2) at a random moment, restarted;
- `mid-batch`: kill -9 of groups while a bulk request (CSV import, fundings) is in flight;
- `broker`: kill -9 of the broker (with --brokers 3: one broker, the partition leaders' broker,
  a rolling restart of all three), restarted on its port;
- `postgres`: kill -9 of the postmaster and every backend, restarted (crash recovery);
- `consumer-pause`: SIGSTOP of a consumer beyond its session timeout, then SIGCONT;
- `relay-freeze`: SIGSTOP of the process holding a service's relay lease; another relay (the
  other instance, or with one instance a stand-by relay process) must take over.

Every command carries one Idempotency-Key for all its attempts, so a retried command is never
applied twice. Per fault the table shows the client-visible errors (answers >= 500, refusals
while a killed request's claim waits, connection errors and timeouts, seen by the workload from
the fault until caught up) and the recovery time: to every instance ready again, and to caught
up (the outbox rows written before "ready" sent, then every consumer group at the topics' ends
of that moment). Then the conservation checks, each pass or fail with its figures; the exit
code is 1 if any fails (or a fault did not recover), 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import inspect
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from scripts import infra
from scripts import services as service_processes
from scripts.api_client import Api, ApiError
from scripts.approvals import carried_out_bulk, checker_of, grant_pending
from shared import regions
from shared.csv_export import safe_cell
from shared.nik import random_valid_nik
from shared.topics import CONTRACT_TOPICS, dead_letter_topic

SERVICES = service_processes.SERVICES
# the consumers: which contract topics each service applies (services/<name>/app.py)
CONSUMES = {"recruitment": ("tkm.evaluation.v1",), "groups": (),
            "mentoring": ("tkm.recruitment.v1", "tkm.groups.v1"),
            "evaluation": ("tkm.recruitment.v1", "tkm.groups.v1", "tkm.mentoring.v1")}
EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
SESSION_TIMEOUT_S = 10  # aiokafka's default session.timeout.ms, which the services keep
# a claim of a request killed mid-flight is taken over by its retry after this lease (the
# services' default is 120 s; a fault suite waiting that long per kill would run for hours)
IDEMPOTENCY_LEASE_S = 10
FUNDING = 20_000_000
YEAR = 2023
_FIRST = ("Siti", "Budi", "Dewi", "Agus", "Rina", "Andi", "Sri", "Eko", "Nur", "Wahyu")
_LAST = ("Santoso", "Wijaya", "Lestari", "Saputra", "Hidayat", "Pratama", "Sari", "Nugroho")


# ---------------------------------------------------------------- results


@dataclass
class FaultResult:
    fault: str
    target: str
    client_errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    ready_s: float | None = None  # from the fault to every instance ready again
    caught_up_s: float | None = None  # from the fault to caught up
    note: str = ""
    recovered: bool = False


@dataclass
class Check:
    name: str
    passed: bool
    figures: str


# ---------------------------------------------------------------- the client


class CountingApi(Api):
    """scripts.api_client.Api that retries for as long as a fault lasts (`retry_for` seconds),
    with the same Idempotency-Key on every attempt, round-robin over a service's instances, and
    records every failed attempt (time, service, kind): the client-visible errors."""

    def __init__(self, urls: Mapping[str, list[str]], *, retry_for: float = 240,
                 timeout: float = 60, concurrency: int = 8):
        super().__init__({n: u[0] for n, u in urls.items()}, concurrency=concurrency,
                         timeout=timeout)
        self.instances = {n: list(u) for n, u in urls.items()}
        self.retry_for = retry_for
        self.errors: list[tuple[float, str, str]] = []
        self._lost = [0]  # shared with this client as another person (its checker)
        self._turn: Counter = Counter()
        self._watched: dict[int, asyncio.Event] = {}  # id(body) -> set when it is sent
        self.sent_to: dict[int, str] = {}  # id(body) -> the URL it was sent to last

    @property
    def answers_lost(self) -> int:
        return self._lost[0]

    def watch(self, body: Any) -> asyncio.Event:
        """An event set when a request with this very body (object) is sent."""
        return self._watched.setdefault(id(body), asyncio.Event())

    def _url(self, service: str) -> str:
        urls = self.instances[service]
        self._turn[service] += 1
        return urls[self._turn[service] % len(urls)]

    def errors_between(self, start: float, end: float) -> Counter:
        return Counter(kind for t, _, kind in self.errors if start <= t <= end)

    async def _call(self, method: str, service: str, path: str, *, ok: tuple[int, ...] = (),
                    **kwargs: Any) -> Any:
        if method != "GET":
            kwargs["headers"] = {**(kwargs.get("headers") or {}),
                                 "Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        async with self.gate:
            while True:
                attempt += 1
                url = self._url(service) + path
                body = kwargs.get("json") if kwargs.get("json") is not None else \
                    kwargs.get("content")
                if id(body) in self._watched:
                    self.sent_to[id(body)] = url
                    self._watched[id(body)].set()
                try:
                    response = await self.client.request(method, url, **kwargs)
                except httpx.TransportError as exc:
                    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
                    self.errors.append((time.monotonic(), service, kind))
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(min(2.0, 0.25 * attempt))
                    continue
                self.calls += 1
                status = response.status_code
                if status >= 500 or _in_progress(response):
                    self.errors.append((time.monotonic(), service,
                                        "in progress (409)" if status == 409 else f"{status}"))
                    if time.monotonic() <= deadline:
                        await asyncio.sleep(min(2.0, 0.25 * attempt))
                        continue
                body = _body(response)
                if status == 409 and "carried out" in response.text:
                    # committed, but the process died before its answer was stored
                    self._lost[0] += 1
                    self.errors.append((time.monotonic(), service, "answer lost (409)"))
                    raise AnswerLost(method, url, status, body)
                if status >= 400 and status not in ok:
                    raise ApiError(method, url, status, body)
                return body


class AnswerLost(ApiError):
    """409: the command was carried out (its transaction committed), but the process died
    before its answer was stored (shared.idempotency): applied once, its answer is gone."""


def _in_progress(response: httpx.Response) -> bool:
    return response.status_code == 409 and "still in progress" in response.text


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


# ---------------------------------------------------------------- the processes


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (from /proc: the backends of a postmaster)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


class Fleet:
    """The service processes: instance `i` of a service can be killed, restarted, frozen and
    thawed. Uses scripts.services' instances when it has them (`start(..., instances=N)`),
    else runs the one instance per service of `start` and restarts it with the same
    environment."""

    def __init__(self, endpoints: infra.Endpoints, state: Path, instances: int,
                 extra_env: dict[str, str]):
        self.endpoints, self.state, self.instances = endpoints, state, instances
        self.log_dir = state / "logs"
        self.kafka_env = infra.kafka_client_env(state)
        self.extra_env = extra_env
        self.multi = "instances" in inspect.signature(service_processes.start).parameters
        if instances > 1 and not self.multi:
            raise RuntimeError("--instances 2 needs scripts.services.start(..., instances=N)")
        kwargs = {"instances": instances} if self.multi else {}
        self.running = service_processes.start(endpoints, self.log_dir, kafka_env=self.kafka_env,
                                               extra_env=extra_env, timeout=180, **kwargs)

    def urls(self) -> dict[str, list[str]]:
        found = getattr(self.running, "instance_urls", None) or {}
        return {n: list(found.get(n) or [self.running.urls[n]]) for n in SERVICES}

    def process(self, name: str, i: int = 0) -> subprocess.Popen:
        procs = getattr(self.running, "instance_processes", None)
        if procs and name in procs:
            return procs[name][i]
        return self.running.processes[name]

    def pid(self, name: str, i: int = 0) -> int:
        return self.process(name, i).pid

    def kill(self, name: str, i: int = 0) -> None:
        if hasattr(self.running, "kill_instance"):
            self.running.kill_instance(name, i)
        else:
            self.running.kill(name)

    def restart(self, name: str, i: int = 0, timeout: float = 240) -> None:
        """Start instance `i` of `name` again; returns once it answers /readyz (or raises
        ServiceStartError)."""
        if hasattr(self.running, "start_instance"):
            self.running.start_instance(name, i, timeout=timeout)
            return
        env = {"TKM_ENV": "dev", **os.environ, **self.endpoints.service_env(), **self.kafka_env,
               "TKM_HTTP_HOST": "127.0.0.1", **self.extra_env, "PYTHONPATH": str(infra.ROOT)}
        env[f"{name.upper()}_HTTP_PORT"] = self.running.urls[name].rsplit(":", 1)[1]
        with self.running.logs[name].open("ab") as out:
            self.running.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=service_processes.own_kafka_env(env, name), cwd=infra.ROOT, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def freeze(self, name: str, i: int = 0) -> None:
        if hasattr(self.running, "freeze_instance"):
            self.running.freeze_instance(name, i)
        else:
            os.kill(self.pid(name, i), signal.SIGSTOP)

    def thaw(self, name: str, i: int = 0) -> None:
        if hasattr(self.running, "thaw_instance"):
            self.running.thaw_instance(name, i)
        else:
            os.kill(self.pid(name, i), signal.SIGCONT)

    def who(self, pid: int) -> tuple[str, int] | None:
        for name in SERVICES:
            for i in range(self.instances):
                if self.pid(name, i) == pid:
                    return name, i
        return None

    def stop(self) -> None:
        for name in SERVICES:
            for i in range(self.instances):
                with contextlib.suppress(Exception):
                    self.thaw(name, i)
        self.running.stop()


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    seed: int = 2023
    brokers: int = 1
    instances: int = 1
    groups: int = 120  # the programme year's size (scaled 2023 intake)
    kills: int = 12
    faults: tuple[str, ...] = ("kill", "mid-batch", "broker", "postgres", "consumer-pause",
                               "relay-freeze")
    broker_down_s: float = 15
    pause_s: float = SESSION_TIMEOUT_S + 8
    gap_s: tuple[float, float] = (2.0, 8.0)  # quiet time before each fault, seeded
    recovery_timeout_s: float = 240
    state: Path | None = None
    tick_s: float = 0.6  # the trickle: one group registered, approved and funded per tick
    mid_batch: tuple[str, ...] = ("/groups/imports", "/groups/fundings")

    @classmethod
    def short(cls, **kw: Any) -> Options:
        return cls(groups=12, kills=3, faults=("kill", "mid-batch"), gap_s=(0.5, 2.0),
                   tick_s=0.4, mid_batch=("/groups/fundings",), **kw)


class Suite:
    def __init__(self, opts: Options, console: Console):
        self.opts, self.console = opts, console
        self.rng = random.Random(opts.seed)
        self.state = opts.state or Path(os.environ.get("TKM_INFRA_DIR")
                                        or infra.ROOT / ".infra") / "faults"
        self.results: list[FaultResult] = []
        self.registered: dict[str, str] = {}  # group id -> how (trickle, mid-batch)
        self.funded: set[str] = set()
        self.trickle_failures: list[str] = []
        self.sim_run = None
        self.sim_error: str | None = None
        self.sim_stopped: str | None = None
        self.checker: CountingApi | None = None  # the second admin: grants what was asked
        self.faults_begun, self.faults_planned = 0, 1
        self._used_niks: set[str] = set()
        self._group_no = 0

    # ------------------------------------------------------------ set-up

    def setup(self) -> None:
        infra.down(self.state)
        shutil.rmtree(self.state, ignore_errors=True)
        ports = {}
        for key in ("kafka", "postgres"):
            value = os.environ.get(f"TKM_{key.upper()}_PORT")
            ports[key] = int(value) if value else None
        kwargs = {}
        if self.opts.brokers > 1:
            if "brokers" not in inspect.signature(infra.up).parameters:
                raise RuntimeError("--brokers 3 needs scripts.infra.up(..., brokers=3)")
            kwargs["brokers"] = self.opts.brokers
        self.endpoints, _ = infra.up(self.state, ports["kafka"], ports["postgres"], **kwargs)
        self.admin = _admin_client(self.state)
        self.fleet = Fleet(self.endpoints, self.state, self.opts.instances, {
            "TKM_IDEMPOTENCY_LEASE_S": str(IDEMPOTENCY_LEASE_S), "TKM_LOG_LEVEL": "WARNING"})
        self.databases = {n: self.endpoints.database_url(n) for n in SERVICES}

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.fleet.stop()
        infra.down(self.state)

    # ------------------------------------------------------------ workload

    async def simulate(self, api: CountingApi) -> None:
        from scripts.scenario import build
        from scripts.simulate import Options as SimOptions
        from scripts.simulate import Simulation, progress_bar

        scenario = build(seed=self.opts.seed, groups=self.opts.groups)
        self.scenario_provinces = {r.province_code for s in scenario.stages
                                   for r in s.regencies}
        sim = Simulation(api, scenario, SimOptions(resignations=1, batch=200),
                         progress_bar(console=Console(file=sys.stderr, force_terminal=False)))
        self.sim_run = sim.run
        # the year paced over the fault schedule: each phase starts once its share of the
        # faults has begun, so faults hit every phase, not only the first minute
        phases = ("recruit", "register_and_fund_groups", "assign_mentors", "report_the_year",
                  "account_for_funds", "evaluate")
        for k, phase in enumerate(phases):
            setattr(sim, phase, self._paced(getattr(sim, phase), k / len(phases)))
        try:
            await sim.execute()
        except AnswerLost as exc:
            # the one answer a kill may take for good (shared.idempotency): the year stops
            # there, conservation is still checked on what was done
            self.sim_stopped = f"stopped after {list(sim.run.phases)} by a lost answer: " \
                               f"{str(exc)[:120]}"
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            self.sim_error = f"{type(exc).__name__}: {str(exc)[:300]}"

    def _paced(self, step: Callable[[], Awaitable[None]],
               share: float) -> Callable[[], Awaitable[None]]:
        async def paced() -> None:
            while self.faults_begun < share * self.faults_planned:
                await asyncio.sleep(0.5)
            await step()

        return paced

    def _trickle_regencies(self) -> list[str]:
        used = getattr(self, "scenario_provinces", set())
        free = [r.code for r in regions.regencies() if r.province_code not in used]
        return random.Random(self.opts.seed + 1).sample(free, 6)

    def _group_csv(self, regencies: list[str], n: int, rng: random.Random) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group_ref", "year", "stage", "regency_code", "business_type",
                         "group_name", "member_nik", "member_name", "member_phone"])
        for _ in range(n):
            self._group_no += 1
            regency = rng.choice(regencies)
            ref = f"F{self.opts.seed}-{self._group_no:05d}"
            for _ in range(10):
                nik = self._nik(rng, regency)
                writer.writerow([safe_cell(c) for c in (
                    ref, YEAR, "pemula", regency, "catering", f"KUB Uji {regency}-{self._group_no}",
                    nik, f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                    f"0812{rng.randint(10**7, 10**8 - 1)}")])
        return out.getvalue().encode()

    def _nik(self, rng: random.Random, regency: str) -> str:
        while True:
            born = date(rng.randint(1975, 2004), rng.randint(1, 12), rng.randint(1, 28))
            nik = random_valid_nik(rng, regency_code=regency, sex=rng.choice("FM"),
                                   birth_date=born)
            if nik not in self._used_niks:
                self._used_niks.add(nik)
                return nik

    async def register_and_fund(self, api: CountingApi, n: int, rng: random.Random,
                                how: str) -> list[str]:
        """n new groups imported, approved and funded (asked, then granted by the checker);
        returns the funded ids. A step whose answer was lost after it committed (AnswerLost)
        counts as done: approving or asking to fund the groups it names was applied once,
        and the checker grants the requests it made (found by their groups)."""
        report = await api.post("groups", "/groups/imports",
                                content=self._group_csv(self._regencies, n, rng),
                                content_type="text/csv")
        ids = [r["group_id"] for r in report["results"] if r.get("group_id")]
        for gid in ids:
            self.registered[gid] = how
        try:
            approved = await api.post("groups", "/groups/approvals", {"group_ids": ids})
            ok = [r["group_id"] for r in approved["results"] if r["status"] < 300]
        except AnswerLost:
            ok = ids
        try:
            funded = await api.post("groups", "/groups/fundings", {"items": [
                {"group_id": gid, "tranche": 1, "amount": FUNDING,
                 "disbursed_on": f"{YEAR}-08-01", "budget_year": YEAR} for gid in ok]})
            funded = await carried_out_bulk(self._checker(api), "groups", funded)
            done = [r["group_id"] for r in funded["results"] if r["status"] < 300]
        except AnswerLost:
            await self._grant_lost(api, ok)
            done = ok
        self.funded.update(done)
        return done

    def _checker(self, api: CountingApi) -> CountingApi:
        if self.checker is None:
            self.checker = checker_of(api)  # type: ignore[assignment]
        assert self.checker is not None
        return self.checker

    async def _grant_lost(self, api: CountingApi, group_ids: list[str]) -> None:
        """The fundings of a call whose answer was lost after it committed (at least in part:
        a bulk asks item by item) carried out: the requests it made granted, then every group
        asked again under a new key (one funded meanwhile is refused, 409, and stays funded
        once; one the cut call never reached is asked now) and its request granted."""
        checker = self._checker(api)
        try:
            await grant_pending(checker, "groups", command_type="fund",
                                targets={f"group-{g}" for g in group_ids})
            again = await api.post("groups", "/groups/fundings", {"items": [
                {"group_id": gid, "tranche": 1, "amount": FUNDING,
                 "disbursed_on": f"{YEAR}-08-01", "budget_year": YEAR} for gid in group_ids]})
            await carried_out_bulk(checker, "groups", again)
        except (ApiError, httpx.HTTPError) as exc:
            self.trickle_failures.append(f"completing lost fundings: {str(exc)[:160]}")

    async def trickle(self, api: CountingApi, stop: asyncio.Event) -> None:
        rng = random.Random(self.opts.seed + 2)
        while not stop.is_set():
            try:
                await self.register_and_fund(api, 1, rng, "trickle")
            except AnswerLost:
                pass  # an import applied, its group ids unknown to the client: counted
            except (ApiError, httpx.HTTPError) as exc:
                self.trickle_failures.append(str(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.opts.tick_s)

    # ------------------------------------------------------------ recovery

    async def all_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        urls = [u for us in self.fleet.urls().values() for u in us]
        async with httpx.AsyncClient(timeout=3) as client:
            while time.monotonic() < deadline:
                answers = await asyncio.gather(*(client.get(u + "/readyz") for u in urls),
                                               return_exceptions=True)
                if all(isinstance(a, httpx.Response) and a.status_code == 200
                       for a in answers):
                    return True
                await asyncio.sleep(0.3)
        return False

    async def caught_up(self, timeout: float) -> bool:
        """The outbox rows committed by now sent, then every consumer group at the topics'
        ends of that moment."""
        deadline = time.monotonic() + timeout
        marks = {}
        for name in SERVICES:
            marks[name] = await _retrying(lambda n=name: _fetchval(
                self.databases[n], "SELECT coalesce(max(id), 0) FROM outbox"), deadline)
        while time.monotonic() < deadline:
            pending = 0
            for name in SERVICES:
                pending += await _retrying(lambda n=name: _fetchval(
                    self.databases[n], "SELECT count(*) FROM outbox WHERE id <= $1 AND "
                    "sent_at IS NULL AND failed_reason IS NULL", marks[n]), deadline)
            if pending == 0:
                break
            await asyncio.sleep(0.3)
        else:
            return False
        ends = await _retrying(lambda: end_offsets(self.endpoints.kafka_bootstrap, self.admin,
                                                   CONTRACT_TOPICS), deadline)
        while time.monotonic() < deadline:
            behind = await _retrying(lambda: group_lag(self.endpoints.kafka_bootstrap,
                                                       self.admin, ends), deadline)
            if behind == 0:
                return True
            await asyncio.sleep(0.5)
        return False

    async def _measure(self, result: FaultResult, t0: float, api: CountingApi) -> None:
        left = self.opts.recovery_timeout_s - (time.monotonic() - t0)
        if await self.all_ready(max(5.0, left)):
            result.ready_s = round(time.monotonic() - t0, 1)
            left = self.opts.recovery_timeout_s - (time.monotonic() - t0)
            if await self.caught_up(max(5.0, left)):
                result.caught_up_s = round(time.monotonic() - t0, 1)
        result.recovered = result.caught_up_s is not None
        seen = api.errors_between(t0, time.monotonic())
        result.errors_by_kind = dict(seen)
        result.client_errors = sum(seen.values())

    # ------------------------------------------------------------ faults

    def schedule(self) -> list[tuple[str, Any]]:
        plan: list[tuple[str, Any]] = []
        if "kill" in self.opts.faults:
            order = list(SERVICES) * (self.opts.kills // len(SERVICES) + 1)
            self.rng.shuffle(order)
            plan += [("kill", (name, self.rng.randrange(self.opts.instances)))
                     for name in order[:self.opts.kills]]
        if "mid-batch" in self.opts.faults:
            plan += [("mid-batch", path) for path in self.opts.mid_batch]
        if "broker" in self.opts.faults:
            if self.opts.brokers > 1:
                plan += [("broker", "one"), ("broker", "leaders"), ("broker", "rolling")]
            else:
                plan.append(("broker", "one"))
        for kind in ("postgres", "consumer-pause", "relay-freeze"):
            if kind in self.opts.faults:
                plan.append((kind, None))
        head, tail = plan[:1], plan[1:]
        self.rng.shuffle(tail)
        return head + tail

    async def inject(self, kind: str, arg: Any, api: CountingApi) -> FaultResult:
        fault = getattr(self, "_" + kind.replace("-", "_"))
        try:
            return await fault(arg, api)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be run or undone
            return FaultResult(kind, str(arg or ""), note=f"the fault itself failed: "
                                                          f"{type(exc).__name__}: "
                                                          f"{str(exc).splitlines()[0][:150]}")

    async def _kill(self, arg: tuple[str, int], api: CountingApi) -> FaultResult:
        name, i = arg
        target = name if self.opts.instances == 1 else f"{name}[{i}]"
        result = FaultResult("service kill -9", target)
        t0 = time.monotonic()
        await asyncio.to_thread(self.fleet.kill, name, i)
        await self._restart(result, name, i)
        await self._measure(result, t0, api)
        return result

    async def _restart(self, result: FaultResult, name: str, i: int) -> None:
        try:
            await asyncio.to_thread(self.fleet.restart, name, i, self.opts.recovery_timeout_s)
        except service_processes.ServiceStartError as exc:
            result.note = f"restart failed: {str(exc).splitlines()[0][:150]}"

    async def _mid_batch(self, path: str, api: CountingApi) -> FaultResult:
        what = "import" if path.endswith("imports") else "fundings"
        result = FaultResult("producer kill -9 mid-batch", f"groups ({what})")
        label = "groups" if self.opts.instances == 1 else "groups[{}]"
        rng = random.Random(self.opts.seed + 3 + len(self.results))
        # a bulk funding asks for 100 groups a transaction now, so it takes a few of them to
        # still be in flight when the kill lands
        n = 60 if what == "import" else 400
        csv_body = self._group_csv(self._regencies, n, rng)
        if what == "import":
            body: Any = csv_body
            request = asyncio.create_task(api.post("groups", path, content=csv_body,
                                                   content_type="text/csv"))
        else:  # registered and approved first, then the fundings batch is cut
            ids = await self._imported(api, await api.post(
                "groups", "/groups/imports", content=csv_body, content_type="text/csv"))
            await api.post("groups", "/groups/approvals", {"group_ids": ids})
            body = {"items": [{"group_id": gid, "tranche": 1, "amount": FUNDING,
                               "disbursed_on": f"{YEAR}-08-01", "budget_year": YEAR}
                              for gid in ids]}
            request = asyncio.create_task(api.post("groups", path, body))
        sent = api.watch(body)
        await asyncio.wait_for(sent.wait(), 120)
        await asyncio.sleep(rng.uniform(0.02, 0.25) if what == "import" else
                            rng.uniform(0.01, 0.12))
        in_flight = not request.done()
        t0 = time.monotonic()
        # the instance the request is in
        serving = api.sent_to.get(id(body), "")
        urls = self.fleet.urls()["groups"]
        i = next((n for n, u in enumerate(urls) if serving.startswith(u)), 0)
        result.target = f"{label.format(i)} ({what})"
        await asyncio.to_thread(self.fleet.kill, "groups", i)
        await self._restart(result, "groups", i)
        try:
            answer = await request
            if what == "import":
                ids = await self._imported(api, answer)
                await api.post("groups", "/groups/approvals", {"group_ids": ids})
                answer = await api.post("groups", "/groups/fundings", {"items": [
                    {"group_id": gid, "tranche": 1, "amount": FUNDING,
                     "disbursed_on": f"{YEAR}-08-01", "budget_year": YEAR} for gid in ids]})
            answer = await carried_out_bulk(self._checker(api), "groups", answer)
            self.funded.update(r["group_id"] for r in answer["results"] if r["status"] < 300)
            result.note = f"{n} items, cut {'in flight' if in_flight else 'after the answer'}"
        except AnswerLost:
            if what == "fundings":
                await self._grant_lost(api, ids)
                self.funded.update(ids)  # carried out: each funded once, checked below
            result.note = f"{n} items, cut after the commit: answer lost (409)"
        except (ApiError, httpx.HTTPError) as exc:
            result.note = f"the retried batch failed: {str(exc)[:120]}"
            self.trickle_failures.append(result.note)
        await self._measure(result, t0, api)
        return result

    async def _imported(self, api: CountingApi, report: dict) -> list[str]:
        ids = [r["group_id"] for r in report["results"] if r.get("group_id")]
        for gid in ids:
            self.registered.setdefault(gid, "mid-batch")
        return ids

    async def _broker(self, how: str, api: CountingApi) -> FaultResult:
        if self.opts.brokers > 1:
            return await self._broker_cluster(how, api)
        result = FaultResult("broker kill -9", f"kafka, down {self.opts.broker_down_s:g}s")
        t0 = time.monotonic()
        if hasattr(infra, "kill_kafka_node"):
            await asyncio.to_thread(infra.kill_kafka_node, self.state, 1)
        else:
            pid = int((self.state / "kafka.pid").read_text())
            os.killpg(pid, signal.SIGKILL)
            await asyncio.to_thread(_wait_gone, pid)
        await asyncio.sleep(self.opts.broker_down_s)
        await asyncio.to_thread(infra.up, self.state)
        await self._measure(result, t0, api)
        return result

    async def _broker_cluster(self, how: str, api: CountingApi) -> FaultResult:
        ids = sorted(n["node_id"] for n in infra.kafka_nodes(self.state))
        t0 = time.monotonic()
        if how == "rolling":
            result = FaultResult("broker rolling restart", f"{len(ids)} brokers, one at a time")
            timings = await asyncio.to_thread(infra.rolling_restart, self.state)
            result.note = ", ".join(f"node {t['node_id']} down {t['down_s']}s, in sync "
                                    f"{t['in_sync_s']}s" for t in timings)
        else:
            if how == "leaders":
                leaders = await infra.partition_leaders(self.endpoints.kafka_bootstrap,
                                                        self.admin, "tkm.groups.v1")
                node = Counter(v for v in leaders.values() if v >= 0).most_common(1)[0][0]
                result = FaultResult("broker kill -9", f"node {node} (leads most of "
                                                       "tkm.groups.v1)")
            else:
                node = self.rng.choice(ids)
                result = FaultResult("broker kill -9", f"node {node} under load")
            await asyncio.to_thread(infra.kill_kafka_node, self.state, node)
            await asyncio.sleep(self.opts.broker_down_s)
            await asyncio.to_thread(infra.start_kafka_node, self.state, node)
            result.note = f"down {self.opts.broker_down_s:g}s"
        await self._measure(result, t0, api)
        return result

    async def _postgres(self, _: Any, api: CountingApi) -> FaultResult:
        result = FaultResult("postgres kill -9", "postmaster and its backends")
        pid = int((self.state / "postgres.pid").read_text())
        backends = _children(pid)
        t0 = time.monotonic()
        for victim in (pid, *backends):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        for victim in (pid, *backends):
            # gone from the process table, not only dead: a new postmaster refuses to start
            # while its lock file names a pid that still answers (a zombie not yet reaped)
            await asyncio.to_thread(_wait_reaped, victim)
        result.note = f"{len(backends)} backends killed"
        for attempt in range(4):
            try:
                await asyncio.to_thread(infra.up, self.state)
                break
            except infra.InfraError as exc:
                if attempt == 3:
                    result.note += f"; restart failed: {str(exc).splitlines()[0][:120]}"
                await asyncio.sleep(3)
        await self._measure(result, t0, api)
        return result

    async def _consumer_pause(self, _: Any, api: CountingApi) -> FaultResult:
        name = self.rng.choice(("mentoring", "evaluation"))
        i = self.rng.randrange(self.opts.instances)
        target = name if self.opts.instances == 1 else f"{name}[{i}]"
        result = FaultResult("consumer SIGSTOP", f"{target}, {self.opts.pause_s:g}s "
                                                 f"(session {SESSION_TIMEOUT_S}s)")
        t0 = time.monotonic()
        self.fleet.freeze(name, i)
        try:
            await asyncio.sleep(self.opts.pause_s)
        finally:
            self.fleet.thaw(name, i)
        await self._measure(result, t0, api)
        return result

    async def _relay_freeze(self, _: Any, api: CountingApi) -> FaultResult:
        service = "groups"  # the trickle keeps writing its outbox
        dsn = self.databases[service]
        standby = None
        if self.opts.instances == 1:
            standby = self._start_standby_relay(service)
            await asyncio.sleep(3)
        holder = await _fetchval(dsn, "SELECT holder FROM relay_lease WHERE service = $1 "
                                 "AND expires_at > now()", service)
        pid = _holder_pid(holder)
        owner = self.fleet.who(pid) if pid else None
        label = f"{service}[{owner[1]}]" if owner and self.opts.instances > 1 else \
            (service if owner else f"stand-by relay {pid}")
        result = FaultResult("relay leader SIGSTOP", label)
        t0 = time.monotonic()
        took_over = None
        if pid is None:
            result.note = "no relay held the lease"
            return result
        freeze, thaw = ((lambda: self.fleet.freeze(*owner), lambda: self.fleet.thaw(*owner))
                        if owner else (lambda: os.kill(pid, signal.SIGSTOP),
                                       lambda: os.kill(pid, signal.SIGCONT)))
        freeze()
        try:
            deadline = t0 + 60
            while time.monotonic() < deadline:
                now = await _fetchval(dsn, "SELECT holder FROM relay_lease WHERE service = $1 "
                                      "AND expires_at > now()", service)
                if now and now != holder:
                    took_over = round(time.monotonic() - t0, 1)
                    break
                await asyncio.sleep(0.3)
            if took_over is not None:
                # while the old leader is still frozen: the new one drains the outbox
                result.note = f"taken over in {took_over}s"
                if await self.caught_up(60):
                    result.note += f", caught up frozen at {time.monotonic() - t0:.1f}s"
            else:
                result.note = "no takeover within 60s"
        finally:
            thaw()
        await self._measure(result, t0, api)
        if took_over is None:
            result.recovered = False
        if standby is not None:
            standby.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                standby.wait(15)
            if standby.poll() is None:
                standby.kill()
        return result

    def _start_standby_relay(self, service: str) -> subprocess.Popen:
        env = {**os.environ, **self.fleet.kafka_env, "PYTHONPATH": str(infra.ROOT)}
        log = (self.state / "logs" / f"{service}-standby-relay.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "shared.outbox", "--dsn", self.databases[service],
             "--bootstrap", self.endpoints.kafka_bootstrap, "--service", service],
            env=service_processes.own_kafka_env(env, service), cwd=infra.ROOT, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    # ------------------------------------------------------------ the whole run

    async def run(self) -> list[Check]:
        api = CountingApi(self.fleet.urls())
        stop = asyncio.Event()
        try:
            from scripts.scenario import build

            scenario = build(seed=self.opts.seed, groups=self.opts.groups)
            self.scenario_provinces = {r.province_code for s in scenario.stages
                                       for r in s.regencies}
            self._regencies = self._trickle_regencies()
            sim = asyncio.create_task(self.simulate(api))
            trickle = asyncio.create_task(self.trickle(api, stop))
            plan = self.schedule()
            self.faults_planned = len(plan)
            for kind, arg in plan:
                await asyncio.sleep(self.rng.uniform(*self.opts.gap_s))
                self.faults_begun += 1
                started = time.monotonic()
                result = await self.inject(kind, arg, api)
                self.results.append(result)
                self.console.print(
                    f"  {result.fault:<28} {result.target:<36} errors {result.client_errors:>4}"
                    f"  ready {_s(result.ready_s):>6}  caught up {_s(result.caught_up_s):>6}"
                    f"  ({time.monotonic() - started:.0f}s) {result.note}", highlight=False)
            self.faults_begun = self.faults_planned
            stop.set()
            await trickle
            await asyncio.wait_for(sim, 900)
            self.console.print("workload done; settling and checking", highlight=False)
            return await self.checks(api)
        finally:
            stop.set()
            await api.close()

    async def checks(self, api: CountingApi) -> list[Check]:
        """The conservation checks; one that cannot be computed is a failed row saying why."""
        settled = await self.settle(180)
        checks: list[Check] = [check_workload(self.sim_error, self.trickle_failures,
                                              api.answers_lost, self.sim_stopped)]
        data: dict[str, Any] = {}

        async def records() -> dict[str, Any]:
            if not data:
                data.update(await gather_records(self.endpoints.kafka_bootstrap, self.admin,
                                                 self.databases))
            return data

        async def commands() -> Check:
            return check_commands(await self.command_expectations(),
                                  await self.command_findings())

        async def outbox() -> Check:
            found = await records()
            return check_outbox_on_topics(found["outbox"], found["on_topic"])

        async def applied() -> Check:
            found = await records()
            return check_applied_once(CONSUMES, found["on_topic"], found["inbox"])

        async def counts() -> Check:
            return check_cross_counts(await cross_counts(self.databases))

        async def rebuilt() -> Check:
            return check_rebuild(*await rebuild_all(self.databases,
                                                    self.endpoints.kafka_bootstrap,
                                                    self.fleet.kafka_env))

        async def dlq() -> Check:
            found = await records()
            return check_dlq(found["dlq_letters"], found["dead_lettered"])

        for name, make in (("every 2xx command in its producer's read model", commands),
                           ("every outbox row on its topic once per event id", outbox),
                           ("every topic event applied exactly once by each consumer", applied),
                           ("cross-service counts equal", counts),
                           ("projections equal to a rebuild", rebuilt),
                           ("DLQs empty", dlq)):
            try:
                checks.append(await make())
            except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
                checks.append(Check(name, False, f"could not be checked: {type(exc).__name__}: "
                                                 f"{str(exc)[:200]}"))
        checks.append(check_settled(settled))
        return checks

    async def settle(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Every service's lag and outbox backlog (tkm status), waiting up to `timeout` for
        zero everywhere; the last figures seen."""
        from scripts.status import collect

        deadline = time.monotonic() + timeout
        while True:
            urls = {n: us[0] for n, us in self.fleet.urls().items()}
            statuses = await collect(urls, self.databases)
            figures = {s.service: {"ready": s.ready, "lag": s.lag_total,
                                   "backlog": s.outbox_backlog} for s in statuses}
            if _settled(figures) or time.monotonic() > deadline:
                return figures
            await asyncio.sleep(1)

    async def command_expectations(self) -> dict[str, Any]:
        run = self.sim_run
        return {
            "tks": set(run.tks_of) if run else set(),
            "groups": set(self.registered) | (set(run.plans) if run else set()),
            "funded": set(self.funded) | (set(run.funded_on) if run else set()),
            "reports": run.reports_filed if run else 0,
        }

    async def command_findings(self) -> dict[str, Any]:
        async with _connect(self.databases["recruitment"]) as conn:
            tks = {r[0] for r in await conn.fetch("SELECT tks_id FROM tks_roster WHERE year = $1",
                                                  YEAR)}
        async with _connect(self.databases["groups"]) as conn:
            rows = await conn.fetch("SELECT group_id, tranches, funded_total FROM group_registry")
        async with _connect(self.databases["mentoring"]) as conn:
            reports = await conn.fetchval("SELECT count(*) FROM monthly_reports")
        return {"tks": tks, "groups": {r["group_id"] for r in rows},
                "tranches": {r["group_id"]: (r["tranches"], r["funded_total"]) for r in rows},
                "reports": reports}


def _settled(figures: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(f["ready"] and not f["lag"] and not f["backlog"] for f in figures.values())


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _holder_pid(holder: str | None) -> int | None:
    """The pid in a relay lease holder (`host:pid:nonce`, shared.outbox)."""
    try:
        return int(str(holder).split(":")[1])
    except (IndexError, ValueError):
        return None


def _wait_reaped(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and infra._alive(pid):
        time.sleep(0.1)


# ---------------------------------------------------------------- reading the records


@contextlib.asynccontextmanager
async def _connect(dsn: str):
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    async with _connect(dsn) as conn:
        return await conn.fetchval(sql, *args)


async def _retrying(call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """`call()`, retried while the database or the broker is still coming back."""
    while True:
        try:
            return await call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _admin_client(state: Path) -> dict[str, Any]:
    from scripts.demo import _admin_client as admin_of

    return admin_of(state)


async def end_offsets(bootstrap: str, client: dict[str, Any],
                      topics: Iterable[str]) -> dict[Any, int]:
    """The end offset of every partition of `topics`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **client)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    parts = [TopicPartition(d["topic"], p["partition"]) for d in described
             for p in d["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                request_timeout_ms=10000, **client)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, client: dict[str, Any], ends: Mapping[Any, int]) -> int:
    """Records each consumer group has still to commit, up to `ends`."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **client)
    await admin.start()
    try:
        behind = 0
        for group, topics in CONSUMES.items():
            if not topics:
                continue
            committed = await admin.list_consumer_group_offsets(group)
            for tp, end in ends.items():
                if tp.topic in topics:
                    meta = committed.get(tp)
                    behind += max(0, end - (meta.offset if meta and meta.offset >= 0 else 0))
        return behind
    finally:
        await admin.close()


async def read_topic(bootstrap: str, client: dict[str, Any], topic: str) -> list[bytes]:
    """Every record's value on `topic`, from the start to its end now."""
    from aiokafka import AIOKafkaConsumer

    ends = await end_offsets(bootstrap, client, [topic])
    values: list[bytes] = []
    if not any(ends.values()):
        return values
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", **client)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        for tp in ends:
            await consumer.seek_to_beginning(tp)
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        values.append(record.value)
                if records and records[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
        if left:
            raise RuntimeError(f"could not read {topic} to its end: {sorted(map(str, left))}")
        return values
    finally:
        await consumer.stop()


async def gather_records(bootstrap: str, client: dict[str, Any],
                         databases: Mapping[str, str]) -> dict[str, Any]:
    """What the conservation checks compare: outbox rows and inbox rows of every database,
    the event ids on every contract topic (repeats kept), the letters on the DLQs."""
    from shared.envelope import decode_envelope

    on_topic: dict[str, list[str]] = {}
    for topic in CONTRACT_TOPICS:
        on_topic[topic] = [str(decode_envelope(v).event_id)
                           for v in await read_topic(bootstrap, client, topic)]
    dlq_ends = await end_offsets(bootstrap, client, [dead_letter_topic(n) for n in SERVICES])
    letters = Counter()
    for tp, end in dlq_ends.items():
        letters[tp.topic.split(".")[1]] += end
    outbox, inbox, dead = {}, {}, {}
    for name, dsn in databases.items():
        async with _connect(dsn) as conn:
            outbox[name] = [(str(r["event_id"]), r["topic"]) for r in await conn.fetch(
                "SELECT event_id, topic FROM outbox WHERE failed_reason IS NULL "
                "AND event_id IS NOT NULL AND topic = ANY($1::text[])", list(CONTRACT_TOPICS))]
            inbox[name] = [(str(r["event_id"]), r["topic"], r["outcome"]) for r in
                           await conn.fetch("SELECT event_id, topic, outcome FROM inbox")]
            dead[name] = await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE outcome = 'dead-lettered'")
    return {"on_topic": on_topic, "outbox": outbox, "inbox": inbox,
            "dlq_letters": {n: letters[n] for n in SERVICES}, "dead_lettered": dead}


CROSS_COUNTS = {
    # figure: {service: SQL}; every service's figure must be the same
    "groups funded": {
        "groups": "SELECT count(*) FROM group_registry WHERE tranches > 0",
        "mentoring": "SELECT count(*) FROM mentored_groups",
        "evaluation": "SELECT count(*) FROM group_facts WHERE tranches > 0"},
    "tranches": {
        "groups": "SELECT coalesce(sum(tranches), 0) FROM group_registry",
        "evaluation": "SELECT coalesce(sum(tranches), 0) FROM group_facts"},
    "TKS contracts": {
        "recruitment": "SELECT count(*) FROM tks_roster",
        "evaluation": "SELECT count(*) FROM tks_contracts"},
    "reports filed": {
        "mentoring": "SELECT count(*) FROM monthly_reports",
        "evaluation": "SELECT count(*) FROM report_facts WHERE status = 'filed'"},
    "LPJ accepted": {
        "groups": "SELECT count(*) FROM group_registry WHERE lpj_status = 'accepted'",
        "evaluation": "SELECT count(*) FROM group_facts WHERE lpj_status = 'accepted'"},
}


async def cross_counts(databases: Mapping[str, str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for figure, queries in CROSS_COUNTS.items():
        out[figure] = {}
        for service, sql in queries.items():
            out[figure][service] = int(await _fetchval(databases[service], sql))
    return out


async def table_rows(conn: asyncpg.Connection, tables: Iterable[str]) -> dict[str, list[tuple]]:
    """Every row of each table, ordered by all its columns."""
    rows = {}
    for table in tables:
        width = await conn.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::text::regclass "
            "AND attnum > 0 AND NOT attisdropped", table)
        order = ", ".join(str(i) for i in range(1, width + 1))
        rows[table] = [tuple(_hashable(v) for v in r) for r in await conn.fetch(
            f'SELECT * FROM "{table}" ORDER BY {order}')]
    return rows


def _hashable(value: Any) -> Any:
    """An array column's value as a tuple (e.g. approval_requests.checker_roles), so rows
    compare and count."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


async def rebuild_all(databases: Mapping[str, str], bootstrap: str, kafka_env: Mapping[str, str]
                      ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each service's read models before and after `tkm rebuild` (which swaps in tables
    replayed from its event store and the topics it consumed)."""
    import importlib

    from scripts.rebuild import rebuild_service

    before, after = {}, {}
    saved = {k: os.environ.get(k) for k in kafka_env}
    os.environ.update(kafka_env)  # the rebuild reads the topics as the service itself
    try:
        for name in SERVICES:
            plan = importlib.import_module(f"services.{name}.app").build_spec().rebuild
            async with _connect(databases[name]) as conn:
                before[name] = await table_rows(conn, plan.tables)
            await rebuild_service(name, databases[name], bootstrap)
            async with _connect(databases[name]) as conn:
                after[name] = await table_rows(conn, plan.tables)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return before, after


# ---------------------------------------------------------------- the checks (pure)


def check_workload(sim_error: str | None, trickle_failures: list[str], answers_lost: int,
                   sim_stopped: str | None = None) -> Check:
    """No command failed for good, except answers lost after their command committed (409
    "carried out": applied once, the answer died with the killed process), which are counted;
    a programme year stopped by one is shown."""
    failed = bool(sim_error) or bool(trickle_failures)
    year = ("failed: " + sim_error if sim_error else sim_stopped if sim_stopped
            else "completed")
    figures = (f"programme year {year}; other commands failed for good: "
               f"{len(trickle_failures)}"
               + (f" ({trickle_failures[0]})" if trickle_failures else "")
               + f"; answers lost after commit (409, applied once): {answers_lost}")
    return Check("workload completed through the faults", not failed, figures)


def check_commands(expected: Mapping[str, Any], found: Mapping[str, Any]) -> Check:
    """Every 2xx command in its producer's read model, once: recruited TKS in the roster,
    registered groups in the registry, each funded group funded exactly once (one tranche of
    FUNDING), every filed report stored once."""
    missing_tks = expected["tks"] - found["tks"]
    missing_groups = expected["groups"] - found["groups"]
    tranches = found["tranches"]
    wrong = {g for g in expected["funded"] if tranches.get(g) != (1, FUNDING)}
    reports_ok = found["reports"] == expected["reports"]
    passed = not missing_tks and not missing_groups and not wrong and reports_ok
    figures = (f"TKS {len(expected['tks']) - len(missing_tks)}/{len(expected['tks'])}; "
               f"groups {len(expected['groups']) - len(missing_groups)}/{len(expected['groups'])}; "
               f"funded once {len(expected['funded']) - len(wrong)}/{len(expected['funded'])}"
               + (f" (e.g. {sorted(wrong)[0]}: {tranches.get(sorted(wrong)[0])})" if wrong else "")
               + f"; reports {found['reports']} stored / {expected['reports']} filed")
    return Check("every 2xx command in its producer's read model", passed, figures)


def check_outbox_on_topics(outbox: Mapping[str, list[tuple[str, str]]],
                           on_topic: Mapping[str, list[str]]) -> Check:
    """Every outbox row on its topic, once per event id: none missing, nothing on a topic that
    no outbox holds. Repeats (a relay killed between the broker's ack and its mark sends the
    row again: at least once, by design) are counted and shown; consumers drop them."""
    rows = [(event_id, topic) for items in outbox.values() for event_id, topic in items]
    ids = {topic: set() for topic in on_topic}
    for event_id, topic in rows:
        ids.setdefault(topic, set()).add(event_id)
    missing = sum(len(ids[t] - set(on_topic.get(t, ()))) for t in ids)
    stray = sum(len(set(v) - ids.get(t, set())) for t, v in on_topic.items())
    doubled_rows = len(rows) - len(set(rows))
    repeats = sum(len(v) - len(set(v)) for v in on_topic.values())
    passed = missing == 0 and stray == 0 and doubled_rows == 0
    figures = (f"{len(rows)} outbox rows, {sum(len(v) for v in on_topic.values())} records on "
               f"{len(on_topic)} topics; missing {missing}, on a topic without a row {stray}, "
               f"rows repeated {doubled_rows}; records sent twice (at least once) {repeats}")
    return Check("every outbox row on its topic once per event id", passed, figures)


def check_applied_once(consumes: Mapping[str, tuple[str, ...]], on_topic: Mapping[str, list[str]],
                       inbox: Mapping[str, list[tuple[str, str, str]]]) -> Check:
    """Every event on a topic a service consumes applied (or knowingly ignored) by it exactly
    once: one inbox row per event id, none missing, none dead-lettered, none of an event the
    topic does not hold."""
    parts, passed = [], True
    for service, topics in consumes.items():
        if not topics:
            continue
        rows = [r for r in inbox.get(service, []) if r[1] in topics]
        counts = Counter(r[0] for r in rows)
        expected = {e for t in topics for e in on_topic.get(t, ())}
        missing = len(expected - set(counts))
        twice = sum(1 for n in counts.values() if n > 1)
        stray = len(set(counts) - expected)
        dead = sum(1 for r in rows if r[2] not in ("applied", "ignored"))
        ok = missing == twice == stray == dead == 0
        passed &= ok
        parts.append(f"{service} {len(counts)}/{len(expected)}"
                     + ("" if ok else f" (missing {missing}, twice {twice}, unknown {stray}, "
                                      f"not applied {dead})"))
    return Check("every topic event applied exactly once by each consumer", passed,
                 "; ".join(parts))


def check_cross_counts(counts: Mapping[str, Mapping[str, int]]) -> Check:
    passed = all(len(set(by.values())) == 1 for by in counts.values())
    figures = "; ".join(f"{figure} " + "=".join(f"{n} ({s})" for s, n in by.items())
                        if len(set(by.values())) > 1 else f"{figure} {next(iter(by.values()))}"
                        for figure, by in counts.items())
    return Check("cross-service counts equal", passed, figures)


def check_rebuild(before: Mapping[str, Mapping[str, list]],
                  after: Mapping[str, Mapping[str, list]]) -> Check:
    """Every read model table identical before and after a rebuild; for a table that differs,
    how many rows only the live table has and only the rebuilt one, and one of them."""
    differing = []
    for s in before:
        for t in before[s]:
            live, rebuilt = Counter(before[s][t]), Counter(after.get(s, {}).get(t) or [])
            if live != rebuilt:
                only_live, only_rebuilt = live - rebuilt, rebuilt - live
                example = next(iter(only_live or only_rebuilt))
                differing.append(f"{s}.{t} ({sum(only_live.values())} rows only live, "
                                 f"{sum(only_rebuilt.values())} only rebuilt, e.g. "
                                 f"{'live' if only_live else 'rebuilt'} {example!s:.160})")
    rows = sum(len(v) for tables in before.values() for v in tables.values())
    tables = sum(len(tables) for tables in before.values())
    figures = f"{rows} rows in {tables} tables of {len(before)} services" + (
        f"; differ: {'; '.join(differing)}" if differing else ", identical")
    return Check("projections equal to a rebuild", not differing, figures)


def check_dlq(letters: Mapping[str, int], dead_lettered: Mapping[str, int]) -> Check:
    total = sum(letters.values()) + sum(dead_lettered.values())
    figures = (f"letters on the DLQ topics {sum(letters.values())}, inbox rows dead-lettered "
               f"{sum(dead_lettered.values())}")
    if total:
        figures += " (" + ", ".join(f"{s} {letters.get(s, 0)}/{dead_lettered.get(s, 0)}"
                                    for s in SERVICES) + ")"
    return Check("DLQs empty", total == 0, figures)


def check_settled(figures: Mapping[str, Mapping[str, Any]]) -> Check:
    text = ", ".join(f"{s} lag {f['lag']} backlog {f['backlog']}"
                     + ("" if f["ready"] else " NOT READY") for s, f in figures.items())
    return Check("consumer lag and outbox backlog back to zero", _settled(figures), text)


# ---------------------------------------------------------------- output


def render(results: list[FaultResult], checks: list[Check], console: Console, *,
           title: str) -> None:
    faults = Table(title=f"Faults ({title})")
    for col in ("#", "fault", "target", "client errors", "ready after", "caught up after",
                "recovered", "note"):
        faults.add_column(col, justify="right" if col in ("#", "client errors") else "left")
    for n, r in enumerate(results, 1):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.errors_by_kind.items()))
        faults.add_row(str(n), r.fault, r.target,
                       f"{r.client_errors}" + (f" ({kinds})" if kinds else ""),
                       _s(r.ready_s), _s(r.caught_up_s), "yes" if r.recovered else "NO", r.note)
    console.print(faults)
    table = Table(title="Conservation checks")
    for col in ("check", "result", "figures"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, "pass" if c.passed else "FAIL", c.figures)
    console.print(table)


def run_suite(opts: Options, console: Console | None = None,
              json_out: Path | None = None) -> int:
    console = console or Console(width=200)
    started = time.monotonic()
    suite = Suite(opts, console)
    title = (f"seed {opts.seed}, {opts.brokers} broker{'s' * (opts.brokers > 1)}, "
             f"{opts.instances} instance{'s' * (opts.instances > 1)} per service, "
             f"{opts.groups} groups")
    console.print(f"fault suite: {title}", highlight=False)
    try:
        try:
            suite.setup()
        except (infra.InfraError, service_processes.ServiceStartError, RuntimeError,
                OSError) as exc:
            console.print(f"[red]set-up failed:[/red] {exc}")
            return EXIT_SETUP
        console.print(f"set up in {time.monotonic() - started:.0f}s", highlight=False)
        checks = asyncio.run(suite.run())
    finally:
        suite.teardown()
    wall = time.monotonic() - started
    render(suite.results, checks, console, title=title)
    ok = all(c.passed for c in checks) and all(r.recovered for r in suite.results)
    console.print(f"{'PASS' if ok else 'FAIL'}: {len(suite.results)} faults, "
                  f"{sum(c.passed for c in checks)}/{len(checks)} checks passed, "
                  f"wall time {wall:.0f}s", highlight=False)
    if json_out:
        json_out.write_text(json.dumps({
            "options": {k: str(v) if isinstance(v, Path) else v
                        for k, v in asdict(opts).items()},
            "faults": [asdict(r) for r in suite.results], "checks": [asdict(c) for c in checks],
            "passed": ok, "wall_s": round(wall, 1)}, indent=2))
    return EXIT_OK if ok else EXIT_FAILED


def options_from(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m scripts.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1)
    parser.add_argument("--instances", type=int, choices=(1, 2), default=1)
    parser.add_argument("--short", action="store_true",
                        help="the variant of `make test`: a few kills, a small workload")
    parser.add_argument("--groups", type=int, help="size of the programme year")
    parser.add_argument("--kills", type=int, help="service kills (at least 10 in the full run)")
    parser.add_argument("--state", type=Path, help="state directory (wiped at the start)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    base = Options.short if args.short else Options
    opts = base(seed=args.seed, brokers=args.brokers, instances=args.instances,
                state=args.state)
    if args.groups:
        opts.groups = args.groups
    if args.kills is not None:
        opts.kills = args.kills
    return opts, args.json


def main(argv: list[str] | None = None) -> int:
    opts, json_out = options_from(argv)
    return run_suite(opts, json_out=json_out)


if __name__ == "__main__":
    sys.exit(main())
