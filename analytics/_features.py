"""Window features for RUL: per-regime normalised sensors, their trailing mean and slope, and the unit's age."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analytics._base import Matrix, RunHistory, Vector
from analytics._regime import RegimeScaler

__all__ = ["window_features"]


def window_features(run: RunHistory, scaler: RegimeScaler, window: int) -> Matrix:
    """One feature row per time of ``run``: [age, mean of each sensor over the last ``window`` rows, slope of
    each per hour over the same rows] (fewer rows at the start). Missing values carry forward; never seen is 0."""
    z = scaler.transform(run.values, run.condition)
    z = _ffill0(z)
    origin = run.start if run.start is not None else float(run.time[0])
    t = run.time - run.time[0]
    age = run.time - origin
    n = len(t)
    csum = _cum(z)
    tsum = _cum(t[:, None])
    ttsum = _cum((t**2)[:, None])
    tzsum = _cum(t[:, None] * z)
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - window, 0)
    cnt = (hi - lo)[:, None].astype(np.float64)
    sz = csum[hi] - csum[lo]
    st = tsum[hi] - tsum[lo]
    stt = ttsum[hi] - ttsum[lo]
    stz = tzsum[hi] - tzsum[lo]
    mean = sz / cnt
    var_t = stt - st**2 / cnt
    slope = np.where(var_t > 1e-12, (stz - st * sz / cnt) / np.where(var_t > 1e-12, var_t, 1.0), 0.0)
    return np.hstack([age[:, None], mean, slope])


def feature_names(sensors: Sequence[str]) -> list[str]:
    """Names of the columns :func:`window_features` returns."""
    return ["age", *(f"{s}_mean" for s in sensors), *(f"{s}_slope" for s in sensors)]


def _cum(x: Matrix) -> Matrix:
    return np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])


def _ffill0(z: Matrix) -> Matrix:
    ok = np.isfinite(z)
    idx = np.where(ok, np.arange(len(z))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = z[idx, np.arange(z.shape[1])]
    return np.asarray(np.nan_to_num(filled, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float64)


def life_target(run: RunHistory) -> Vector:
    """True remaining life at each row of a history that ends at failure."""
    return np.asarray(run.time[-1] - run.time, dtype=np.float64)
