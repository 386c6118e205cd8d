"""The operator files we ship refer only to metrics the code really exports, and the shipped broker config keeps
the settings the delivery guarantee depends on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

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


def test_the_image_holds_every_package_the_wheel_needs() -> None:
    """The Dockerfile copied no demo/ while pyproject.toml packages it: `pip install .` in the image failed."""
    packages = re.search(r"packages = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    copied = set(re.findall(r"^COPY (\w+) ", (ROOT / "deploy/Dockerfile").read_text(), re.MULTILINE))
    assert set(re.findall(r'"(\w+)"', packages.group(1))) <= copied


def test_compose_runs_each_stage_and_the_api_as_its_database_role() -> None:
    services = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())["services"]
    roles = {
        name: services[name]["environment"].get("WEARLINE_DATABASE__ROLE")
        for name in ("ingest-0", "ingest-1", "analytics", "alerts", "api")
    }
    assert roles == {n: f"wearline_{n.split('-')[0]}" for n in roles}
    assert services["api"]["ports"] == ["127.0.0.1:8080:8080"]
    assert services["alerts"]["environment"]["WEARLINE_ALERTS__RULES"] == '["/etc/wearline/rules"]'


def test_the_wheel_ships_what_commands_read_from_deploy(tmp_path: Path) -> None:
    """Installed with `pip install .` (not editable) `wearline bench ingest` failed with FileNotFoundError: the
    wheel had no broker configuration to start Mosquitto with (issue 17, item 4)."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in ("mosquitto/wearline.conf", "scenarios/plant.toml", "rules/plant.toml"):
        assert f"wearline/_deploy/{relative}" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: httpx" in requires.split("Provides-Extra")[0], "webhooks and the demo need httpx at run time"
