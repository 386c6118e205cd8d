"""Figures of remaining-life predictions against the truth: the PHM08 score and cross-validated summaries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analytics._base import Vector

__all__ = ["CvPredictions", "cv_figures", "cv_line", "phm08_score"]


def phm08_score(error: Vector) -> float:
    """PHM08 challenge score, sum over units of exp(-d/13)-1 for early (d<0) and exp(d/10)-1 for late
    predictions, d = predicted - true RUL in the challenge's unit (late costs more)."""
    d = np.asarray(error, dtype=np.float64)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(np.minimum(d, 700.0) / 10.0) - 1.0)))


@dataclass
class CvPredictions:
    """Held-out predictions: per (unit, cut), the true remaining life, the prediction and its interval."""

    true: Vector
    pred: Vector
    lower: Vector
    upper: Vector
    units: int


def cv_figures(p: CvPredictions, *, prefix: str = "") -> dict[str, float]:
    """RMSE, MAE, mean bias (positive: late), PHM08 score (d in the time column's unit, as the PHM08 challenge
    counts cycles; the sum over one prediction per unit), the share of late predictions, interval coverage, the
    share of lower bounds at or below the truth, and the mean interval width."""
    err = p.pred - p.true
    n = len(err)
    per = phm08_score(err) / n if n else math.nan
    figures = {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
        "phm08": per * p.units,
        "phm08_per_unit": per,
        "late_share": float(np.mean(err > 0)),
        "coverage": float(np.mean((p.lower <= p.true) & (p.true <= p.upper))),
        "lower_below_truth": float(np.mean(p.lower <= p.true)),
        "width_mean": float(np.mean(p.upper - p.lower)),
    }
    return {prefix + k: round(v, 4) for k, v in figures.items()}


def cv_line(group: str, summary: Mapping[str, object], time: str) -> str:
    """One line of a fitted model's cross-validated figures (:meth:`analytics.GbmRul.summary`), as `rul fit`
    prints them."""
    cv = summary.get("cross_validated")
    if not isinstance(cv, Mapping) or "rmse" not in cv:
        return f"{group}: no cross-validated figures (too few units)"
    return (
        f"{group}: cross-validated on {cv['units']:.0f} held-out units ({cv['cuts_per_unit']:.0f} random cuts each): "
        f"RMSE {cv['rmse']:.2f}, PHM08 {cv['phm08']:,.0f} (d in {time}), late {cv['late_share']:.0%}, "
        f"interval coverage {cv['coverage']:.2f}, lower bound <= truth {cv['lower_below_truth']:.2f}; "
        + (f"target capped at {cap}" if (cap := summary.get("rul_cap")) is not None else "target not capped")
        + f", shifted {summary['early_shift']} early"
    )
