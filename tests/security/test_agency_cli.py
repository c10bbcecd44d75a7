"""`tkm agency` refuses in one clear line when it cannot act (no broker needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from scripts.cli import app


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.setenv("TKM_INFRA_DIR", str(tmp_path / "infra"))
    for name in ("ADMIN_KAFKA_USERNAME", "ADMIN_KAFKA_PASSWORD", "ADMIN_KAFKA_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("args", [["add", "bps"], ["list"], ["revoke", "bps"]])
def test_without_a_secured_broker(runner, args):
    assert "no secured broker" in _one_line_error(runner.invoke(app, ["agency", *args]))


def test_admin_settings_from_the_environment_are_checked(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("ADMIN_KAFKA_USERNAME", "admin")
    monkeypatch.setenv("ADMIN_KAFKA_PASSWORD_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    line = _one_line_error(runner.invoke(app, ["agency", "list"]))
    assert "cannot be read" in line


def test_a_reserved_or_malformed_name_is_refused_before_connecting(runner, monkeypatch, tmp_path):
    from scripts import agency

    monkeypatch.setattr(agency, "admin_connection",
                        lambda: agency.AdminConnection("127.0.0.1:1", {}, None))
    assert "reserved" in _one_line_error(runner.invoke(app, ["agency", "add", "mentoring"]))
    assert "must be" in _one_line_error(runner.invoke(app, ["agency", "add", "Bad Name"]))
