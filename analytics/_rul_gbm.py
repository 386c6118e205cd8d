"""Gradient-boosted RUL on drift-from-own-start features, with cross-conformal intervals on a log scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls  # type: ignore[import-untyped]
from sklearn.ensemble import HistGradientBoostingRegressor

from analytics._base import DataError, Matrix, ModelError, RulEstimator, RulPrediction, RunHistory, Vector
from analytics._features import unit_feature_names, unit_features
from analytics._regime import RegimeScaler

__all__ = ["GbmRul"]


class GbmRul(RulEstimator):
    """Gradient boosting of the (uncapped) remaining life on window features, each unit weighted equally, stacked
    with boosting of the share of life used.

    Features (:func:`analytics._features.unit_features`): age, recent regime-normalised sensor means, and each
    sensor's drift from the unit's own first ``reference_rows`` rows over the trailing ``windows``, its slope
    over ``slope_rows`` rows and its rate per hour of age. Capacity is kept small (depth ``max_depth``, each leaf
    holding at least ``min_leaf_units`` units' worth of rows) because a type has few run-to-failure units.

    Two boosting models read the same features: one of the remaining life, one of the share of life used,
    (age + a) / (life + a) with a = ``age_share`` x the mean training life, turned into remaining life as
    (age + a) x (1 / share - 1). Wear moves a sensor by a function of the share of life used (damage =
    curve(age / life)), so the share is close to a function of the drifts alone, while the remaining life is a
    product of age and that function, which shallow trees on 25-odd units approximate poorly once wear shows. Early
    in life the share is small and its errors are multiplied by 1 / share, so there the remaining-life model is
    better. The two are stacked with non-negative weights fit on out-of-fold predictions, one pair per band of the
    share of life used that the remaining-life model implies (``bands``): on seeds 7 and 11 of the simulated fleet
    the share model takes most of the weight after 30 % of life and the RMSE falls from 26.7 / 28.4 % to 26.5 /
    26.3 % of the mean life, with narrower intervals (docs/analytics.md, "RUL models").

    The units are split into ``folds`` groups; one pair of models is fit without each group and the prediction is
    their mean. The stacked errors on the units each pair did not see give the interval (cross-conformal): the
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
        age_share: float = 0.02,
        bands: tuple[float, ...] = (0.3, 0.6),
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
        self.age_share = age_share
        self.bands = bands
        self.seed = seed
        self.feature_names: list[str] = []
        self.offset_: float = 0.0
        self.log_lo_: float = 0.0
        self.log_hi_: float = 0.0
        self.age_offset_: float = 0.0
        self.weights_: Matrix = np.ones((1, 2)) / 2
        self._scaler = RegimeScaler()
        self._models: list[HistGradientBoostingRegressor] = []
        self._share_models: list[HistGradientBoostingRegressor] = []

    def _features(self, run: RunHistory) -> Matrix:
        return unit_features(
            run,
            self._scaler,
            windows=self.windows,
            slope_rows=self.slope_rows,
            reference_rows=self.reference_rows,
        )

    def _design(self, runs: Sequence[RunHistory]) -> tuple[Matrix, Vector, Vector]:
        """The same number of rows from each unit, evenly spread over its life; remaining life; unit index.
        Column 0 of the rows is the age."""
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
        self.age_offset_ = max(float(self.age_share * np.mean(lives)), 1e-9)
        # Normal operation for scaling: the first fifth of each life, per regime.
        early = [r.values[: max(2, len(r.time) // 5)] for r in runs]
        codes = [r.condition[: max(2, len(r.time) // 5)] for r in runs if r.condition is not None]
        self._scaler = RegimeScaler().fit(np.vstack(early), np.concatenate(codes) if codes else None)
        x, y, groups = self._design(runs)
        age = x[:, 0]
        share = (age + self.age_offset_) / (age + y + self.age_offset_)
        n = len(runs)
        k = min(self.folds, n)
        fold = np.random.default_rng(self.seed).permutation(n) % max(k, 1)
        self._models, self._share_models = [], []
        oof = np.zeros((len(y), 2))
        for f in range(k if k >= 2 else 0):
            held_units = np.flatnonzero(fold == f)
            held = np.isin(groups, held_units)
            self._models.append(self._fit_one(x[~held], y[~held], n - len(held_units)))
            self._share_models.append(self._fit_one(x[~held], share[~held], n - len(held_units)))
            oof[held] = self._members(x[held], self._models[-1:], self._share_models[-1:])
        if not self._models:  # folds=1: no unseen units, so the interval can only come from the fitted ones
            self._models = [self._fit_one(x, y, n)]
            self._share_models = [self._fit_one(x, share, n)]
            oof = self._members(x, self._models, self._share_models)
        band = self._band(oof, age)
        # A band needs a few units' worth of rows for its own weights; otherwise it shares the overall ones.
        overall = _nnls(oof, y)
        few = 3 * len(y) / n
        self.weights_ = np.vstack(
            [
                _nnls(oof[band == b], y[band == b]) if np.sum(band == b) >= few else overall
                for b in range(len(self.bands) + 1)
            ]
        )
        pred = np.sum(oof * self.weights_[band], axis=1)
        scores = np.log((y + self.offset_) / (pred + self.offset_))
        a = (1.0 - self.coverage) / 2.0
        self.log_lo_, self.log_hi_ = (float(v) for v in np.quantile(scores, [a, 1.0 - a]))
        return self

    def _members(
        self,
        x: Matrix,
        rul_models: Sequence[HistGradientBoostingRegressor],
        share_models: Sequence[HistGradientBoostingRegressor],
    ) -> Matrix:
        """Columns: the remaining-life models' mean prediction, and the share models' turned into remaining life."""
        rul = np.maximum(np.mean([m.predict(x) for m in rul_models], axis=0), 0.0)
        share = np.clip(np.mean([m.predict(x) for m in share_models], axis=0), 0.02, 1.0)
        return np.column_stack([rul, (x[:, 0] + self.age_offset_) * (1.0 / share - 1.0)])

    def _band(self, members: Matrix, age: Vector) -> npt.NDArray[np.int64]:
        """Each row's band of the share of life used, as the remaining-life model (column 0) implies it."""
        used = age / np.maximum(age + members[:, 0], 1e-9)
        return np.digitize(used, np.asarray(self.bands, dtype=np.float64)).astype(np.int64)

    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        if not self._models:
            raise ModelError("GbmRul used before fit")
        if not hasattr(self, "_share_models"):
            raise ModelError("this GbmRul was saved by an older Wearline; fit it again (wearline rul fit)")
        last = np.vstack([self._features(r)[-1:] for r in runs])
        members = self._members(last, self._models, self._share_models)
        rul = np.maximum(np.sum(members * self.weights_[self._band(members, last[:, 0])], axis=1), 0.0)
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


def _nnls(a: Matrix, b: Vector) -> Vector:
    """Stacking weights w >= 0 minimising |a w - b|."""
    return np.asarray(nnls(a, b)[0], dtype=np.float64)
