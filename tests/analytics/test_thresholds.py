"""Thresholds for a stated false-alarm rate: near the target on held-out normal rows, short fit window or long."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from analytics import Mahalanobis, ModelError, Thresholded, clone
from analytics._base import Matrix
from analytics._tail import MIN_TAIL, READ_OFF, tail_threshold
from wearline.cli import app

TARGET = 0.001
NAMES = ["a", "b", "c", "d"]


def _gaussian(n: int, rng: np.random.Generator, mix: Matrix) -> Matrix:
    return np.asarray(rng.normal(size=(n, len(NAMES))) @ mix, dtype=np.float64)


@pytest.mark.parametrize("rows", [300, 1000, 5000])
def test_false_alarms_on_new_normal_rows_stay_near_the_target(rows: int) -> None:
    # The 99.9th percentile of 300 scores is about their largest, which 1 new row in 300 exceeds: 3.7 x the
    # target here before the tail fit, 0.74 x with it (1,000 rows: 0.77 x); from 5,000 rows it is read off (1.0 x).
    rates = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        mix = np.eye(len(NAMES)) + 0.3 * rng.normal(size=(len(NAMES), len(NAMES)))
        det = Mahalanobis(seed=seed)
        det.set_features(NAMES)
        wrapped = Thresholded(det, target=TARGET).calibrate(_gaussian(rows, rng, mix))
        assert wrapped.method == ("pot" if rows * TARGET < READ_OFF else "quantile")
        assert wrapped.threshold is not None
        rates.append(float((det.score_many(_gaussian(20_000, rng, mix)) > wrapped.threshold).mean()))
    ratio = float(np.mean(rates)) / TARGET
    print(f"{rows} fit rows: false-alarm rate per seed {[f'{r:.4%}' for r in rates]}, mean {ratio:.2f} x target")
    assert 0.4 < ratio < 2.0


def _pareto(shape: float, rows: int, seed: int) -> Matrix:
    u = np.random.default_rng(seed).uniform(size=rows)
    return -np.log(u) if shape == 0 else (u**-shape - 1) / shape


def _exceed(shape: float, t: float) -> float:
    return float(np.exp(-t) if shape == 0 else (1 + shape * t) ** (-1 / shape))


@pytest.mark.parametrize(("shape", "rows"), [(0.0, 300), (0.3, 300), (0.0, 5000)])
def test_the_tail_fit_finds_the_quantile_of_known_tails(shape: float, rows: int) -> None:
    # Exceedance of each fitted threshold under the true distribution (exponential, or a heavy Pareto-type tail),
    # averaged over 100 samples: the empirical quantile of 300 rows gives 4.1 x / 4.0 x the target, this 0.72 x / 1.9 x.
    exceed = [_exceed(shape, tail_threshold(_pareto(shape, rows, seed), TARGET).threshold) for seed in range(100)]
    assert 0.5 < np.mean(exceed) / TARGET < 2.5


def test_too_few_rows_for_a_tail_fall_back_to_the_largest_score() -> None:
    scores = np.random.default_rng(0).exponential(size=2 * MIN_TAIL - 1)
    fit = tail_threshold(scores, TARGET)
    assert (fit.method, fit.threshold) == ("max", float(scores.max()))
    # Scores that stop varying at the top leave nothing to extrapolate.
    flat = tail_threshold(np.r_[np.zeros(100), np.ones(100)], TARGET)
    assert (flat.method, flat.threshold) == ("max", 1.0)
    # A target within reach of the data is read off it.
    assert tail_threshold(np.arange(10_000.0), 0.05).method == "quantile"

    det = Mahalanobis()
    det.set_features(NAMES)
    wrapped = Thresholded(det).calibrate(np.random.default_rng(1).normal(size=(40, len(NAMES))))
    assert wrapped.method == "max"


def test_the_target_is_a_rate_and_older_models_still_clone() -> None:
    with pytest.raises(ModelError, match="rate per row"):
        Thresholded(Mahalanobis(), target=1.0)
    old = Thresholded(Mahalanobis(), threshold=2.0)
    del old.target, old.method  # a model saved before the target existed (it had a quantile)
    assert clone(old).target == TARGET


def test_anomaly_fit_takes_the_target_and_records_how_the_threshold_was_set(tmp_path: Path) -> None:
    rows = np.random.default_rng(2).normal(size=(300, 3))
    train = tmp_path / "normal.csv"
    train.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in r) for r in rows) + "\n")
    meta: dict[str, dict[str, Any]] = {}
    for target in ("0.001", "0.05"):
        out = tmp_path / f"m{target}.model"
        args = ["anomaly", "fit", "--train", str(train), "--detector", "mahalanobis", "--target", target]
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        meta[target] = json.loads((tmp_path / f"m{target}.model.json").read_text())
    # 300 rows hold 0.3 expected exceedances of one in 1,000 (a tail fit) and 15 of one in 20 (read off).
    assert (meta["0.001"]["threshold_method"], meta["0.05"]["threshold_method"]) == ("pot", "quantile")
    assert meta["0.05"]["false_alarm_target"] == 0.05
    assert meta["0.05"]["threshold"] < meta["0.001"]["threshold"]
    bad = CliRunner().invoke(app, ["anomaly", "fit", "--train", str(train), "--target", "1", "--out", str(out)])
    assert bad.exit_code != 0
