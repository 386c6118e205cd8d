"""Remaining life that is seldom late, and its cross-validated figures (issue 13 items 2, 3 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from analytics import GbmRul, evaluate_cmapss
from analytics._rul_cv import CMAPSS_COLUMNS
from analytics._rul_gbm import _early_shift
from tests.analytics import synth
from wearline.cli import app

runner = CliRunner()
SMALL = {"iterations": 60, "folds": 4}
"""Fewer trees and folds than the defaults keep a cross-validation of 15 units to seconds."""


def test_the_early_shift_leans_early_when_late_costs_more() -> None:
    # Symmetric errors: the weighted squared error (late costs 13/10 more) is lowest a little early of them.
    err = np.random.default_rng(0).normal(0.0, 20.0, size=2_000)
    shift = _early_shift(err, late_cost=13.0 / 10.0)
    assert 0 < shift < 0.2 * 20.0

    def cost(s: float) -> float:
        return float(np.sum(np.where(err > s, 13.0 / 10.0, 1.0) * (err - s) ** 2))

    grid = np.linspace(-10.0, 10.0, 4001)
    assert abs(shift - grid[int(np.argmin([cost(s) for s in grid]))]) <= 0.005, "not the weighted squares' minimum"
    # Equal costs: the mean error, as plain squared error would have it (never later than the model).
    assert abs(_early_shift(err, late_cost=1.0) - max(float(np.mean(err)), 0.0)) < 1e-9
    # Errors that are already early need no more; no errors, no shift.
    assert _early_shift(err - 60.0, late_cost=13.0 / 10.0) == 0.0
    assert _early_shift(np.zeros(0), late_cost=13.0 / 10.0) == 0.0


def test_cap_shift_and_longest_life_bound_the_predictions() -> None:
    train = synth.runs(16, 7)
    est = GbmRul(iterations=60, folds=4, seed=1).fit(train, ["a", "b", "c", "d"])
    summary = est.summary()
    lives = [r.time[-1] - r.time[0] for r in train]
    assert summary["rul_cap"] == round(0.6 * float(np.mean(lives)), 3)
    assert summary["longest_life"] == round(max(lives), 3)
    cuts = [synth.truncate(r, s) for r, s in zip(synth.runs(30, 8), np.linspace(0.05, 0.95, 30), strict=True)]
    preds = est.predict([c for c, _ in cuts])
    truth = np.array([t for _, t in cuts])
    ages = np.array([c.time[-1] - c.time[0] for c, _ in cuts])
    assert all(p.rul <= est.cap_ for p in preds), "no prediction above the cap the model states"
    # No interval is wider than the longest life seen in training (trend's reached 2.7 times it), and none reaches
    # past it unless the unit is already older than that (then the upper bound is the prediction itself).
    assert all(p.upper - p.lower <= max(lives) for p in preds)
    assert all(p.upper + a <= max(lives) + 1e-6 or p.upper == p.rul for p, a in zip(preds, ages, strict=True))
    assert sum(p.upper + a <= max(lives) + 1e-6 for p, a in zip(preds, ages, strict=True)) >= 25
    assert np.mean([p.lower <= t for p, t in zip(preds, truth, strict=True)]) >= 0.9


def test_eval_cmapss_cross_validates_by_unit_and_beats_the_plain_capped_boosting_on_phm08(tmp_path: Path) -> None:
    synth.write_cmapss(tmp_path / "train_FD902.txt.gz", units=15, seed=3)
    lines: list[str] = []
    out = evaluate_cmapss(tmp_path, folds=3, cuts=3, seed=0, params=SMALL, echo=lines.append)
    f = out["files"]["FD902"]
    print("\n".join(lines))
    assert f["rows"] > 15 * 100
    assert f["phm08"] < f["baseline_phm08"], "being late costs more: the early-leaning model must score lower"
    assert f["lower_below_truth"] >= 0.9
    assert 0.0 < f["coverage"] <= 1.0
    assert f["rmse"] < 1.1 * f["baseline_rmse"]
    assert lines[0].split()[:4] == ["file", "units", "model", "RMSE"]


def test_eval_cmapss_repeats_report_the_mean_of_independent_draws_and_their_spread(tmp_path: Path) -> None:
    synth.write_cmapss(tmp_path / "train_FD905.txt.gz", units=12, seed=5)
    single = [evaluate_cmapss(tmp_path, folds=3, cuts=2, seed=s, params=SMALL, echo=lambda _: None) for s in (4, 5)]
    lines: list[str] = []
    out = evaluate_cmapss(tmp_path, folds=3, cuts=2, repeats=2, seed=4, params=SMALL, echo=lines.append)
    print("\n".join(lines))
    f = out["files"]["FD905"]
    rmse = [s["files"]["FD905"]["rmse"] for s in single]
    assert rmse[0] != rmse[1], "two seeds drew the same folds and cuts"
    # Each repeat is exactly the single run of its seed, and the headline figures are their mean.
    assert [f["by_seed"][s]["rmse"] for s in ("4", "5")] == rmse
    assert f["rmse"] == round((rmse[0] + rmse[1]) / 2, 4)
    assert f["baseline_phm08"] == round(sum(s["files"]["FD905"]["baseline_phm08"] for s in single) / 2, 4)
    assert f["rmse_sd"] == round(abs(rmse[0] - rmse[1]) / 2**0.5, 4)
    assert out["repeats"] == 2
    # The same figures as a single run, plus the spread: nothing the baseline has no interval for.
    assert set(f) == set(single[0]["files"]["FD905"]) | {"rmse_sd", "phm08_sd", "by_seed"}
    assert set(f["by_seed"]["4"]) == set(f) - {"rmse_sd", "phm08_sd", "by_seed", "rows", "seconds"}
    assert any(line.split()[1:5] == ["RMSE", "by", "seed", "4-5:"] for line in lines), lines
    assert lines[-1].startswith("mean of 2 repeats (seeds 4-5)")
    result = runner.invoke(app, ["eval", "--cmapss", str(tmp_path), "--repeats", "0"])
    assert result.exit_code == 2
    assert "--repeats" in result.output


def test_eval_cmapss_refuses_a_folder_without_such_files_and_two_sources(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--cmapss", str(tmp_path)])
    assert result.exit_code == 2
    assert "no train_*.txt or train_*.txt.gz run-to-failure files" in result.output
    result = runner.invoke(app, ["eval", "--cmapss", str(tmp_path), "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "give one of --data" in result.output
    synth.write_cmapss(tmp_path / "train_FD903.txt.gz", units=5, seed=1)
    result = runner.invoke(app, ["eval", "--cmapss", str(tmp_path)])
    assert result.exit_code == 2
    assert "5 units are too few for 5 folds" in result.output


def test_rul_fit_states_its_cap_and_reports_cross_validated_figures(tmp_path: Path) -> None:
    data = tmp_path / "train_FD904.txt.gz"
    synth.write_cmapss(data, units=10, seed=4)
    model = tmp_path / "r.model"
    cols = ",".join(CMAPSS_COLUMNS)
    args = ["rul", "fit", "--train", str(data), "--columns", cols, "--unit", "unit", "--time", "cycle"]
    result = runner.invoke(app, [*args, "--condition", "setting1,setting2,setting3", "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert "cross-validated on 10 held-out units" in result.output
    group = json.loads((tmp_path / "r.model.json").read_text())["groups"]["all"]
    cv = group["cross_validated"]
    assert {"rmse", "phm08", "coverage", "lower_below_truth", "late_share"} <= set(cv)
    assert cv["units"] == 10
    assert 0 < group["rul_cap"] < group["mean_life_hours"]
    assert group["early_shift"] >= 0
    uncapped = tmp_path / "u.model"
    result = runner.invoke(app, [*args, "--cap-share", "0", "--out", str(uncapped)])
    assert result.exit_code == 0, result.output
    assert "target not capped" in result.output
    assert json.loads((tmp_path / "u.model.json").read_text())["groups"]["all"]["rul_cap"] is None
    result = runner.invoke(app, [*args, "--model", "trend", "--out", str(model)])
    assert result.exit_code == 2
    assert "trend was removed: it never beat gbm" in result.output
