"""The layering rules, read from the source: the core imports no stage, stages use each other's public names only,
and each stage's commands are mounted through entry points."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "analytics", "alerts", "simulators")
PACKAGES = ("wearline", *STAGES, "demo")


def _imports(path: Path) -> list[str]:
    """Every module name ``path`` imports, absolute, including imports inside functions."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            # `from analytics import _offline` reaches a private module just the same
            names.extend(f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_"))
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_core_imports_no_stage() -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("wearline")
        for name in _imports(path)
        if name.split(".")[0] in (*STAGES, "demo")
    ]
    assert offences == []


@pytest.mark.parametrize("package", PACKAGES)
def test_other_packages_are_reached_through_their_public_names(package: str) -> None:
    offences = []
    for path in _modules(package):
        for name in _imports(path):
            top, *rest = name.split(".")
            if top == package or top not in PACKAGES:
                continue
            if any(part.startswith("_") for part in rest):
                offences.append(f"{path.relative_to(ROOT)} imports private {name}")
            if package in STAGES and top in (*STAGES, "demo"):
                offences.append(f"{path.relative_to(ROOT)} (a stage) imports the stage or layer {top}")
    assert offences == []


@pytest.mark.parametrize("package", [*STAGES, "demo"])
def test_a_stage_cli_uses_only_its_own_public_names(package: str) -> None:
    offences = [
        name
        for name in _imports(ROOT / package / "cli.py")
        if name.split(".")[0] == package and any(part.startswith("_") for part in name.split(".")[1:])
    ]
    assert offences == []


def test_every_stage_mounts_its_commands_through_an_entry_point() -> None:
    mounted = {ep.name: ep.load() for ep in entry_points(group="wearline.commands")}
    assert set(mounted) == {*STAGES, "demo"}
    assert all(isinstance(app, typer.Typer) for app in mounted.values())
    benches = {ep.value for ep in entry_points(group="wearline.bench")}
    # The soak runs every stage as a process: demo, which owns cross-stage programs, mounts it.
    assert benches == {
        "ingest.cli:bench",
        "analytics.cli:bench",
        "simulators.cli:bench",
        "demo._soak:bench",
        "alerts.cli:bench",
    }


@pytest.mark.parametrize("package", [*STAGES, "demo"])
def test_every_public_name_resolves_and_is_listed(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it cannot give: {missing}"
    if "__getattr__" in vars(module):
        # A lazy package's dir() is its table of homes (wearline.lazy): a name in one and not the other shows here.
        assert sorted(module.__all__) == dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name


def test_starting_the_cli_imports_no_heavy_library() -> None:
    # Every command starts by mounting every stage's commands: scikit-learn, SciPy, skops and FastAPI there made
    # each command, `wearline ingest` included, start 2 s later (1.5 s more than now).
    script = (
        "import sys\n"
        "from wearline.cli import main\n"
        "sys.argv = ['wearline', 'ingest', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('sklearn', 'scipy', 'skops', 'fastapi', 'numpy')\n"
        "print('imported:', *sorted(m for m in sys.modules if m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert "Usage" in out.stdout, out.stdout
    assert out.stdout.splitlines()[-1] == "imported:", f"at start-up, {out.stdout.splitlines()[-1]}"
