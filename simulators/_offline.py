"""Offline mode: run-to-failure histories as CSV files, for training and scoring models without a broker.

The column contract (``docs/simulator.md``) is fixed; other code reads these files by column name.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from simulators._fleet import FAULT_LABELS, Fleet
from simulators._scenario import MachineGroup, Scenario, load_scenario
from wearline.progress import SILENT, Bar

__all__ = ["TRAIN_COLUMNS", "TRUTH_COLUMNS", "OfflineDataset", "write_offline_dataset"]

TRAIN_COLUMNS = ("unit", "time", "machine_type", "condition")
"""The leading columns of train.csv and test.csv; the sensor columns follow."""
TRUTH_COLUMNS = ("unit", "time", "health", "rul", "fault", "fault_type", "failure_mode")


@dataclass(frozen=True)
class OfflineDataset:
    """The files one call wrote, and what is in them."""

    train: Path
    train_truth: Path
    test: Path
    test_rul: Path
    test_truth: Path
    sensors: tuple[str, ...]
    train_units: int
    test_units: int
    train_rows: int
    test_rows: int


@dataclass
class _Unit:
    unit: int
    mtype: str
    sensors: tuple[str, ...]
    rows: list[tuple[float, str, NDArray[np.float64], float, float, int, str]]


def _allocate(groups: Sequence[MachineGroup], units: int) -> list[int]:
    """Split ``units`` over the groups in proportion to their counts (largest remainder)."""
    weights = np.array([max(g.count, 0) for g in groups], dtype=float)
    if weights.sum() == 0:
        weights[:] = 1
    exact = weights / weights.sum() * units
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out))[: units - out.sum()]:
        out[i] += 1
    return [int(x) for x in out]


def _simulate_units(
    scenario: Scenario, units: int, seed: int, first_id: int, *, bar: Bar, what: str, samples_per_row: int = 1
) -> list[_Unit]:
    counts = _allocate(scenario.groups, units)
    groups = tuple(
        MachineGroup(g.type, c, g.line, g.name, g.conditions, "continuous", g.life_scale, g.initial_age)
        for g, c in zip(scenario.groups, counts, strict=True)
        if c > 0
    )
    sc = scenario.replace(groups=groups, faults=(), maintenance_interval_h=0.0)
    step_s = sc.offline_step_h * 3600
    fleet = Fleet(sc, seed=seed, offline=True, step_s=step_s)
    fail = fleet.failure_times_s()
    out = [_Unit(first_id + i, fleet.types[i].name, fleet.types[i].sensor_names, []) for i in range(len(fleet.paths))]
    last_k = math.ceil(float(fail.max()) / step_s - 1e-9)
    bar.phase(f"simulating {len(out)} {what} units", total=last_k + 1)
    for k in range(last_k + 1):
        bar.advance()
        t = k * step_s
        # With several samples per row, the row is their mean over the step that ends at t (what the worker's
        # hourly rollup gives a model), its truth that of the step's end and its fault label any fault within.
        times = (
            [t]
            if k == 0
            else [t - (samples_per_row - 1 - j) * step_s / samples_per_row for j in range(samples_per_row)]
        )
        steps = [fleet.step(ts) for ts in times]
        for i, fr in enumerate(steps[-1]):
            conds = fr.mtype.conditions
            modes = fr.mtype.modes
            values = fr.values
            code = fr.fault_code
            if len(steps) > 1:
                stack = np.stack([frames[i].values for frames in steps])
                seen = np.isfinite(stack)
                count = seen.sum(axis=0)
                values = np.where(count > 0, np.where(seen, stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
                codes = np.stack([frames[i].fault_code for frames in steps])
                # A sensor fault in any sample labels the row, and wins over a degradation as in a snapshot row.
                sensor = np.where((codes > 0) & (codes < len(FAULT_LABELS) - 1), codes, 0).max(axis=0)
                code = np.where(sensor > 0, sensor, codes.max(axis=0))
            alive = np.nonzero(t <= fail[fr.machines])[0]
            for r in alive.tolist():
                out[int(fr.machines[r])].rows.append(
                    (
                        t / 3600,
                        conds[fr.condition[r]].name,
                        values[r],
                        float(fr.health[r]),
                        float(fr.rul_h[r]),
                        int(code[r]),
                        modes[fr.failure_mode[r]].name,
                    )
                )
    return out


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.5g}" if abs(v) >= 1e5 else f"{round(v, 4)}"


def _write(
    path: Path,
    truth_path: Path,
    units: Sequence[_Unit],
    sensors: Sequence[str],
    cuts: dict[int, int] | None,
    *,
    bar: Bar,
) -> int:
    bar.phase(f"writing {path.name}", total=len(units))
    rows = 0
    with path.open("w", newline="") as f, truth_path.open("w", newline="") as tf:
        w, tw = csv.writer(f), csv.writer(tf)
        w.writerow([*TRAIN_COLUMNS, *sensors])
        tw.writerow(TRUTH_COLUMNS)
        for u in units:
            where = [u.sensors.index(s) if s in u.sensors else -1 for s in sensors]
            history = u.rows if cuts is None else u.rows[: cuts[u.unit] + 1]
            for time_h, cond, values, health, rul, code, mode in history:
                t = f"{round(time_h, 6)}"
                w.writerow([u.unit, t, u.mtype, cond, *("" if j < 0 else _fmt(float(values[j])) for j in where)])
                tw.writerow([u.unit, t, round(health, 6), round(rul, 6), int(code > 0), FAULT_LABELS[code], mode])
                rows += 1
            bar.advance()
    return rows


def write_offline_dataset(
    scenario: Scenario | Path | str,
    out_dir: Path,
    *,
    units: int,
    seed: int,
    test_units: int | None = None,
    fault_rate_per_day: float | None = None,
    samples_per_row: int = 1,
    bar: Bar = SILENT,
) -> OfflineDataset:
    """Simulate ``units`` run-to-failure histories (train) and ``test_units`` more (default: as many) cut short at
    a random point before failure (test), and write them as CSV files under ``out_dir``.

    ``scenario`` is a :class:`Scenario` or a TOML file; its machine groups set the mix of types (units are split
    in proportion to the group counts), its ``[offline]`` table the step and life bounds. Train units are numbered
    ``1..units``, test units continue from there. ``fault_rate_per_day`` overrides the scenario's random sensor
    faults. With ``samples_per_row`` N > 1 each row is the mean of N samples over the step it ends (the hourly means
    the analytics worker gives registered models), instead of one snapshot. The same arguments always write the
    same files. ``bar`` shows the simulation's and the writing's progress.
    """
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(Path(scenario))
    if fault_rate_per_day is not None:
        sc = sc.replace(fault_rate_per_day=fault_rate_per_day)
    if units < 1:
        raise ValueError(f"units must be >= 1, got {units}")
    if samples_per_row < 1:
        raise ValueError(f"samples per row must be >= 1, got {samples_per_row}")
    n_test = units if test_units is None else test_units
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).generate_state(3)
    n = samples_per_row
    train = _simulate_units(sc, units, int(seeds[0]), 1, bar=bar, what="train", samples_per_row=n)
    test = (
        _simulate_units(sc, n_test, int(seeds[1]), units + 1, bar=bar, what="test", samples_per_row=n) if n_test else []
    )
    sensors: list[str] = []
    for u in (*train, *test):
        sensors.extend(s for s in u.sensors if s not in sensors)
    cut_rng = np.random.default_rng(seeds[2])
    cuts: dict[int, int] = {}
    for u in test:
        last = len(u.rows) - 1  # the failure row
        lo, hi = max(1, int(0.1 * last)), max(1, int(0.9 * last))
        cuts[u.unit] = min(int(cut_rng.integers(lo, hi + 1)), max(last - 1, 0))
    ds = OfflineDataset(
        train=out_dir / "train.csv",
        train_truth=out_dir / "train_truth.csv",
        test=out_dir / "test.csv",
        test_rul=out_dir / "test_rul.csv",
        test_truth=out_dir / "test_truth.csv",
        sensors=tuple(sensors),
        train_units=len(train),
        test_units=len(test),
        train_rows=0,
        test_rows=0,
    )
    train_rows = _write(ds.train, ds.train_truth, train, sensors, None, bar=bar)
    test_rows = _write(ds.test, ds.test_truth, test, sensors, cuts, bar=bar)
    with ds.test_rul.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("unit", "rul"))
        for u in test:
            w.writerow([u.unit, round(u.rows[cuts[u.unit]][4], 6)])
    return OfflineDataset(**{**ds.__dict__, "train_rows": train_rows, "test_rows": test_rows})
