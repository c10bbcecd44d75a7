"""scripts.services.start picks a free port for each service, then the service binds it: a
parallel test session can take the port in between (it did, once, in CI: "address already in
use"). An instance on a port picked there is started again on another; a port the caller gave
is never moved."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import services

# a stand-in for `python -m services.<name>`: binds the port it is given, exits 3 as uvicorn
# does when it is taken, else answers /readyz with its name
FAKE = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
name = sys.argv[1]
port = int(os.environ[name.upper() + "_HTTP_PORT"])
class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"service": name}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
try:
    server = HTTPServer(("127.0.0.1", port), Ready)
except OSError as exc:
    print(f"[Errno 98] error while attempting to bind: {exc}: address already in use", flush=True)
    sys.exit(3)
server.serve_forever()
"""


class _Endpoints:
    def service_env(self) -> dict[str, str]:
        return {}

    def database_url(self, name: str) -> str:
        return f"postgresql://127.0.0.1:1/{name}"


@pytest.fixture
def fake_services(monkeypatch):
    monkeypatch.setattr(services, "SERVICES", ("recruitment",))

    def spawn(self, name: str, i: int) -> subprocess.Popen:
        launch = self._launches[name][i]
        with launch.log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", FAKE, name], env=launch.env,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs = self.instance_processes.setdefault(name, [])
        procs[i:i + 1] = [proc]
        if i == 0:
            self.processes[name] = proc
        return proc

    monkeypatch.setattr(services.RunningServices, "_spawn", spawn)


def _taken() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_picked_port_taken_meanwhile_is_replaced(fake_services, monkeypatch, tmp_path: Path):
    held = _taken()
    taken = held.getsockname()[1]
    picks = iter([taken])
    monkeypatch.setattr(services, "free_port", lambda: next(picks, None) or _free())
    try:
        running = services.start(_Endpoints(), tmp_path, timeout=20)
        try:
            assert running.urls["recruitment"] != f"http://127.0.0.1:{taken}"
            assert running.process("recruitment", 0).poll() is None
            assert "address already in use" in (tmp_path / "recruitment.log").read_text()
        finally:
            running.stop()
    finally:
        held.close()


def test_a_port_the_caller_gave_is_not_moved(fake_services, tmp_path: Path):
    held = _taken()
    try:
        with pytest.raises(services.ServiceStartError, match="address already in use"):
            services.start(_Endpoints(), tmp_path, ports={"recruitment": held.getsockname()[1]},
                           timeout=20)
    finally:
        held.close()


def _free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
