"""Degradation-trend RUL: a linear health indicator from sensor features, extrapolated to its failure level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import SplineTransformer

from analytics._base import DataError, ModelError, RulEstimator, RulPrediction, RunHistory, Vector
from analytics._features import window_features
from analytics._regime import RegimeScaler

__all__ = ["TrendRul"]


class TrendRul(RulEstimator):
    """Health indicator HI = ridge fit of splines of the window means onto the fraction of life left (1 new, 0 failed).

    RUL averages two readings of a straight line through the last ``trend_rows`` HI values: its level times
    the mean training life, and (while it clearly falls) where it reaches 0; bounded to [0, ``max_factor`` x the
    longest training life]. The interval is conformal: the ``coverage`` quantile of
    log(true / predicted) on training units cut at random points.
    """

    def __init__(
        self, *, coverage: float = 0.9, window: int = 10, trend_rows: int = 30, max_factor: float = 1.5, seed: int = 0
    ) -> None:
        self.coverage = coverage
        self.window = window
        self.trend_rows = trend_rows
        self.max_factor = max_factor
        self.seed = seed
        self.feature_names: list[str] = []
        self._scaler = RegimeScaler()
        self._ridge: Pipeline | None = None
        self._max_life = 1.0
        self._mean_life = 1.0
        self._log_lo = 0.0
        self._log_hi = 0.0

    def _hi(self, run: RunHistory) -> Vector:
        assert self._ridge is not None
        f = window_features(run, self._scaler, self.window)
        n = len(self.feature_names)
        return np.asarray(self._ridge.predict(f[:, 1 : 1 + n]), dtype=np.float64)

    def fit(self, runs: Sequence[RunHistory], feature_names_: Sequence[str]) -> TrendRul:
        if len(runs) < 2:
            raise DataError(f"RUL needs run-to-failure histories of at least 2 units, got {len(runs)}")
        self.feature_names = list(feature_names_)
        n = len(self.feature_names)
        early = [r.values[: max(2, len(r.time) // 5)] for r in runs]
        codes = [r.condition[: max(2, len(r.time) // 5)] for r in runs if r.condition is not None]
        self._scaler = RegimeScaler().fit(np.vstack(early), np.concatenate(codes) if codes else None)
        xs, ys = [], []
        for r in runs:
            life = max(r.time[-1] - r.time[0], 1e-9)
            xs.append(window_features(r, self._scaler, self.window)[:, 1 : 1 + n])
            ys.append((r.time[-1] - r.time) / life)
        # Splines let each sensor bend onto the life fraction: wear usually shows late and grows fast.
        self._ridge = make_pipeline(SplineTransformer(n_knots=5, degree=2), Ridge(alpha=1.0))
        self._ridge.fit(np.vstack(xs), np.concatenate(ys))
        self._max_life = float(max(r.time[-1] - r.time[0] for r in runs))
        self._mean_life = float(np.mean([r.time[-1] - r.time[0] for r in runs]))
        rng = np.random.default_rng(self.seed)
        ratios = []
        for r in runs:
            for cut in rng.integers(min(self.trend_rows, len(r.time) - 1), len(r.time), size=20):
                part = RunHistory(r.unit, r.time[: cut + 1], r.values[: cut + 1], None, failed=False)
                pred = self._point(self._hi(part), part.time)
                true = r.time[-1] - r.time[cut]
                ratios.append(np.log((true + 1e-3 * self._max_life) / (pred + 1e-3 * self._max_life)))
        a = (1.0 - self.coverage) / 2.0
        self._log_lo, self._log_hi = (float(v) for v in np.quantile(ratios, [a, 1.0 - a]))
        return self

    def _point(self, hi: Vector, t: Vector) -> float:
        k = min(self.trend_rows, len(hi))
        tt, hh = t[-k:] - t[-1], hi[-k:]
        cap = self.max_factor * self._max_life
        if k < 3 or np.ptp(tt) <= 0:
            return float(np.clip(hh.mean() * self._mean_life, 0.0, cap))
        slope, level = (float(v) for v in np.polyfit(tt, hh, 1))
        # Two readings of the same indicator: how much life fraction is left (times the mean life), and when the
        # current trend reaches zero. Early in life the trend is flat and says little, so it only counts while
        # the indicator is clearly falling.
        by_level = float(np.clip(level * self._mean_life, 0.0, cap))
        if slope >= -0.5 / self._mean_life:
            return by_level
        by_trend = float(np.clip(level / -slope, 0.0, cap))
        return 0.5 * (by_level + by_trend)

    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        if self._ridge is None:
            raise ModelError("TrendRul used before fit")
        out = []
        eps = 1e-3 * self._max_life
        for r in runs:
            p = self._point(self._hi(r), r.time)
            lo = max((p + eps) * np.exp(self._log_lo) - eps, 0.0)
            hi = (p + eps) * np.exp(self._log_hi) - eps
            out.append(RulPrediction(r.unit, float(r.time[-1]), p, float(min(lo, p)), float(max(hi, p))))
        return out
