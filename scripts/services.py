"""Start the four services as separate processes against running infrastructure, wait until
each answers /readyz, and stop them again.

Several instances of a service (`start(..., instances=N)`) share its one database and its one
consumer group (the service's name): Kafka spreads the consumed partitions over them, the outbox
relay runs on one of them at a time (the lease of shared.outbox), and each answers HTTP on a port
of its own. Instance 0 is the one `urls`, `processes` and `kill` speak of; `instance_urls` lists
them all, for a round-robin client (scripts.balancer), and the `*_instance` methods act on one
(the fault and multi-instance tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scripts.infra import ROOT, Endpoints, free_port

SERVICES = ("recruitment", "groups", "mentoring", "evaluation")


class ServiceStartError(RuntimeError):
    pass


@dataclass
class _Launch:
    """How to start one instance again: its environment (port included) and its log."""

    env: dict[str, str] = field(repr=False)
    log: Path


@dataclass
class RunningServices:
    urls: dict[str, str]  # instance 0 of each service
    processes: dict[str, subprocess.Popen] = field(repr=False)  # instance 0 of each service
    logs: dict[str, Path] = field(repr=False)  # instance 0 of each service
    # every instance, instance 0 first (one per service when constructed without them)
    instance_urls: dict[str, list[str]] = field(default_factory=dict)
    instance_processes: dict[str, list[subprocess.Popen]] = field(default_factory=dict,
                                                                  repr=False)
    instance_logs: dict[str, list[Path]] = field(default_factory=dict, repr=False)
    _launches: dict[str, list[_Launch]] = field(default_factory=dict, repr=False)
    _frozen: set[tuple[str, int]] = field(default_factory=set, repr=False)
    # instances on a port picked here (free_port): moved to another when it was taken meanwhile
    _movable: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for name, url in self.urls.items():
            self.instance_urls.setdefault(name, [url])
        for name, proc in self.processes.items():
            self.instance_processes.setdefault(name, [proc])
        for name, log in self.logs.items():
            self.instance_logs.setdefault(name, [log])

    def stop(self, timeout: float = 15) -> None:
        procs = [p for group in self.instance_processes.values() for p in group]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                proc.send_signal(signal.SIGTERM)
        self._frozen.clear()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL instance 0 of `name`."""
        self.kill_instance(name, 0)

    # ---- one instance ----------------------------------------------------------------------

    def process(self, name: str, i: int) -> subprocess.Popen:
        return self.instance_processes[name][i]

    def kill_instance(self, name: str, i: int) -> None:
        """SIGKILL instance `i` of `name` and reap it (a frozen one too)."""
        proc = self.process(name, i)
        proc.kill()
        proc.wait()
        self._frozen.discard((name, i))

    def start_instance(self, name: str, i: int, timeout: float = 90) -> None:
        """Start instance `i` of `name` again (after a kill or a crash) on its port, with its
        environment and log, and wait until it answers /readyz. Raises ServiceStartError."""
        proc = self.process(name, i)
        if proc.poll() is None:
            raise ServiceStartError(f"{name} instance {i} is still running (pid {proc.pid})")
        self._spawn(name, i)
        _wait_ready(self, timeout, {(name, i)})

    def freeze_instance(self, name: str, i: int) -> None:
        """SIGSTOP instance `i` of `name`: it keeps its sockets and connections, answers
        nothing, renews no lease and sends no heartbeat until thawed."""
        os.kill(self.process(name, i).pid, signal.SIGSTOP)
        self._frozen.add((name, i))

    def thaw_instance(self, name: str, i: int) -> None:
        """SIGCONT instance `i` of `name`."""
        os.kill(self.process(name, i).pid, signal.SIGCONT)
        self._frozen.discard((name, i))

    def relay_leader(self, name: str, timeout: float = 2) -> int | None:
        """Which instance of `name` says it holds the outbox relay lease (its /metrics gauge
        `tkm_relay_leader` is 1), or None when none does (a takeover under way, or the leader
        frozen or dead: a frozen or dead instance does not answer and is passed over)."""
        with httpx.Client(timeout=timeout) as client:
            for i, url in enumerate(self.instance_urls[name]):
                if (name, i) in self._frozen or self.process(name, i).poll() is not None:
                    continue
                try:
                    text = client.get(url + "/metrics").text
                except httpx.HTTPError:
                    continue
                if _leads(text, name):
                    return i
        return None

    def _move(self, name: str, i: int, port: int) -> None:
        """Start instance `i` of `name` again on `port` (its first one was taken)."""
        url = f"http://127.0.0.1:{port}"
        self._launches[name][i].env[f"{name.upper()}_HTTP_PORT"] = str(port)
        self.instance_urls[name][i] = url
        if i == 0:
            self.urls[name] = url
        self._spawn(name, i)

    def _spawn(self, name: str, i: int) -> subprocess.Popen:
        launch = self._launches[name][i]
        with launch.log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=launch.env,
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        procs = self.instance_processes.setdefault(name, [])
        if i < len(procs):
            procs[i] = proc
        else:
            procs.append(proc)
        if i == 0:
            self.processes[name] = proc
        return proc


def start(endpoints: Endpoints, log_dir: Path, *, ports: dict[str, int] | None = None,
          databases: dict[str, str] | None = None, extra_env: dict[str, str] | None = None,
          kafka_env: dict[str, str] | None = None, timeout: float = 90,
          instances: int = 1) -> RunningServices:
    """Start every service (`python -m services.<name>`) with its own database and port; return
    once all are ready. Raises ServiceStartError naming the service and its last log lines.
    `kafka_env`: the Kafka client variables of the infrastructure
    (`scripts.infra.kafka_client_env`), else those of this process's environment; either way a
    service is handed only its own principal's (`<SERVICE>_KAFKA_*`), never another's.
    `instances`: processes per service, all on the service's database and consumer group, each
    on a port of its own (`ports` gives instance 0's); their logs are `<name>.log` for instance
    0 and `<name>.<i>.log` for the others."""
    if instances < 1:
        raise ValueError(f"instances must be at least 1, not {instances}")
    log_dir.mkdir(parents=True, exist_ok=True)
    given = set(ports or ())
    ports = ports or {name: free_port() for name in SERVICES}
    databases = databases or {name: endpoints.database_url(name) for name in SERVICES}
    # a local run on loopback: the explicit development switch that admits the dev signing key
    env = {"TKM_ENV": "dev", **os.environ, **endpoints.service_env(), **(kafka_env or {}),
           "TKM_HTTP_HOST": "127.0.0.1", **(extra_env or {})}
    env["PYTHONPATH"] = str(ROOT)
    for name in SERVICES:
        env[f"{name.upper()}_DATABASE_URL"] = databases[name]
    running = RunningServices({}, {}, {})
    for name in SERVICES:
        for i in range(instances):
            port = ports[name] if i == 0 else free_port()
            log = log_dir / (f"{name}.log" if i == 0 else f"{name}.{i}.log")
            own = {**own_kafka_env(env, name), f"{name.upper()}_HTTP_PORT": str(port)}
            running._launches.setdefault(name, []).append(_Launch(own, log))
            running.instance_urls.setdefault(name, []).append(f"http://127.0.0.1:{port}")
            running.instance_logs.setdefault(name, []).append(log)
            running._spawn(name, i)
            if i > 0 or name not in given:
                running._movable.add((name, i))
        running.urls[name] = running.instance_urls[name][0]
        running.logs[name] = running.instance_logs[name][0]
    try:
        _wait_ready(running, timeout)
    except ServiceStartError:
        running.stop()
        raise
    return running


def own_kafka_env(env: dict[str, str], service: str) -> dict[str, str]:
    """`env` without the Kafka credentials of other principals (the other services', the
    admin's); the plain `KAFKA_USERNAME`/`KAFKA_PASSWORD*` too when the service has its own."""
    prefixes = [f"{p.upper()}_KAFKA_" for p in (*SERVICES, "admin") if p != service]
    own = f"{service.upper()}_KAFKA_USERNAME" in env
    plain = ("KAFKA_USERNAME", "KAFKA_PASSWORD", "KAFKA_PASSWORD_FILE") if own else ()
    return {k: v for k, v in env.items()
            if not any(k.startswith(p) for p in prefixes) and k not in plain}


def _wait_ready(running: RunningServices, timeout: float,
                pending: set[tuple[str, int]] | None = None) -> None:
    deadline = time.monotonic() + timeout
    moves = 0
    pending = pending if pending is not None else {
        (name, i) for name, urls in running.instance_urls.items() for i in range(len(urls))}
    with httpx.Client(timeout=2) as client:
        while pending:
            for name, i in sorted(pending):
                proc = running.process(name, i)
                if proc.poll() is not None:
                    log = _tail(running.instance_logs[name][i])
                    if (name, i) in running._movable and PORT_TAKEN in log and moves < 3:
                        # the port was free when picked, then another process (a parallel
                        # test session) bound it first: start again on another one
                        moves += 1
                        running._move(name, i, free_port())
                        continue
                    raise ServiceStartError(f"{_label(name, i)} exited with {proc.returncode}:\n"
                                            + log)
                try:
                    answer = client.get(running.instance_urls[name][i] + "/readyz")
                    if answer.status_code == 200 and answer.json().get("service") == name:
                        pending.discard((name, i))
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                name, i = sorted(pending)[0]
                raise ServiceStartError(f"{_label(name, i)} was not ready within {timeout:.0f}s:\n"
                                        + _tail(running.instance_logs[name][i]))
            if pending:
                time.sleep(0.3)


PORT_TAKEN = "address already in use"


def _label(name: str, i: int) -> str:
    return name if i == 0 else f"{name} instance {i}"


def _leads(metrics: str, service: str) -> bool:
    """Whether a /metrics page has `tkm_relay_leader{service="<service>",...} 1.0`."""
    for line in metrics.splitlines():
        if line.startswith("tkm_relay_leader{") and f'service="{service}"' in line:
            try:
                if float(line.rsplit(" ", 1)[1]) == 1.0:
                    return True
            except (IndexError, ValueError):
                continue
    return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
