"""Mahalanobis distance from a healthy baseline, with a shrunk (Ledoit-Wolf) covariance for small baselines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.covariance import LedoitWolf

from analytics._base import Matrix, Vector
from analytics._batch import BaselineDetector

__all__ = ["Mahalanobis"]


class Mahalanobis(BaselineDetector):
    """Score = squared Mahalanobis distance divided by its baseline mean; contributions z_i (Σ⁻¹ z)_i."""

    def __init__(
        self,
        *,
        condition: Sequence[str] = (),
        max_rows: int = 20_000,
        seed: int = 0,
        missing_score: float = 1e3,
        stuck_rows: int = 6,
    ) -> None:
        super().__init__(
            condition=condition, max_rows=max_rows, seed=seed, missing_score=missing_score, stuck_rows=stuck_rows
        )
        self._mean = np.zeros(0)
        self._prec = np.zeros((0, 0))
        self._dm = 1.0

    def _fit(self, z: Matrix) -> None:
        lw = LedoitWolf().fit(z)
        self._mean = np.asarray(lw.location_, dtype=np.float64)
        self._prec = np.asarray(lw.precision_, dtype=np.float64)
        self._dm = max(float(self._score_raw(z).mean()), 1e-9)

    def _score_raw(self, z: Matrix) -> Vector:
        c = z - self._mean
        return np.asarray(np.einsum("ij,jk,ik->i", c, self._prec, c), dtype=np.float64)

    def _score(self, z: Matrix) -> Vector:
        return self._score_raw(z) / self._dm

    def _contrib(self, z: Matrix) -> Matrix:
        c = z - self._mean
        return np.asarray(np.maximum(c * (c @ self._prec), 0.0) / self._dm, dtype=np.float64)
