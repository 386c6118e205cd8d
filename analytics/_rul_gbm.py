"""Gradient-boosted RUL on window features with a capped target and conformalised quantile intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from analytics._base import DataError, Matrix, ModelError, RulEstimator, RulPrediction, RunHistory, Vector
from analytics._features import feature_names, life_target, window_features
from analytics._regime import RegimeScaler

__all__ = ["GbmRul"]


class GbmRul(RulEstimator):
    """Quantile gradient boosting (median and the two interval ends) on window features.

    The target is capped at ``cap`` hours (default: the median training life times ``cap_factor``), since early
    in life nothing in the sensors tells how far failure is. Intervals are conformalised quantile regression:
    the quantile models are fit on part of the units, and the interval is widened (or narrowed) by the
    ``coverage`` quantile of how far the held-out units' true RUL fell outside it; then everything is refit on
    all units with that correction kept.
    """

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        window: int = 10,
        cap: float | None = None,
        cap_factor: float = 1.0,
        calibration_share: float = 0.3,
        max_rows: int = 30_000,
        iterations: int = 200,
        seed: int = 0,
    ) -> None:
        self.coverage = coverage
        self.window = window
        self.cap = cap
        self.cap_factor = cap_factor
        self.calibration_share = calibration_share
        self.max_rows = max_rows
        self.iterations = iterations
        self.seed = seed
        self.feature_names: list[str] = []
        self.cap_: float = 0.0
        self.correction_: float = 0.0
        self._scaler = RegimeScaler()
        self._models: list[HistGradientBoostingRegressor] = []

    def _design(self, runs: Sequence[RunHistory]) -> tuple[Matrix, Vector, Vector]:
        xs, ys, groups = [], [], []
        for g, run in enumerate(runs):
            xs.append(window_features(run, self._scaler, self.window))
            ys.append(life_target(run))
            groups.append(np.full(len(run.time), g))
        return np.vstack(xs), np.concatenate(ys), np.concatenate(groups).astype(np.float64)

    def _fit_models(self, x: Matrix, y: Vector) -> list[HistGradientBoostingRegressor]:
        a = (1.0 - self.coverage) / 2.0
        return [
            HistGradientBoostingRegressor(
                loss="quantile", quantile=q, max_iter=self.iterations, random_state=self.seed
            ).fit(x, np.minimum(y, self.cap_))
            for q in (0.5, a, 1.0 - a)
        ]

    def fit(self, runs: Sequence[RunHistory], feature_names_: Sequence[str]) -> GbmRul:
        if len(runs) < 2:
            raise DataError(f"RUL needs run-to-failure histories of at least 2 units, got {len(runs)}")
        self.feature_names = list(feature_names_)
        lives = np.array([r.time[-1] - r.time[0] for r in runs])
        self.cap_ = float(self.cap if self.cap is not None else np.median(lives) * self.cap_factor)
        # Normal operation for scaling: the first fifth of each life, per regime.
        early = [r.values[: max(2, len(r.time) // 5)] for r in runs]
        codes = [r.condition[: max(2, len(r.time) // 5)] for r in runs if r.condition is not None]
        self._scaler = RegimeScaler().fit(np.vstack(early), np.concatenate(codes) if codes else None)
        x, y, groups = self._design(runs)
        rng = np.random.default_rng(self.seed)
        if len(x) > self.max_rows:
            keep = np.sort(rng.choice(len(x), self.max_rows, replace=False))
            x, y, groups = x[keep], y[keep], groups[keep]
        units = rng.permutation(len(runs))
        n_cal = max(1, round(len(runs) * self.calibration_share)) if len(runs) >= 4 else 0
        if n_cal:
            cal = np.isin(groups, units[:n_cal])
            lo_m, hi_m = self._fit_models(x[~cal], y[~cal])[1:]
            lo, hi = lo_m.predict(x[cal]), hi_m.predict(x[cal])
            yc = np.minimum(y[cal], self.cap_)
            # Late-life rows matter most to a planner and are few; weight each calibration unit equally.
            err = np.maximum(lo - yc, yc - hi)
            self.correction_ = float(np.quantile(err, self.coverage))
        self._models = self._fit_models(x, y)
        return self

    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        if not self._models:
            raise ModelError("GbmRul used before fit")
        last = np.vstack([window_features(r, self._scaler, self.window)[-1:] for r in runs])
        med, lo, hi = (m.predict(last) for m in self._models)
        lower = np.maximum(np.minimum(lo, med) - self.correction_, 0.0)
        upper = np.maximum(hi, med) + self.correction_
        # At the cap the model only knows "at least cap": let the upper end stay open-ish.
        upper = np.where(med >= 0.95 * self.cap_, np.maximum(upper, 1.5 * self.cap_), upper)
        rul = np.clip(med, lower, upper)
        return [
            RulPrediction(r.unit, float(r.time[-1]), float(p), float(lo_), float(hi_))
            for r, p, lo_, hi_ in zip(runs, rul, lower, upper, strict=True)
        ]

    def sensor_features(self) -> list[str]:
        """Names of the window features the boosting sees."""
        return feature_names(self.feature_names)
