"""The shipped Prometheus configuration and alert rules, checked and unit-tested by promtool (Debian's `prometheus`
package; `./dev test` installs it): every rule fires in its case, the dead-process cases included, and stays
silent where it must."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests._tools import passes
from wearline.mosquitto import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package; ./dev test installs it as root)"
)


def _promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    print(f"promtool {' '.join(map(str, args))}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


@needs_promtool
def test_the_rules_pass_their_promtool_tests() -> None:
    assert _promtool("check", "rules", "alerts.yml").returncode == 0
    assert _promtool("test", "rules", "alerts.test.yml").returncode == 0


@needs_promtool
def test_the_rule_tests_catch_a_rule_that_ignores_a_missing_series(tmp_path: Path) -> None:
    """The mistake issue 15 found: a comparison on a series that is absent never fires. With the never-scored rule
    written that way, the rule tests fail."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    changed = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "WearlineAnalyticsNeverScored":
                rule["expr"] = "time() - max(wearline_analytics_newest_scored_timestamp_seconds) > 600"
                changed += 1
    assert changed == 1
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path)
    done = _promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "WearlineAnalyticsNeverScored" in done.stdout + done.stderr


@needs_promtool
def test_the_prometheus_config_is_valid_and_sends_alerts_somewhere(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["alerting"]["alertmanagers"], "firing alerts must reach an Alertmanager"
    # The rule file's path is the container's; point it at the checkout's copy for the check.
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert _promtool("check", "config", tmp_path / "prometheus.yml").returncode == 0


AMTOOL = shutil.which("amtool")


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (Debian's prometheus-alertmanager package)")
def test_the_alertmanager_config_is_valid() -> None:
    assert AMTOOL is not None
    passes([AMTOOL, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")], 60)


def test_the_example_receiver_prints_one_line_per_alert() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy/alertmanager/receiver.py"), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        alert = {
            "status": "firing",
            "labels": {"alertname": "WearlineStageDown", "severity": "critical", "job": "wearline-ingest"},
            "annotations": {"summary": "down", "runbook_url": "docs/operations.md#wearlinestagedown"},
            "startsAt": "2026-12-04T05:00:00Z",
        }
        payload = {"version": "4", "status": "firing", "alerts": [alert, {**alert, "status": "resolved"}]}
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/alerts", json=payload, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply.status_code == 200
        assert httpx.post(f"http://127.0.0.1:{port}/alerts", content=b"not json", timeout=5).status_code == 400
        assert proc.stdout is not None
        got = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [(g["status"], g["alert"], g["runbook"]) for g in got] == [
            ("firing", "WearlineStageDown", "docs/operations.md#wearlinestagedown"),
            ("resolved", "WearlineStageDown", "docs/operations.md#wearlinestagedown"),
        ]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
