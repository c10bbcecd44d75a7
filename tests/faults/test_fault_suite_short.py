"""`make faults` in its shortest mode, in `make test`: its own Kafka and Postgres, the four
services as processes, a small programme year and a trickle of groups through their APIs, a few
kill -9 of services at random moments and one of groups in the middle of a bulk request; then
every conservation check must pass and every fault must have recovered."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scripts import infra

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_the_short_fault_suite_conserves_everything():
    # a directory of its own, not pytest's numbered temp dirs (a concurrent run prunes those)
    state = Path(tempfile.mkdtemp(prefix="tkm-faults-"))
    try:
        _run_and_check(state)
    finally:
        infra.down(state / "infra")  # after a timeout: the broker and Postgres it left
        shutil.rmtree(state, ignore_errors=True)


def _run_and_check(state: Path) -> None:
    out = state / "faults.json"
    # a process of its own: the suite kills and restarts servers and must not share the
    # session's broker (its checks read whole topics and consumer groups)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "TKM_KAFKA_PORT", "TKM_POSTGRES_PORT"))}
    # a session of its own: on a timeout it is killed with the services it started
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.faults", "--short", "--seed", "7",
         "--state", str(state / "infra"), "--json", str(out)],
        cwd=infra.ROOT, env={**env, "PYTHONPATH": str(infra.ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
    assert out.exists(), result.stdout[-5000:]
    report = json.loads(out.read_text())
    kinds = [f["fault"] for f in report["faults"]]
    assert kinds.count("service kill -9") == 3 and "producer kill -9 mid-batch" in kinds, kinds
    assert all(f["recovered"] for f in report["faults"]), report["faults"]
    names = {c["name"]: c for c in report["checks"]}
    assert len(names) == 8, names
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, failed
    assert report["passed"] and result.returncode == 0, result.stdout[-3000:]
