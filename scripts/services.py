"""Start the four services as separate processes against running infrastructure, wait until
each answers /readyz, and stop them again."""

from __future__ import annotations

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
class RunningServices:
    urls: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(repr=False)
    logs: dict[str, Path] = field(repr=False)

    def stop(self, timeout: float = 15) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        self.processes[name].kill()
        self.processes[name].wait()


def start(endpoints: Endpoints, log_dir: Path, *, ports: dict[str, int] | None = None,
          databases: dict[str, str] | None = None, extra_env: dict[str, str] | None = None,
          kafka_env: dict[str, str] | None = None, timeout: float = 90) -> RunningServices:
    """Start every service (`python -m services.<name>`) with its own database and port; return
    once all are ready. Raises ServiceStartError naming the service and its last log lines.
    `kafka_env`: the Kafka client variables of the infrastructure
    (`scripts.infra.kafka_client_env`), else those of this process's environment; either way a
    service is handed only its own principal's (`<SERVICE>_KAFKA_*`), never another's."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = ports or {name: free_port() for name in SERVICES}
    databases = databases or {name: endpoints.database_url(name) for name in SERVICES}
    # a local run on loopback: the explicit development switch that admits the dev signing key
    env = {"TKM_ENV": "dev", **os.environ, **endpoints.service_env(), **(kafka_env or {}),
           "TKM_HTTP_HOST": "127.0.0.1", **(extra_env or {})}
    env["PYTHONPATH"] = str(ROOT)
    for name in SERVICES:
        env[f"{name.upper()}_DATABASE_URL"] = databases[name]
        env[f"{name.upper()}_HTTP_PORT"] = str(ports[name])
    processes, logs = {}, {}
    for name in SERVICES:
        logs[name] = log_dir / f"{name}.log"
        out = logs[name].open("ab")
        processes[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                           env=own_kafka_env(env, name),
                                           cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
    running = RunningServices({n: f"http://127.0.0.1:{ports[n]}" for n in SERVICES}, processes,
                              logs)
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


def _wait_ready(running: RunningServices, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(SERVICES)
    with httpx.Client(timeout=2) as client:
        while pending:
            for name in sorted(pending):
                proc = running.processes[name]
                if proc.poll() is not None:
                    raise ServiceStartError(f"{name} exited with {proc.returncode}:\n"
                                            + _tail(running.logs[name]))
                try:
                    answer = client.get(running.urls[name] + "/readyz")
                    if answer.status_code == 200 and answer.json().get("service") == name:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                raise ServiceStartError(f"{name} was not ready within {timeout:.0f}s:\n"
                                        + _tail(running.logs[name]))
            if pending:
                time.sleep(0.3)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
