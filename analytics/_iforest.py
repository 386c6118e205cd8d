"""scikit-learn's IsolationForest on regime-normalised sensors, behind the common detector contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import IsolationForest as SkIsolationForest

from analytics._base import Matrix, Vector
from analytics._batch import BaselineDetector

__all__ = ["IsolationForest"]


class IsolationForest(BaselineDetector):
    """Score = the forest's anomaly score (higher is more anomalous, about 0.5 for normal rows) minus its
    baseline mean, floored at 0; contributions are the absolute normalised deviations (the forest names none)."""

    def __init__(
        self,
        *,
        trees: int = 100,
        condition: Sequence[str] = (),
        max_rows: int = 20_000,
        seed: int = 0,
        missing_score: float = 1e3,
        stuck_rows: int = 6,
    ) -> None:
        super().__init__(
            condition=condition, max_rows=max_rows, seed=seed, missing_score=missing_score, stuck_rows=stuck_rows
        )
        self.trees = trees
        self._forest: SkIsolationForest | None = None
        self._base = 0.0

    def _fit(self, z: Matrix) -> None:
        self._forest = SkIsolationForest(n_estimators=self.trees, random_state=self.seed).fit(z)
        self._base = float(-self._forest.score_samples(z).mean())

    def _score(self, z: Matrix) -> Vector:
        assert self._forest is not None
        return np.asarray(np.maximum(-self._forest.score_samples(z) - self._base, 0.0), dtype=np.float64)

    def _contrib(self, z: Matrix) -> Matrix:
        return np.abs(z)
