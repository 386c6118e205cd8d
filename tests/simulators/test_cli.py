"""The `wearline simulate` command: offline files from the CLI, and a tiny load run that ends with its JSON line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from simulators import TRUTH_COLUMNS, MachineGroup, Scenario, run_load
from tests.conftest import make_settings, unique
from wearline.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_offline_mode_writes_the_five_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--mode",
            "offline",
            "--scenario",
            str(ROOT / "deploy/scenarios/offline_pumps.toml"),
            "--units",
            "3",
            "--test-units",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 train units" in result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["test.csv", "test_rul.csv", "test_truth.csv", "train.csv", "train_truth.csv"]
    assert (tmp_path / "train_truth.csv").read_text().splitlines()[0] == ",".join(TRUTH_COLUMNS)
    assert len((tmp_path / "test_rul.csv").read_text().splitlines()) == 3


def test_a_bad_fault_is_refused_with_its_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--mode", "offline", "--out", str(tmp_path), "--fault", "1:bearing_wear"]
    )
    assert result.exit_code != 0
    assert "MACHINE:KIND:ONSET_S" in result.output


def test_load_mode_publishes_and_reports() -> None:
    settings = make_settings(unique("wlt_"), unique("wlt/"))
    result = run_load(
        settings.mqtt,
        f"{settings.topic_prefix}-load",
        Scenario(groups=(MachineGroup("cnc_spindle", 1), MachineGroup("air_compressor", 1))),
        machines=50,
        duration_s=0.5,
        batch_samples=2,
    )
    assert result.machines == 50
    assert result.messages > 0
    assert result.samples == 2 * result.messages
    figures = json.loads(result.json())
    assert figures["messages"] == result.messages
    assert figures["qos"] == 0
