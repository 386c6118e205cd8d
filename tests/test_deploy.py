"""The operator files we ship refer only to metrics the code really exports, and the shipped broker config keeps
the settings the delivery guarantee depends on."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\bwearline_[a-z_]+")
SUFFIX = re.compile(r"_(bucket|count|sum|created)$")


def _exported() -> set[str]:
    names = set()
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in {"ingest", "analytics", "alerts", "simulators", "wearline"}:
            names |= set(re.findall(r'"(wearline_[a-z_]+)"', path.read_text()))
    return names


def _referenced(text: str) -> set[str]:
    return {SUFFIX.sub("", name) for name in METRIC.findall(text)}


def test_alert_rules_and_dashboard_use_exported_metrics() -> None:
    exported = _exported()
    assert "wearline_ingest_readings_total" in exported
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/wearline-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for source, text in (("alerts.yml", rules), ("dashboard", exprs)):
        missing = _referenced(text) - exported
        assert not missing, f"{source} refers to metrics no code exports: {sorted(missing)}"


def test_shipped_mosquitto_config_never_drops_queued_messages() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "deploy/mosquitto/wearline.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    # 0 means "no limit" on paper but was broken in several 2.0.x releases: an explicit, huge limit instead.
    assert int(conf["max_queued_messages"]) >= 1_000_000
    assert conf["persistence"] == "true"
    assert int(conf["max_inflight_messages"]) >= 1000
    assert conf["set_tcp_nodelay"] == "true"
