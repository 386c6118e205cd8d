"""Writes prometheusrule.yaml, the Prometheus Operator's PrometheusRule, from deploy/prometheus/alerts.yml, so that
Kubernetes and compose alert on the same rules. Run it after editing alerts.yml:

    python deploy/kubernetes/prometheusrule.py

tests/test_deploy_kubernetes.py fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "alerts.yml"
OUT = HERE / "prometheusrule.yaml"
HEADER = "# Generated from deploy/prometheus/alerts.yml by deploy/kubernetes/prometheusrule.py: edit those, not this.\n"


def render(rules: dict[str, Any]) -> str:
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "wearline",
            "namespace": "wearline",
            "labels": {"app.kubernetes.io/part-of": "wearline"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.safe_dump(resource, sort_keys=False, width=120, allow_unicode=True)


def main() -> int:
    OUT.write_text(render(yaml.safe_load(RULES.read_text())))
    sys.stdout.write(f"wrote {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
