"""The Kubernetes manifests, checked without a cluster: every resource against Kubernetes' own schemas
(kubernetes-validate, strict), the PrometheusRule against deploy/prometheus/alerts.yml and promtool, and by reading
them the rules issue 15 set (resources, a numeric non-root user, probes on the health endpoints, disruption budgets,
ingest identities that survive re-creation, stages that wait for migrations, no committed secret)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._tools import passes
from wearline.settings import AlertsSettings, AnalyticsSettings, ApiSettings, IngestSettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
VALIDATE = shutil.which("kubernetes-validate", path=str(BIN)) or shutil.which("kubernetes-validate")
PROMTOOL = shutil.which("promtool")
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # the Prometheus Operator's; no Kubernetes schema has them
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
OLDEST = "1.28.0"  # the pod-index label ingest reads came with 1.28


def _files() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def _resources() -> list[dict[str, Any]]:
    return [doc for path in _files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _of(kind: str) -> list[dict[str, Any]]:
    return [r for r in _resources() if r["kind"] == kind]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.skipif(VALIDATE is None, reason="kubernetes-validate is not installed (the dev extras: ./dev test)")
@pytest.mark.parametrize("version", [OLDEST, None])
def test_every_resource_validates_against_the_kubernetes_schema(version: str | None) -> None:
    assert VALIDATE is not None
    args = [VALIDATE, "--strict", *(["-k", version] if version else []), *map(str, _files())]
    said = passes(args)
    passed = re.findall(r"passed for resource (\w+)/", said)
    expected = [r for r in _resources() if r["kind"] not in OPERATOR_KINDS]
    assert len(passed) == len(expected)
    unchecked = re.findall(r"Couldn't find schema for kind (\w+)", said)
    assert set(unchecked) == OPERATOR_KINDS  # checked below: their rules by promtool, their shape by hand


def _image_uid() -> int:
    users = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "deploy/Dockerfile").read_text(), re.MULTILINE)
    assert users
    return int(users[-1][0])


def test_every_container_has_resources_and_runs_as_the_images_numeric_user() -> None:
    workloads = [r for r in _resources() if r["kind"] in WORKLOADS]
    assert {w["metadata"]["name"] for w in workloads} == {
        "wearline-migrate",
        "wearline-ingest",
        "wearline-analytics",
        "wearline-alerts",
        "wearline-api",
    }
    for workload in workloads:
        pod = _pod(workload)
        name = workload["metadata"]["name"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == _image_uid(), name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            assert re.fullmatch(r"wearline:\d+\.\d+\.\d+", container["image"]), f"{where}: {container['image']}"


def test_long_running_pods_have_probes_on_the_health_endpoints_wait_for_migrations_and_a_budget() -> None:
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in _of("PodDisruptionBudget")}
    # The sections' own defaults, not Settings(): that would read this environment's WEARLINE_* variables.
    ports = {
        "ingest": IngestSettings().metrics_port,
        "analytics": AnalyticsSettings().metrics_port,
        "alerts": AlertsSettings().metrics_port,
        "api": ApiSettings().metrics_port,
    }
    for workload in _of("Deployment") + _of("StatefulSet"):
        name = workload["metadata"]["name"]
        pod = _pod(workload)
        [container] = pod["containers"]
        stage = container["args"][0]
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named["metrics"] == ports[stage], f"{name}: the stage's default metrics port"
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert get["port"] in named, f"{name} {probe}: port {get['port']} is not a named port"
        [wait] = pod["initContainers"]
        assert wait["args"][:2] == ["db", "wait"], name
        assert wait["envFrom"] == container["envFrom"], f"{name}: the wait must use the stage's own login"
        assert tuple(sorted(workload["spec"]["selector"]["matchLabels"].items())) in budgets, f"{name}: no PDB"


def test_ingest_is_a_statefulset_of_fixed_identities() -> None:
    [ingest] = _of("StatefulSet")
    assert ingest["metadata"]["name"] == "wearline-ingest"
    [container] = _pod(ingest)["containers"]
    env = _env(container)
    # worker i of N: the identity ingest-<i>of<N> and its broker session; N must be the number of pods.
    assert int(env["WEARLINE_INGEST__WORKERS"]) == ingest["spec"]["replicas"]
    assert env["WEARLINE_INGEST__WORKER"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert isinstance(env["WEARLINE_MQTT__CLIENT_ID"], str)
    assert ingest["spec"]["podManagementPolicy"] == "Parallel"
    grace = float(env["WEARLINE_SHUTDOWN_GRACE_S"])
    assert grace < _pod(ingest)["terminationGracePeriodSeconds"], "the kubelet must not kill it mid-commit"


def test_no_secret_is_committed_and_each_workload_names_its_own() -> None:
    assert _of("Secret") == []
    referenced = set()
    for workload in [r for r in _resources() if r["kind"] in WORKLOADS]:
        pod = _pod(workload)
        for container in pod["containers"] + pod.get("initContainers", []):
            names = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
            assert names == [workload["metadata"]["name"]], container["name"]
            referenced |= set(names)
            literal = sorted(k for k, v in _env(container).items() if re.search(r"(?i)password|dsn|token", k))
            assert literal == [], f"{workload['metadata']['name']}: {literal} set in the manifest"
    header = (K8S / "wearline.yaml").read_text()
    for name in referenced:
        assert f"#   {name}:" in header, f"the Secret {name} is not documented in wearline.yaml's header"


def test_the_prometheusrule_carries_the_rules_of_alerts_yml() -> None:
    [rule] = _of("PrometheusRule")
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"], "run: python deploy/kubernetes/prometheusrule.py"
    # The generator writes exactly the committed file.
    generated = subprocess.run(
        [
            sys.executable,
            "-c",
            "import prometheusrule, yaml, sys; sys.stdout.write(prometheusrule.render("
            "yaml.safe_load(prometheusrule.RULES.read_text())))",
        ],
        cwd=K8S,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == (K8S / "prometheusrule.yaml").read_text()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package; ./dev test)")
def test_the_prometheusrule_passes_promtool(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    [rule] = _of("PrometheusRule")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    passes([PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], 60)


def test_the_servicemonitor_scrapes_every_job_the_rules_name() -> None:
    [monitor] = _of("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["endpoints"]
    scraped = {
        s["metadata"]["name"]
        for s in _of("Service")
        if selector.items() <= s["metadata"].get("labels", {}).items()
        and endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
    }
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    # The operator's job label is the Service's name.
    assert set(re.findall(r'job="(wearline-[a-z]+)"', rules)) == scraped
