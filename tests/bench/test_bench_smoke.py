"""`make bench` at tiny sizes: every path of the issue's table is measured against a Kafka and a
Postgres of the bench's own, and the results file carries each figure with its ratios. No
thresholds: speed targets live in bench/, not in timed tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = (
    "command in-process c=1", "command in-process c=8", "statements per command",
    "statements per HTTP fund-group (Idempotency-Key)",
    "HTTP fund-group c=8", "HTTP service CPU per call c=8",
    "end to end p50 at 20 commands/s", "end to end p95 at 20 commands/s",
    "end to end p99 at 20 commands/s",
    "relay outbox -> topic", "consumer through real handlers",
    "rebuild groups, 500 events", "rebuild groups, 1,000 events",
    "rebuild peak memory, 500 events", "rebuild peak memory, 1,000 events",
    "rebuild peak memory, largest vs smallest size",
    "audit province + GroupFunded + one month, 2,000 events",
    "audit everything, first 1000, 2,000 events",
)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_bench_smoke_measures_every_path(tmp_path: Path) -> None:
    state, out = tmp_path / "infra", tmp_path / "results"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TKM_KAFKA_PORT", "TKM_POSTGRES_PORT"))}
    env["TKM_INFRA_DIR"] = str(state)
    try:
        done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    finally:
        subprocess.run([sys.executable, "-m", "scripts.infra", "down"], cwd=ROOT,
                       env={**env, "TKM_INFRA_DIR": str(state / "bench")},
                       capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    [result_file] = out.glob("*-smoke.json")
    results = json.loads(result_file.read_text())
    rows = {row["path"]: row for row in results["rows"]}
    assert set(EXPECTED) <= set(rows), sorted(set(EXPECTED) - set(rows))
    for path, row in rows.items():
        assert row["value"]["median"] > 0, path
        assert len(row["value"]["runs"]) >= 1, path
        if "ceiling" in row:
            assert row["ceiling"]["median"] > 0, path
            assert row["ratio"] == pytest.approx(row["value"]["median"]
                                                 / row["ceiling"]["median"]), path
    for c in (1, 8):
        row = rows[f"command in-process c={c}"]
        assert row["peer"]["median"] > 0 and row["peer_ratio"] > 0
    # the table printed and written beside the JSON names every path with its ratio
    table = result_file.with_suffix(".md").read_text()
    for path in EXPECTED:
        assert f"| {path} |" in table
    assert f"{rows['relay outbox -> topic']['ratio']:.2f}" in table
    assert table in done.stdout
