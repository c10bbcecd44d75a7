"""CLI errors are one line on stderr with a meaningful exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _tkm(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ".", **env})


@pytest.mark.parametrize(("args", "code", "says"), [
    (("rebuild", "foo"), 2, "unknown service 'foo'"),
    (("token", "--role", "bogus"), 2, "'bogus' is not one of"),
    (("no-such-command",), 2, "No such command"),
    (("dlq", "list"), 2, "Missing option '--service'"),
    (("status", "--service", "nope"), 2, "unknown service nope"),
    (("approvals", "list"), 2, "Missing option '--service'"),
    (("approvals", "grant", "-s", "mentoring", "x"), 2, "unknown service mentoring"),
    (("approvals", "grant", "-s", "groups"), 2, "name request ids or --batch-id"),
    (("approvals", "reject", "x", "-s", "groups"), 2, "Missing option '--reason-code'"),
])
def test_usage_errors_are_one_line(args, code, says):
    result = _tkm(*args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_failure_is_one_line_and_exit_1():
    # an unexpected exception (a port variable that is not a number) inside a command
    result = _tkm("simulate", "--groups", "1", TKM_KAFKA_PORT="not-a-port",
                  TKM_INFRA_DIR="/nonexistent/tkm-test")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "tkm: ValueError: TKM_KAFKA_PORT='not-a-port' is not a port number"


def test_approvals_unreachable_service_is_one_line_and_exit_1():
    result = _tkm("approvals", "list", "-s", "groups", GROUPS_URL="http://127.0.0.1:9")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tkm: ConnectError")
