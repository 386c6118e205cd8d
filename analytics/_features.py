"""Window features for RUL: per-regime normalised sensors, their trailing means and slopes, their drift from the
unit's own first rows, and the unit's age."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from analytics._base import Matrix, RunHistory, Vector
from analytics._regime import RegimeScaler

__all__ = ["unit_feature_names", "unit_features", "window_features"]


def window_features(run: RunHistory, scaler: RegimeScaler, window: int) -> Matrix:
    """One feature row per time of ``run``: [age, mean of each sensor over the last ``window`` rows, slope of
    each per hour over the same rows] (fewer rows at the start). Missing values carry forward; never seen is 0."""
    z = _ffill0(scaler.transform(run.values, run.condition))
    origin = run.start if run.start is not None else float(run.time[0])
    age = run.time - origin
    mean = _trailing_mean(_cum(z), window)
    return np.hstack([age[:, None], mean, _trailing_slope(run.time - run.time[0], z, window)])


def _cum(x: Matrix) -> Matrix:
    return np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])


def _ffill0(z: Matrix) -> Matrix:
    ok = np.isfinite(z)
    idx = np.where(ok, np.arange(len(z))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = z[idx, np.arange(z.shape[1])]
    return np.asarray(np.nan_to_num(filled, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float64)


def unit_features(
    run: RunHistory,
    scaler: RegimeScaler,
    *,
    windows: Sequence[int],
    slope_rows: int,
    reference_rows: int,
    regime_rows: int = 6,
    clip: float = 30.0,
) -> Matrix:
    """One feature row per time of ``run``, measured against the fleet and against the unit itself:

    [age, mean of each regime-normalised sensor over the last ``windows[0]`` rows, then for each window the mean
    drift of each sensor from the unit's own reference, the drift's slope per hour over the last ``slope_rows``
    rows, and the longest window's drift per hour of age].

    Machines of one type differ in rated levels by more than early wear moves a sensor, so the change since the
    unit's own first rows says more about wear than the level does. The reference at row i is the mean of the
    unit's rows before min(i + 1, ``reference_rows``) in row i's operating regime (the unit's pooled offset while
    that regime has fewer than ``regime_rows`` of them): it only uses rows a live prediction at row i would have, and
    a short history simply has a shorter reference. The reference reads values clipped to +-``clip`` scale units,
    so a spike among its rows cannot shift it much (the features themselves are not clipped: late wear moves
    sensors far). Missing values carry forward; never seen is 0.
    """
    z = _ffill0(scaler.transform(run.values, run.condition))
    n = len(z)
    origin = run.start if run.start is not None else float(run.time[0])
    t = run.time - run.time[0]
    age = run.time - origin
    assert scaler.scale_ is not None  # transform above refuses an unfitted scaler
    codes = None if run.condition is None else np.clip(run.condition, 0, len(scaler.scale_) - 1)
    scale = scaler.scale_[np.zeros(n, dtype=np.int64) if codes is None else codes]
    drift = z - _reference(np.clip(z, -clip, clip), scale, codes, reference_rows, regime_rows)
    cz, cd = _cum(z), _cum(drift)
    drifts = [_trailing_mean(cd, w) for w in windows]
    cols = [age[:, None], _trailing_mean(cz, windows[0]), *drifts, _trailing_slope(t, drift, slope_rows)]
    # Drift per hour of age: wear that has moved a sensor far in a short time is on a short life.
    cols.append(drifts[-1] / np.maximum(age, 1.0)[:, None])
    return np.hstack(cols)


def unit_feature_names(sensors: Sequence[str], windows: Sequence[int]) -> list[str]:
    """Names of the columns :func:`unit_features` returns."""
    out = ["age", *(f"{s}_mean{windows[0]}" for s in sensors)]
    for w in windows:
        out += [f"{s}_drift{w}" for s in sensors]
    out += [f"{s}_drift_slope" for s in sensors]
    out += [f"{s}_drift_rate" for s in sensors]
    return out


def _reference(z: Matrix, scale: Matrix, codes: npt.NDArray[np.int64] | None, rows: int, regime_rows: int) -> Matrix:
    """The unit's causal reference per row (see :func:`unit_features`); ``scale`` is each row's regime scale.

    The pooled fallback averages the unit's offset in the sensors' own units and divides it by the row's regime
    scale, so a machine whose level is shifted by a constant gets the same drift in every regime."""
    n = len(z)
    k = np.minimum(np.arange(1, n + 1), max(rows, 1))
    head = z[: max(rows, 1)]
    out: Matrix = (_cum(head * scale[: len(head)])[k] / k[:, None]) / scale
    if codes is None:
        return out
    head_codes = codes[: len(head)]
    for r in np.unique(codes):
        own = (head_codes == r).astype(np.float64)
        seen = np.concatenate([[0.0], np.cumsum(own)])[k]
        use = (codes == r) & (seen >= regime_rows)
        if use.any():
            out[use] = _cum(head * own[:, None])[k[use]] / seen[use][:, None]
    return out


def _trailing_mean(csum: Matrix, window: int) -> Matrix:
    """Mean of each column over the last ``window`` rows (fewer at the start), from its cumulative sums."""
    hi = np.arange(1, len(csum))
    lo = np.maximum(hi - window, 0)
    return _span(csum, hi, lo) / (hi - lo)[:, None]


def _trailing_slope(t: Vector, z: Matrix, window: int) -> Matrix:
    """Least-squares slope per hour of each column over the last ``window`` rows (0 with fewer than 2 times)."""
    n = len(t)
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - window, 0)
    cnt = (hi - lo)[:, None].astype(np.float64)
    sz, st = _span(_cum(z), hi, lo), _span(_cum(t[:, None]), hi, lo)
    stt, stz = _span(_cum((t**2)[:, None]), hi, lo), _span(_cum(t[:, None] * z), hi, lo)
    var_t = stt - st**2 / cnt
    ok = var_t > 1e-12
    out: Matrix = np.where(ok, (stz - st * sz / cnt) / np.where(ok, var_t, 1.0), 0.0)
    return out


def _span(csum: Matrix, hi: npt.NDArray[np.int64], lo: npt.NDArray[np.int64]) -> Matrix:
    out: Matrix = csum[hi] - csum[lo]
    return out
