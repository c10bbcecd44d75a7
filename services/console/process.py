"""Run the console as its own process beside the four services (tests, `make demo`): onboard its
Kafka principal like any agency's (`tkm agency add`), start `python -m services.console`, wait
until it answers, add users."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class ConsoleStartError(RuntimeError):
    pass


@dataclass
class RunningConsole:
    url: str
    process: subprocess.Popen = field(repr=False)
    log: Path
    env: dict[str, str] = field(repr=False)

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def add_user(self, email: str, password: str, role: str, **scope: str | None) -> str:
        """`python -m services.console add-user`, as an operator runs it; returns its output."""
        args = [sys.executable, "-m", "services.console", "add-user", email, "--role", role,
                "--password-stdin", "--replace"]
        for name, value in scope.items():
            if value:
                args += [f"--{name.replace('_', '-')}", value]
        done = subprocess.run(args, input=password + "\n", env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise ConsoleStartError(f"add-user failed: {done.stderr.strip()}")
        return done.stdout.strip()


def onboard_principal(name: str, secrets_dir: Path, bootstrap: str) -> Path:
    """Create (or give a new password to) the console's Kafka principal, an agency named
    `name`, as `tkm agency add` does, with the admin's credentials of this environment
    (`ADMIN_KAFKA_*`); returns the password file (0600)."""
    from scripts.agency import AdminConnection, add_agency
    from shared.kafka_security import kafka_security

    admin = kafka_security(service="admin")
    connection = AdminConnection(bootstrap, admin.admin_kwargs(), admin.kafka_ca_file)
    password = asyncio.run(add_agency(connection, name, rotate=True))
    secrets_dir.mkdir(parents=True, exist_ok=True)
    path = secrets_dir / f"{name}.password"
    path.touch(mode=0o600)
    path.write_text(password)
    return path


def start(*, database_url: str, service_urls: dict[str, str], kafka_bootstrap: str,
          port: int, log_dir: Path, principal: str, password_file: Path,
          extra_env: dict[str, str] | None = None, timeout: float = 60) -> RunningConsole:
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {"TKM_ENV": "dev", **os.environ, "TKM_HTTP_HOST": "127.0.0.1",
           "CONSOLE_DATABASE_URL": database_url, "CONSOLE_HTTP_PORT": str(port),
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CONSOLE_KAFKA_USERNAME": principal,
           "CONSOLE_KAFKA_PASSWORD_FILE": str(password_file), "PYTHONPATH": str(ROOT),
           **{f"{name.upper()}_URL": url for name, url in service_urls.items()},
           **(extra_env or {})}
    # the console holds its own principal only: never the services' or the admin's
    env = {k: v for k, v in env.items()
           if not (k.endswith(("_KAFKA_USERNAME", "_KAFKA_PASSWORD", "_KAFKA_PASSWORD_FILE"))
                   and not k.startswith("CONSOLE_"))
           and k not in ("KAFKA_USERNAME", "KAFKA_PASSWORD", "KAFKA_PASSWORD_FILE")}
    log = log_dir / "console.log"
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.console"], env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    running = RunningConsole(f"http://127.0.0.1:{port}", process, log, env)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise ConsoleStartError(f"the console exited with {process.returncode}:\n"
                                        + _tail(log))
            try:
                if client.get(running.url + "/readyz").status_code == 200:
                    return running
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                running.stop()
                raise ConsoleStartError(f"the console was not ready within {timeout:.0f}s:\n"
                                        + _tail(log))
            time.sleep(0.3)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
