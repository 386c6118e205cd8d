"""Every metric a dashboard or a Prometheus rule names is served by some running stage, every served metric is
documented in docs/metrics.md (and nothing documented is missing from the stages), and names follow Prometheus'
conventions.

The stages run as the commands operators start (``wearline ingest``, ``analytics``, ``alerts``, ``api``), against a
migrated schema and the test broker, and are scraped over HTTP once ready: what they serve is what the code
registers, including families that have no series yet (a labelled metric before its first event).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest._metrics import MESSAGE_OUTCOMES
from tests._tools import http_get, stop_all
from tests.conftest import TEST_MQTT, drop_schema, make_settings, unique
from tests.ingest._support import publish
from wearline.db import migrate
from wearline.mosquitto import free_port
from wearline.topics import MachinePath, telemetry_topic
from wearline.wire import Reason, Sample, encode_message

ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\bwearline_[a-z0-9_]+\b")
STAGES = ("ingest", "analytics", "alerts", "api")

Families = dict[str, str]
"""Family name as exposed (a counter with its ``_total``) -> type."""
Served = dict[str, tuple[Families, str, str]]
"""Per stage: its families, its /metrics once readings went through, and its /metrics when it had just become
ready (a fresh install: nothing received yet)."""


def _families(text: str) -> Families:
    """The ``# TYPE`` lines, less the ``_created`` companions prometheus_client adds to counters and histograms."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    bases = {re.sub(r"_total$", "", n) for n, t in types.items() if t in {"counter", "histogram", "summary"}}
    return {n: t for n, t in types.items() if not (n.endswith("_created") and n[: -len("_created")] in bases)}


def _series_names(families: Families) -> set[str]:
    """Every name a PromQL expression may use for these families."""
    out = set()
    for name, kind in families.items():
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "summary":
            out |= {name, f"{name}_count", f"{name}_sum"}
        else:
            out.add(name)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Each stage's families and its /metrics text, scraped from the running command."""
    schema = unique("wlt_")
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    logs = tmp_path_factory.mktemp("stages")
    host, port = TEST_MQTT.rsplit(":", 1)
    ports = {stage: free_port() for stage in STAGES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}
    env |= {
        "WEARLINE_DATABASE__DSN": settings.database.dsn,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_MQTT__CLIENT_ID": unique("wlt-metrics-"),
        "WEARLINE_TOPIC_PREFIX": unique("wlt-metrics-"),
        # The Sparkplug host's metrics exist only while it runs.
        "WEARLINE_INGEST__SPARKPLUG__GROUPS": json.dumps({unique("wltgrp"): "acme/plant1"}),
        "WEARLINE_INGEST__SPARKPLUG__HOST_ID": unique("wlt-host-"),
        "WEARLINE_METRICS_HOST": "127.0.0.1",
        "WEARLINE_ANALYTICS__POLL_INTERVAL_S": "0.5",
        "WEARLINE_API__PORT": str(free_port()),
        **{f"WEARLINE_{stage.upper()}__METRICS_PORT": str(p) for stage, p in ports.items()},
    }
    outputs = {stage: (logs / f"{stage}.log").open("wb") for stage in STAGES}
    procs = {
        stage: subprocess.Popen(
            [sys.executable, "-m", "wearline", stage], env=env, stdout=outputs[stage], stderr=subprocess.STDOUT
        )
        for stage in STAGES
    }
    try:
        deadline = time.monotonic() + 90
        for stage, p in ports.items():
            while http_get(p, "/readyz")[0] != 200:
                log = (logs / f"{stage}.log").read_text()[-3000:]
                assert procs[stage].poll() is None, f"{stage} exited:\n{log}"
                assert time.monotonic() < deadline, f"{stage} never became ready: {http_get(p, '/readyz')}\n{log}"
                time.sleep(0.2)
        fresh = {stage: http_get(p, "/metrics")[1] for stage, p in ports.items()}
        # A few readings through the whole chain: the newest-timestamp gauges are absent until there is one.
        now_ms = int(time.time() * 1000)
        samples = [Sample(now_ms - 1000 * k, {"vibration_rms": 2.0 + k / 10}) for k in range(5)]
        path = MachinePath("acme", "plant1", "line1", "pump-001")
        publish(host, int(port), [(telemetry_topic(env["WEARLINE_TOPIC_PREFIX"], path), encode_message(samples))])
        waited = {"ingest": "wearline_ingest_newest_sample", "analytics": "wearline_analytics_newest_scored"}
        for stage, name in waited.items():
            while name not in http_get(ports[stage], "/metrics")[1]:
                assert time.monotonic() < deadline, f"{stage} never exported {name}"
                time.sleep(0.2)
        out: Served = {}
        for stage, p in ports.items():
            status, text = http_get(p, "/metrics")
            assert status == 200, stage
            out[stage] = (_families(text), text, fresh[stage])
        yield out
    finally:
        stop_all(procs.values())
        for output in outputs.values():
            output.close()
        drop_schema(schema)


def _wearline(served: Served) -> Families:
    out: Families = {}
    for families, _, _ in served.values():
        out |= {n: t for n, t in families.items() if n.startswith("wearline_")}
    return out


def _rule_exprs() -> dict[str, str]:
    """Every rule expression shipped: Prometheus rule files and Kubernetes PrometheusRule objects."""
    exprs = {}
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            groups = (
                doc.get("spec", {}).get("groups")
                if isinstance(doc, dict) and doc.get("kind") == "PrometheusRule"
                else doc.get("groups")
                if isinstance(doc, dict)
                else None
            )
            for group in groups or []:
                for rule in group.get("rules", []):
                    exprs[f"{path.relative_to(ROOT)}: {rule.get('alert') or rule.get('record')}"] = str(rule["expr"])
    return exprs


def _dashboard_exprs() -> dict[str, str]:
    exprs = {}
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text())
        stack = list(board["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if "expr" in target:
                    exprs[f"{path.name}: {panel['title']} {target['refId']}"] = target["expr"]
    return exprs


def test_every_stage_serves_its_build(served: Served) -> None:
    for stage, (families, text, _) in served.items():
        assert families.get("wearline_build_info") == "gauge", stage
        assert re.search(r'^wearline_build_info\{python_version="[^"]+",version="[^"]+"\} 1\.0$', text, re.M), stage


def test_every_metric_a_dashboard_or_rule_names_is_served(served: Served) -> None:
    names = _series_names(_wearline(served))
    rules, boards = _rule_exprs(), _dashboard_exprs()
    assert len(rules) >= 10, rules
    assert len(boards) >= 30, boards
    missing = {
        where: sorted(set(METRIC.findall(expr)) - names)
        for where, expr in {**rules, **boards}.items()
        if set(METRIC.findall(expr)) - names
    }
    assert missing == {}, f"named but served by no stage: {missing}"


def test_docs_list_exactly_the_served_metrics(served: Served) -> None:
    documented = set(re.findall(r"^\| `(wearline_[a-z0-9_]+)`", (ROOT / "docs/metrics.md").read_text(), re.M))
    exposed = set(_wearline(served))
    assert exposed - documented == set(), "served but not in docs/metrics.md"
    assert documented - exposed == set(), "in docs/metrics.md but served by no stage"


def test_names_and_labels_follow_prometheus_conventions(served: Served) -> None:
    families = _wearline(served)
    for name, kind in families.items():
        assert (kind == "counter") == name.endswith("_total"), f"{name} ({kind}): _total is for counters only"
        assert not re.search(r"_(ms|milliseconds|minutes|hours|bytes_total_bytes)\b", name), f"{name}: base units"
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), f"{name}: a time is in seconds since the epoch"
        if kind == "histogram" and re.search(r"(time|latency|duration)", name):
            assert name.endswith("_seconds"), f"{name}: durations in seconds"
    # Labels carry information and stay few; none names a single message, reading or machine.
    for stage, (_, text, _) in served.items():
        for line in text.splitlines():
            match = re.match(r"^(wearline_[a-z0-9_]+)\{([^}]*)\}", line)
            if not match:
                continue
            labels = {kv.split("=")[0] for kv in re.findall(r'(\w+)="', match[2])} - {"le", "quantile"}
            assert len(labels) <= 3, f"{stage}: {line}"
            assert not labels & {"machine", "machine_id", "topic", "message_id", "sensor", "identity"}, line


# Counters whose label values are data (a tenant; a configured webhook or CMMS adapter, none in this test).
DATA_LABELLED = {
    "wearline_ingest_conflicts_total",
    "wearline_alerts_webhook_deliveries_total",
    "wearline_alerts_cmms_filings_total",
}


def test_counters_have_series_from_the_start(served: Served) -> None:
    """A counter with no series leaves a panel empty and ``sum(rate(x))`` absent, not 0, so a rule over it cannot
    fire; every counter whose label values are known is created with them when its process starts. Read from the
    scrape taken as each stage became ready, before any message."""
    for stage, (families, _, fresh) in served.items():
        for name, kind in families.items():
            if kind == "counter" and name.startswith("wearline_") and name not in DATA_LABELLED:
                assert re.search(rf"^{name}(\{{| )", fresh, re.M), f"{stage}: {name} has no series on a fresh start"
    ingest = served["ingest"][2]
    for family in ("wearline_ingest_dead_letters_total", "wearline_ingest_dead_letters_unstored_total"):
        reasons = set(re.findall(rf'^{family}\{{reason="(\w+)"\}}', ingest, re.M))
        assert reasons == {r.value for r in Reason}, family
    outcomes = set(re.findall(r'^wearline_ingest_messages_total\{outcome="(\w+)"\}', ingest, re.M))
    assert outcomes == set(MESSAGE_OUTCOMES)
