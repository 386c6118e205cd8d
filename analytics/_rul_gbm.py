"""Gradient-boosted RUL on drift-from-own-start features, with cross-conformal intervals on a log scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from analytics._base import DataError, Matrix, ModelError, RulEstimator, RulPrediction, RunHistory, Vector
from analytics._features import unit_feature_names, unit_features
from analytics._regime import RegimeScaler

__all__ = ["GbmRul"]


class GbmRul(RulEstimator):
    """Gradient boosting of the (uncapped) remaining life on window features, each unit weighted equally.

    Features (:func:`analytics._features.unit_features`): age, recent regime-normalised sensor means, and each
    sensor's drift from the unit's own first ``reference_rows`` rows over the trailing ``windows``, its slope
    over ``slope_rows`` rows and its rate per hour of age. Capacity is kept small (depth ``max_depth``, each leaf
    holding at least ``min_leaf_units`` units' worth of rows) because a type has few run-to-failure units.

    The units are split into ``folds`` groups; one model is fit without each group and the prediction is their
    mean. Each model's errors on the units it did not see give the interval (cross-conformal): the
    ``coverage`` central range of log((true + c) / (predicted + c)), c = ``offset_share`` x the mean training
    life, so intervals are wide when much life is left and narrow near failure.
    """

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        windows: tuple[int, ...] = (10, 50, 150),
        slope_rows: int = 150,
        reference_rows: int = 48,
        folds: int = 10,
        max_rows: int = 6_000,
        iterations: int = 200,
        learning_rate: float = 0.05,
        max_depth: int = 3,
        min_leaf_units: float = 3.0,
        offset_share: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.coverage = coverage
        self.windows = windows
        self.slope_rows = slope_rows
        self.reference_rows = reference_rows
        self.folds = folds
        self.max_rows = max_rows
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_leaf_units = min_leaf_units
        self.offset_share = offset_share
        self.seed = seed
        self.feature_names: list[str] = []
        self.offset_: float = 0.0
        self.log_lo_: float = 0.0
        self.log_hi_: float = 0.0
        self._scaler = RegimeScaler()
        self._models: list[HistGradientBoostingRegressor] = []

    def _features(self, run: RunHistory) -> Matrix:
        return unit_features(
            run,
            self._scaler,
            windows=self.windows,
            slope_rows=self.slope_rows,
            reference_rows=self.reference_rows,
        )

    def _design(self, runs: Sequence[RunHistory]) -> tuple[Matrix, Vector, Vector]:
        """The same number of rows from each unit, evenly spread over its life; remaining life; unit index."""
        # Each unit counts once, however long it lived (long lives would otherwise dominate the fit); equal row
        # counts do that without sample weights, which make the boosting's binning very slow. A short life
        # repeats rows.
        per_unit = max(self.max_rows // len(runs), 2)
        xs, ys, groups = [], [], []
        for g, run in enumerate(runs):
            keep = np.round(np.linspace(0, len(run.time) - 1, per_unit)).astype(np.int64)
            xs.append(self._features(run)[keep])
            ys.append(run.time[-1] - run.time[keep])
            groups.append(np.full(len(keep), g))
        return np.vstack(xs), np.concatenate(ys), np.concatenate(groups)

    def _fit_one(self, x: Matrix, y: Vector, units: int) -> HistGradientBoostingRegressor:
        leaf = max(5, round(self.min_leaf_units * len(x) / max(units, 1)))
        model = HistGradientBoostingRegressor(
            max_iter=self.iterations,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_samples_leaf=leaf,
            l2_regularization=1.0,
            random_state=self.seed,
        )
        return model.fit(x, y)

    def fit(self, runs: Sequence[RunHistory], feature_names_: Sequence[str]) -> GbmRul:
        if len(runs) < 2:
            raise DataError(f"RUL needs run-to-failure histories of at least 2 units, got {len(runs)}")
        self.feature_names = list(feature_names_)
        lives = np.array([r.time[-1] - r.time[0] for r in runs])
        self.offset_ = max(float(self.offset_share * np.mean(lives)), 1e-9)
        # Normal operation for scaling: the first fifth of each life, per regime.
        early = [r.values[: max(2, len(r.time) // 5)] for r in runs]
        codes = [r.condition[: max(2, len(r.time) // 5)] for r in runs if r.condition is not None]
        self._scaler = RegimeScaler().fit(np.vstack(early), np.concatenate(codes) if codes else None)
        x, y, groups = self._design(runs)
        n = len(runs)
        k = min(self.folds, n)
        fold = np.random.default_rng(self.seed).permutation(n) % max(k, 1)
        self._models, scores = [], []
        for f in range(k if k >= 2 else 0):
            held_units = np.flatnonzero(fold == f)
            held = np.isin(groups, held_units)
            model = self._fit_one(x[~held], y[~held], n - len(held_units))
            self._models.append(model)
            pred = np.maximum(model.predict(x[held]), 0.0)
            scores.append(np.log((y[held] + self.offset_) / (pred + self.offset_)))
        if not self._models:  # folds=1: no unseen units, so the interval can only come from the fitted ones
            self._models = [self._fit_one(x, y, n)]
            pred = np.maximum(self._models[0].predict(x), 0.0)
            scores = [np.log((y + self.offset_) / (pred + self.offset_))]
        a = (1.0 - self.coverage) / 2.0
        self.log_lo_, self.log_hi_ = (float(v) for v in np.quantile(np.concatenate(scores), [a, 1.0 - a]))
        return self

    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        if not self._models:
            raise ModelError("GbmRul used before fit")
        last = np.vstack([self._features(r)[-1:] for r in runs])
        rul = np.maximum(np.mean([m.predict(last) for m in self._models], axis=0), 0.0)
        c = self.offset_
        lower = np.clip((rul + c) * np.exp(self.log_lo_) - c, 0.0, rul)
        upper = np.maximum((rul + c) * np.exp(self.log_hi_) - c, rul)
        return [
            RulPrediction(r.unit, float(r.time[-1]), float(p), float(lo), float(hi))
            for r, p, lo, hi in zip(runs, rul, lower, upper, strict=True)
        ]

    def sensor_features(self) -> list[str]:
        """Names of the window features the boosting sees."""
        return unit_feature_names(self.feature_names, self.windows)
