"""The demo honours TKM_INFRA_DIR and the port variables, says how to stop what it leaves
running, and prints a line per phase when its output is not a terminal."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from scripts import demo


def test_the_demo_state_lives_under_tkm_infra_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TKM_INFRA_DIR", str(tmp_path))
    try:
        assert importlib.reload(demo).DEMO_STATE == tmp_path / "demo"
    finally:
        monkeypatch.delenv("TKM_INFRA_DIR")
        assert importlib.reload(demo).DEMO_STATE == demo.infra.ROOT / ".infra" / "demo"


def test_port_variables(monkeypatch):
    monkeypatch.setenv("TKM_KAFKA_PORT", "29092")
    monkeypatch.setenv("GROUPS_HTTP_PORT", "")
    assert demo._env_port("TKM_KAFKA_PORT") == 29092
    assert demo._env_port("GROUPS_HTTP_PORT") is None
    assert demo._env_port("TKM_POSTGRES_PORT_UNSET") is None
    monkeypatch.setenv("TKM_POSTGRES_PORT", "fifteen")
    with pytest.raises(ValueError, match="TKM_POSTGRES_PORT"):
        demo._env_port("TKM_POSTGRES_PORT")


def test_a_log_gets_a_line_per_phase():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with demo._phase(console, "starting Kafka and PostgreSQL"):
        pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "starting Kafka and PostgreSQL ..."
    assert lines[1].startswith("starting Kafka and PostgreSQL: done in ")


def test_keep_running_prints_the_pids_and_how_to_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_STATE", tmp_path)
    (tmp_path / "kafka.pid").write_text("4242\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    running = demo.service_processes.RunningServices({"groups": "http://x"}, {"groups": proc},
                                                     {"groups": Path("g.log")})
    out = io.StringIO()
    demo._print_kept(Console(file=out, force_terminal=False, width=300), running)
    text = out.getvalue()
    assert f"groups pid {proc.pid}" in text and "kafka pid 4242" in text
    assert f"kill {proc.pid} && TKM_INFRA_DIR={tmp_path} python -m scripts.infra down" in text
