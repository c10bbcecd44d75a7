"""The Prometheus rules shipped for the on-call are valid (promtool check rules) and the main
alerts fire when they should (promtool test rules). promtool comes with `make install`
(scripts/install_promtool.sh); a missing one fails here rather than skipping."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run `make install` (scripts/install_promtool.sh)"
    return path


def test_rules_pass_promtool_check():
    result = subprocess.run([_promtool(), "check", "rules", str(RULES / "recording.yml"),
                             str(RULES / "alerts.yml")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_pass():
    tests = sorted(str(p) for p in (RULES / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run([_promtool(), "test", "rules", *tests], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_section():
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(r"^#+ (.+)$", runbook,
                                                                        re.M)}
    alerts = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
              for r in g["rules"]]
    assert len(alerts) >= 7
    for rule in alerts:
        assert rule["alert"].lower() in anchors, f"docs/operations.md lacks ## {rule['alert']}"
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
