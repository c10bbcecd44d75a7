"""The Grafana dashboard loads and queries only metrics the services export (or the recording
rules define)."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

# what shared/observability.py and shared/outbox.py export (histograms add _bucket/_sum/_count)
KNOWN = {
    "tkm_consumer_lag", "tkm_consumer_lag_total", "tkm_outbox_backlog",
    "tkm_outbox_oldest_unsent_age_seconds", "tkm_dlq_letters", "tkm_http_requests_total",
    "tkm_http_request_duration_seconds", "tkm_handler_seconds", "tkm_relay_publish_seconds",
    "tkm_events_published_total", "tkm_events_consumed_total", "tkm_consumer_paused_partitions",
    "tkm_build_info", "tkm_dependency_up", "tkm_degraded", "tkm_http_requests_shed_total",
    "tkm_relay_leader",
}
HISTOGRAMS = {"tkm_http_request_duration_seconds", "tkm_handler_seconds",
              "tkm_relay_publish_seconds"}


def _known() -> set[str]:
    names = set(KNOWN)
    for h in HISTOGRAMS:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    recording = yaml.safe_load((ROOT / "ops/prometheus/recording.yml").read_text())
    names |= {r["record"] for g in recording["groups"] for r in g["rules"]}
    return names


def _exprs(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found += _exprs(value)
    elif isinstance(node, list):
        for item in node:
            found += _exprs(item)
    return found


def test_dashboard_loads_and_queries_only_known_metrics():
    dashboard = json.loads((ROOT / "ops/grafana/tkm.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    exprs = _exprs(dashboard)
    assert len(exprs) >= len(panels)
    known, used = _known(), set()
    for expr in exprs:
        names = set(re.findall(r"\btkm[_:][a-z0-9_:]+", expr))
        assert names, f"no tkm metric in {expr!r}"
        assert names <= known, f"unknown metric {names - known} in {expr!r}"
        used |= names
    # the programme's main signals are on the dashboard
    for wanted in ("tkm_consumer_lag", "tkm_outbox_oldest_unsent_age_seconds", "tkm_dlq_letters",
                   "tkm_relay_leader", "tkm_http_request_duration_seconds_bucket"):
        assert wanted in used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_and_recording_rules_use_known_metrics():
    known = _known() | {"up"}
    for name in ("recording.yml", "alerts.yml"):
        rules = yaml.safe_load((ROOT / "ops/prometheus" / name).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                names = set(re.findall(r"\btkm[_:][a-z0-9_:]+", rule["expr"]))
                assert names <= known, f"{name}: unknown {names - known}"
