"""Offline mode with hourly means: rows shaped like what the analytics worker gives registered models (issue 13)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from simulators import MachineGroup, Scenario, write_offline_dataset


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_row_is_the_mean_of_its_hours_samples(tmp_path: Path) -> None:
    scenario = Scenario(groups=(MachineGroup("centrifugal_pump", 1),), fault_rate_per_day=0.0, offline_max_life_h=300.0)
    snap, mean = tmp_path / "snap", tmp_path / "mean"
    write_offline_dataset(scenario, snap, units=3, seed=5, test_units=0)
    write_offline_dataset(scenario, mean, units=3, seed=5, test_units=0, samples_per_row=12)
    a, b = _rows(snap / "train.csv"), _rows(mean / "train.csv")
    ta, tb = _rows(snap / "train_truth.csv"), _rows(mean / "train_truth.csv")
    # The same units, lives, times and remaining life: only the sensor values are hourly means.
    assert [(r["unit"], r["time"]) for r in a] == [(r["unit"], r["time"]) for r in b]
    assert [r["rul"] for r in ta] == [r["rul"] for r in tb]
    assert tb[-1]["rul"] == "0.0"
    # Twelve samples a row: the noise from one hour to the next shrinks (about 1/sqrt(12) of a snapshot's); the
    # median change skips the hours where the operating condition changed.
    for sensor in ("flow", "discharge_pressure"):
        early = [i for i, r in enumerate(ta) if float(r["health"]) > 0.95]
        xa = np.diff([float(a[i][sensor]) for i in early])
        xb = np.diff([float(b[i][sensor]) for i in early])
        ma, mb = np.median(np.abs(xa)), np.median(np.abs(xb))
        assert mb < 0.6 * ma, (sensor, mb, ma)


def test_a_sensor_fault_in_any_sample_labels_the_hour(tmp_path: Path) -> None:
    scenario = Scenario(groups=(MachineGroup("centrifugal_pump", 1),), fault_rate_per_day=3.0, offline_max_life_h=300.0)
    write_offline_dataset(scenario, tmp_path, units=4, seed=2, test_units=0, samples_per_row=12)
    labels = [r["fault_type"] for r in _rows(tmp_path / "train_truth.csv")]
    kinds = set(labels) - {"", "degradation"}
    assert kinds, "sensor faults show in the hourly rows' labels"
    assert all(r["fault"] == ("1" if r["fault_type"] else "0") for r in _rows(tmp_path / "train_truth.csv"))
