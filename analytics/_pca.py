"""PCA on a healthy baseline: Hotelling's T-squared inside the model plane plus the Q (squared prediction error)
residual outside it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analytics._base import Matrix, Vector
from analytics._batch import BaselineDetector

__all__ = ["PcaT2Q"]


class PcaT2Q(BaselineDetector):
    """Score = T²/mean(T²) + Q/mean(Q) on the baseline, so each part counts about one for normal rows.

    Keeps the components explaining ``variance`` of the regime-normalised baseline. Contributions are each
    sensor's share of Q plus its (positive) share of T².
    """

    def __init__(
        self,
        *,
        variance: float = 0.9,
        condition: Sequence[str] = (),
        max_rows: int = 20_000,
        seed: int = 0,
        missing_score: float = 1e3,
        stuck_rows: int = 6,
    ) -> None:
        super().__init__(
            condition=condition, max_rows=max_rows, seed=seed, missing_score=missing_score, stuck_rows=stuck_rows
        )
        self.variance = variance
        self._mean = np.zeros(0)
        self._p = np.zeros((0, 0))
        self._lam = np.ones(0)
        self._t2m = 1.0
        self._qm = 1.0

    def _fit(self, z: Matrix) -> None:
        self._mean = z.mean(axis=0)
        c = z - self._mean
        _, s, vt = np.linalg.svd(c, full_matrices=False)
        lam = s**2 / max(len(z) - 1, 1)
        total = lam.sum()
        k = 1 if total <= 0 else int(np.searchsorted(np.cumsum(lam) / total, self.variance) + 1)
        k = max(1, min(k, len(lam), max(len(z) - 1, 1)))
        self._p = vt[:k].T
        self._lam = np.maximum(lam[:k], 1e-9)
        t2, q = self._parts(z)
        self._t2m = max(float(t2.mean()), 1e-9)
        self._qm = max(float(q.mean()), 1e-9)

    def _parts(self, z: Matrix) -> tuple[Vector, Vector]:
        c = z - self._mean
        t = c @ self._p
        t2 = ((t**2) / self._lam).sum(axis=1)
        resid = c - t @ self._p.T
        return t2, (resid**2).sum(axis=1)

    def _score(self, z: Matrix) -> Vector:
        t2, q = self._parts(z)
        return np.asarray(t2 / self._t2m + q / self._qm, dtype=np.float64)

    def _contrib(self, z: Matrix) -> Matrix:
        c = z - self._mean
        t = c @ self._p
        resid = c - t @ self._p.T
        t2c = np.maximum(c * ((t / self._lam) @ self._p.T), 0.0)
        return np.asarray(resid**2 / self._qm + t2c / self._t2m, dtype=np.float64)
