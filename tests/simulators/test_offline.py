"""Offline mode: the CSV column contract, row alignment, complete and truncated histories."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from simulators import MACHINE_TYPES, TRAIN_COLUMNS, TRUTH_COLUMNS, MachineGroup, Scenario, write_offline_dataset


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scenario]:
    scenario = Scenario(
        groups=tuple(MachineGroup(t, 1) for t in MACHINE_TYPES),
        fault_rate_per_day=0.5,
        offline_step_h=4.0,
        offline_max_life_h=800.0,
    )
    out = tmp_path_factory.mktemp("offline")
    write_offline_dataset(scenario, out, units=8, seed=3, test_units=6)
    return out, scenario


def test_files_follow_the_column_contract(dataset: tuple[Path, Scenario]) -> None:
    out, _ = dataset
    header, train = read(out / "train.csv")
    assert tuple(header[:4]) == TRAIN_COLUMNS == ("unit", "time", "machine_type", "condition")
    sensors = header[4:]
    assert set(sensors) == {s for t in MACHINE_TYPES.values() for s in t.sensor_names}
    assert read(out / "test.csv")[0] == header
    for name in ("train_truth.csv", "test_truth.csv"):
        assert tuple(read(out / name)[0]) == TRUTH_COLUMNS
        assert TRUTH_COLUMNS == ("unit", "time", "health", "rul", "fault", "fault_type", "failure_mode")
    assert read(out / "test_rul.csv")[0] == ["unit", "rul"]
    assert {r["machine_type"] for r in train} == set(MACHINE_TYPES)


@pytest.mark.parametrize("split", ["train", "test"])
def test_truth_is_row_aligned_and_rul_is_exact(dataset: tuple[Path, Scenario], split: str) -> None:
    out, scenario = dataset
    _, data = read(out / f"{split}.csv")
    _, truth = read(out / f"{split}_truth.csv")
    assert len(data) == len(truth) > 0
    units: dict[str, list[dict[str, str]]] = {}
    for d, t in zip(data, truth, strict=True):
        assert (d["unit"], d["time"]) == (t["unit"], t["time"])
        assert t["fault"] in ("0", "1")
        assert (t["fault"] == "1") == (t["fault_type"] != "")
        modes = MACHINE_TYPES[d["machine_type"]].mode_names
        assert t["failure_mode"] in modes
        units.setdefault(t["unit"], []).append(t)
    step = scenario.offline_step_h
    for rows in units.values():
        times = [float(r["time"]) for r in rows]
        ruls = [float(r["rul"]) for r in rows]
        assert times[0] == 0.0
        assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(times))
        assert all(a - b == pytest.approx(step, abs=1e-5) for a, b in itertools.pairwise(ruls))
        assert len({r["failure_mode"] for r in rows}) == 1
        if split == "train":
            assert ruls[-1] == 0.0
            assert float(rows[-1]["health"]) == 0.0
        else:
            assert ruls[-1] > 0
    if split == "test":
        _, test_rul = read(out / "test_rul.csv")
        assert {r["unit"]: float(r["rul"]) for r in test_rul} == {
            u: float(rows[-1]["rul"]) for u, rows in units.items()
        }


def test_units_are_numbered_apart_lives_differ_and_seed_repeats(dataset: tuple[Path, Scenario], tmp_path: Path) -> None:
    out, scenario = dataset
    _, train = read(out / "train_truth.csv")
    _, test = read(out / "test_truth.csv")
    train_units = {r["unit"] for r in train}
    assert train_units == {str(i) for i in range(1, 9)}
    assert {r["unit"] for r in test} == {str(i) for i in range(9, 15)}
    lives = {u: max(float(r["time"]) for r in train if r["unit"] == u) for u in train_units}
    assert max(lives.values()) > 2 * min(lives.values())
    _, conditions = read(out / "train.csv")
    assert len({r["condition"] for r in conditions}) >= 6
    again = write_offline_dataset(scenario, tmp_path, units=8, seed=3, test_units=6)
    assert again.train.read_bytes() == (out / "train.csv").read_bytes()
    assert again.test_rul.read_bytes() == (out / "test_rul.csv").read_bytes()
