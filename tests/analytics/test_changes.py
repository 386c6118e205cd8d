"""Row-to-row changes: what they keep, what they skip, and the faults they make visible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from analytics import AnomalyModel, read_table
from analytics._changes import row_changes
from tests.analytics import synth
from wearline.cli import app

RATED = [0.7, 1.3, 0.85, 1.15, 1.0, 0.75, 1.25, 0.9]  # each machine's rated current, as a share of the fleet's


def _unit(n: int, seed: int, rated: float, burst: tuple[int, int, float] | None = None) -> np.ndarray:
    """synth.healthy rows whose current scales with the machine's rating; optionally a burst of noise of the
    given standard deviation on the current."""
    x = synth.healthy(n, seed)
    x[:, 2] *= rated
    if burst is not None:
        lo, hi, size = burst
        x[lo:hi, 2] += size * np.random.default_rng(seed + 1).normal(size=hi - lo)
    return x


def _write_fleet(path: Path, units: list[np.ndarray]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", *synth.SENSORS, "cond"])
        for u, rows in enumerate(units):
            for r in rows:
                w.writerow([f"m{u}", *(f"{v:.5f}" for v in r)])
    return path


def test_row_changes_skip_regime_switches_and_the_warmup() -> None:
    x = np.array([[1.0], [2.0], [4.0], [7.0], [20.0], [22.0], [np.nan], [25.0]])
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = row_changes(x, codes, warmup=2)
    assert out[:, 0].tolist()[:6] == [0.0, 0.0, 2.0, 3.0, 0.0, 2.0]  # rows 0-1 warm-up, row 4 a new regime
    assert np.isnan(out[6, 0])  # the sensor did not report
    assert np.isnan(out[7, 0])  # no previous value to change from


def test_changes_find_a_burst_of_noise_hidden_in_the_fleets_spread(tmp_path: Path) -> None:
    train = _write_fleet(tmp_path / "train.csv", [_unit(600, s, r) for s, r in enumerate(RATED)])
    # A machine rated between the others; its current gets noisy by a third of the fleet's spread of currents.
    burst = (400, 430, 4.0)
    data = read_table(_write_fleet(tmp_path / "test.csv", [_unit(600, 99, 1.05, burst)]))
    in_burst = np.zeros(600, dtype=bool)
    in_burst[burst[0] : burst[1]] = True
    # The window rule's mean over the dozen rows after the burst still holds it.
    after = np.zeros(600, dtype=bool)
    after[burst[1] : burst[1] + 13] = True
    flags = {}
    for changes in (True, False):
        model = AnomalyModel.fit(read_table(train), condition=["cond"], unit="unit", changes=changes)
        flags[changes] = model.score(data)[1]
    assert flags[True][in_burst].mean() > 0.6, "changes should flag most of the burst"
    assert flags[True][~in_burst & ~after].mean() < 0.01
    assert flags[False][in_burst].mean() < 0.3, "without changes the burst hides in the spread of ratings"
    model = AnomalyModel.fit(read_table(train), condition=["cond"], unit="unit")
    # A sensor's change counts towards that sensor. Mahalanobis shares a deviation between correlated sensors
    # (current and flow both follow the load), so the noisy one is among the three named, not always first.
    # Rows flagged by the persistence or window rule may score low themselves: look at the rows above threshold.
    scores = model.score(data)[0]
    above = in_burst & (scores > (model.detector.threshold or 0.0))
    named = ["current" in d for d, a in zip(model.drivers(data), above, strict=True) if a]
    assert len(named) > 10
    assert all(named)


def test_anomaly_cli_with_a_unit_column(tmp_path: Path) -> None:
    train = _write_fleet(tmp_path / "train.csv", [_unit(400, s, r) for s, r in enumerate(RATED)])
    test = _write_fleet(tmp_path / "test.csv", [_unit(400, 50, 1.0), _unit(400, 51, 0.8, (300, 340, 4.0))])
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
    assert flags[400 + 300 : 400 + 340].mean() > 0.5
    named = [r["sensors"].split(";")[0] for r in rows[400 + 300 : 400 + 340] if r["flag"] == "1"]
    assert named.count("current") > len(named) / 2, named
    missing = runner.invoke(app, ["anomaly", "score", "--model", str(model), "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
    unknown = runner.invoke(app, ["anomaly", "fit", "--train", str(train), "--detector", "lof", "--out", str(model)])
    assert unknown.exit_code == 2
    assert "'lof'" in unknown.output
    assert "knn" in unknown.output, "the error lists the detectors there are"
