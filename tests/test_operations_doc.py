"""docs/operations.md against what it serves: every alert rule's runbook link lands on a heading of its own there, the
runbook has no entry for an alert that no longer exists, and every link from it into the other documents resolves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _anchor(heading: str) -> str:
    """GitHub's: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> dict[str, str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a `#` in a code block is no heading
    return {_anchor(h): h for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def _alerts() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return {r["alert"]: r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_anchors_are_githubs() -> None:
    assert _anchor("Figures so far (2-core machine shared with other engineers' test runs: noisy)") == (
        "figures-so-far-2-core-machine-shared-with-other-engineers-test-runs-noisy"
    )
    assert _anchor("Speed: `wearline bench tickets`") == "speed-wearline-bench-tickets"


def test_every_alert_links_to_its_own_runbook_entry() -> None:
    alerts = _alerts()
    assert len(alerts) >= 15
    runbook = _headings(DOCS / "operations.md")
    for name, url in alerts.items():
        page, _, anchor = url.partition("#")
        assert page == "docs/operations.md", f"{name}: {url}"
        assert anchor in runbook, f"{name}: {url} has no heading in docs/operations.md"
        assert runbook[anchor] == name, f"{name}: links to the entry of {runbook[anchor]!r}"
    text = (DOCS / "operations.md").read_text()
    entries = re.findall(r"^### (Wearline\w+)$", text, re.MULTILINE)
    assert sorted(entries) == sorted(alerts), "one runbook entry per alert, none for an alert that is gone"


def test_links_from_the_operations_doc_resolve() -> None:
    text = (DOCS / "operations.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith("http"):
            continue
        target, _, anchor = link.partition("#")
        path = (DOCS / target).resolve() if target else DOCS / "operations.md"
        assert path.exists(), f"{link}: no such file"
        if anchor:
            assert anchor in _headings(path), f"{link}: no such heading in {path.name}"
