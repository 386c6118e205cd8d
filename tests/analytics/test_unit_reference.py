"""Per-unit references and row-to-row changes: what they remove, what they keep, and the fault they make visible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from analytics import AnomalyModel, read_table
from analytics._unit_reference import UnitReference, row_changes
from tests.analytics import synth
from wearline.cli import app

RATED = [0.7, 1.3, 0.85, 1.15, 1.0, 0.75, 1.25, 0.9]  # each machine's rated current, as a share of the fleet's


def _unit(n: int, seed: int, rated: float, step: tuple[int, int, float] | None = None) -> np.ndarray:
    """synth.healthy rows whose current scales with the machine's rating; optionally a step on the current."""
    x = synth.healthy(n, seed)
    x[:, 2] *= rated
    if step is not None:
        lo, hi, size = step
        x[lo:hi, 2] += size
    return x


def _write_fleet(path: Path, units: list[np.ndarray]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", *synth.SENSORS, "cond"])
        for u, rows in enumerate(units):
            for r in rows:
                w.writerow([f"m{u}", *(f"{v:.5f}" for v in r)])
    return path


def test_reference_removes_each_units_offset_and_keeps_its_changes() -> None:
    rng = np.random.default_rng(0)
    codes = np.zeros(200, dtype=np.int64)
    a = 10.0 + 0.1 * rng.normal(size=(200, 2))
    b = a + np.array([5.0, -3.0])  # same machine type, other rating
    b[150:, 0] += 1.0  # a fault after the reference rows
    ref = UnitReference(rows=50).fit([(a, codes), (b, codes)])
    ta, tb = ref.transform(a, codes), ref.transform(b, codes)
    assert np.allclose(np.median(ta[:50], axis=0), np.median(tb[:50], axis=0), atol=0.05)
    assert np.median(tb[150:, 0]) - np.median(ta[150:, 0]) > 0.9  # the fault is kept
    assert abs(np.median(tb[:150, 1]) - np.median(ta[:150, 1])) < 0.05


def test_a_short_fault_in_the_reference_rows_does_not_move_it_and_missing_stays_missing() -> None:
    codes = np.zeros(100, dtype=np.int64)
    x = np.full((100, 2), 5.0)
    ref = UnitReference(rows=40).fit([(x, codes)])
    y = x + 2.0
    y[3:6, 0] = 500.0  # a spike of three rows among the forty
    y[50, 1] = np.nan
    y[:, 1][:40] = np.nan  # never reported during the reference rows: not shifted
    out = ref.transform(y, codes)
    assert np.allclose(out[40:, 0], 5.0)
    assert np.isnan(out[50, 1])
    assert out[60, 1] == 7.0


def test_reference_levels_are_per_regime() -> None:
    codes = np.repeat([0, 1], 50)
    x = np.where(codes[:, None] == 0, 10.0, 20.0) * np.ones((100, 1))
    ref = UnitReference(rows=100).fit([(x, codes)])
    assert ref.level_ is not None
    assert ref.level_[:, 0].tolist() == [10.0, 20.0]
    # A unit 3 higher in both regimes comes out at the fleet's level in each.
    assert np.allclose(ref.transform(x + 3.0, codes), x)


def test_row_changes_skip_regime_switches_and_the_warmup() -> None:
    x = np.array([[1.0], [2.0], [4.0], [7.0], [20.0], [22.0], [np.nan], [25.0]])
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = row_changes(x, codes, warmup=2)
    assert out[:, 0].tolist()[:6] == [0.0, 0.0, 2.0, 3.0, 0.0, 2.0]  # rows 0-1 warm-up, row 4 a new regime
    assert np.isnan(out[6, 0])  # the sensor did not report
    assert np.isnan(out[7, 0])  # no previous value to change from


def test_unit_reference_finds_a_step_hidden_in_the_fleets_spread(tmp_path: Path) -> None:
    train = _write_fleet(tmp_path / "train.csv", [_unit(600, s, r) for s, r in enumerate(RATED)])
    # A machine rated between the others; its current steps up by a sixth of the fleet's spread of currents.
    step = (400, 460, 6.0)
    test_rows = _unit(600, 99, 1.05, step)
    data = read_table(_write_fleet(tmp_path / "test.csv", [test_rows]))
    in_step = np.zeros(600, dtype=bool)
    in_step[step[0] : step[1]] = True
    flags = {}
    for unit in ("unit", None):
        model = AnomalyModel.fit(read_table(train), condition=["cond"], unit=unit, persistence=3)
        _, f = model.score(data)
        flags[unit] = f
    assert flags["unit"][in_step].mean() > 0.8, "the reference should flag the step"
    # The step's falling edge, and the window rule's mean over the next dozen rows, are part of the fault.
    after = np.zeros(600, dtype=bool)
    after[step[1] : step[1] + 13] = True
    assert flags["unit"][~in_step & ~after].mean() < 0.01
    assert flags[None][in_step].mean() < 0.2, "without a reference the step hides in the spread of ratings"
    model = AnomalyModel.fit(read_table(train), condition=["cond"], unit="unit", persistence=3)
    # Mahalanobis shares a deviation between correlated sensors (current and flow both follow the load): the
    # stepped sensor is among the three named.
    drivers = model.drivers(data, top=3)
    assert all("current" in d for d, hit in zip(drivers, in_step, strict=True) if hit)


def test_anomaly_cli_with_a_unit_column(tmp_path: Path) -> None:
    train = _write_fleet(tmp_path / "train.csv", [_unit(400, s, r) for s, r in enumerate(RATED)])
    test = _write_fleet(tmp_path / "test.csv", [_unit(400, 50, 1.0), _unit(400, 51, 0.8, (300, 340, 6.0))])
    model = tmp_path / "m.model"
    runner = CliRunner()
    fit = runner.invoke(
        app, ["anomaly", "fit", "--train", str(train), "--unit", "unit", "--condition", "cond", "--out", str(model)]
    )
    assert fit.exit_code == 0, fit.output
    meta = json.loads((tmp_path / "m.model.json").read_text())
    assert meta["unit"] == "unit"
    assert meta["changes"] is True
    scored = runner.invoke(app, ["anomaly", "score", "--model", str(model), "--data", str(test)])
    assert scored.exit_code == 0, scored.output
    rows = list(csv.DictReader(scored.output.splitlines()))
    flags = np.array([int(r["flag"]) for r in rows])
    assert flags[:400].sum() < 8  # the healthy machine
    assert flags[400 + 300 : 400 + 340].mean() > 0.8
    assert all("current" in r["sensors"].split(";") for r in rows[400 + 300 : 400 + 340] if r["flag"] == "1")
    missing = runner.invoke(app, ["anomaly", "score", "--model", str(model), "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
