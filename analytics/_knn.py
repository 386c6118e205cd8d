"""Distance to the nearest healthy rows: a detector for normal operation that is not one Gaussian cloud.

A single mean and covariance (Mahalanobis, PCA) describe normal rows well when they scatter around one centre.
Many machines do not: a compressor sampled once an hour is either loaded or unloaded, so each sensor is two-valued
and the cloud is two clusters; operating regimes, duty cycles and machines of different ratings add more. A shift
within one cluster (a hotter discharge while loaded) can then stay close to the centre of a Gaussian fit to the
whole cloud. The mean squared distance to the ``k`` nearest baseline rows, in the regime-normalised space (each
sensor scaled by its robust spread), does not assume a shape: a row is anomalous when no healthy row was like it.

Measured with ``wearline eval`` on the simulator's fleets 7 / 11 (row-to-row changes on): F1 0.939 / 0.936 against
0.924 / 0.897 for Mahalanobis, with fewer false alarms; k from 3 to 10 gave 0.928-0.939 (docs/analytics.md lists
the variants that were tried and not kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from sklearn.neighbors import NearestNeighbors

from analytics._base import Matrix, Vector
from analytics._batch import BaselineDetector

__all__ = ["KnnDistance"]

_CHUNK = 20_000
"""Rows scored at a time (bounds the memory of the neighbour differences)."""


class KnnDistance(BaselineDetector):
    """Score = mean squared distance to the ``k`` nearest baseline rows, divided by its baseline mean (each baseline
    row measured against the others, so about 1 for normal rows); contributions split it by feature.

    Sensors that never moved in the baseline are left out of the neighbour search (every baseline row holds the
    same value there) and their squared deviation is added to each distance, so the score is the plain Euclidean
    one over all sensors. Neighbours are found exactly (a k-d tree), so scores are deterministic.
    """

    def __init__(
        self,
        *,
        k: int = 5,
        condition: Sequence[str] = (),
        max_rows: int = 20_000,
        seed: int = 0,
        missing_score: float = 1e3,
        stuck_rows: int = 6,
    ) -> None:
        super().__init__(
            condition=condition, max_rows=max_rows, seed=seed, missing_score=missing_score, stuck_rows=stuck_rows
        )
        self.k = k
        self._nn: NearestNeighbors | None = None
        self._base = np.zeros((0, 0))
        self._active = np.zeros(0, dtype=np.int64)
        self._fixed = np.zeros(0)
        self._dm = 1.0

    def _fit(self, z: Matrix) -> None:
        spread = z.max(axis=0, initial=0.0) - z.min(axis=0, initial=0.0) if len(z) else np.zeros(z.shape[1])
        self._active = np.flatnonzero(spread > 0)
        self._fixed = z[0].copy() if len(z) else np.zeros(z.shape[1])
        self._base = np.ascontiguousarray(z[:, self._active])
        self._nn = None
        self._dm = 1.0
        if len(z) and len(self._active):
            self._nn = NearestNeighbors(n_neighbors=1, algorithm="kd_tree").fit(self._base)
        if self._nn is not None and len(z) > 1:
            # Each baseline row against the others: ask for one more neighbour and drop the row itself (the fixed
            # sensors add nothing here: every baseline row holds their value).
            d2, _ = self._neighbours(z, min(self.k, len(z) - 1) + 1)
            self._dm = max(float(d2[:, 1:].mean()), 1e-9)

    def _neighbours(self, z: Matrix, k: int) -> tuple[Matrix, npt.NDArray[np.int64]]:
        """Squared distances over the active sensors to the ``k`` nearest baseline rows, and their indices."""
        assert self._nn is not None
        dist, idx = self._nn.kneighbors(z[:, self._active], n_neighbors=k)
        return np.asarray(dist, dtype=np.float64) ** 2, np.asarray(idx, dtype=np.int64)

    def _parts(self, z: Matrix, idx: npt.NDArray[np.int64]) -> Matrix:
        """Per row and feature, the mean over the neighbours ``idx`` of the squared difference."""
        out = (z - self._fixed) ** 2
        if len(self._active):
            diff = z[:, None, self._active] - self._base[idx]
            out[:, self._active] = (diff**2).mean(axis=1)
        return np.asarray(out, dtype=np.float64)

    def _k(self) -> int:
        return max(1, min(self.k, len(self._base)))

    def _score(self, z: Matrix) -> Vector:
        if self._nn is None:
            return np.asarray(((z - self._fixed) ** 2).sum(axis=1) / self._dm, dtype=np.float64)
        out = np.empty(len(z))
        fixed = np.delete(np.arange(z.shape[1]), self._active)
        for lo in range(0, len(z), _CHUNK):
            part = z[lo : lo + _CHUNK]
            d2, _ = self._neighbours(part, self._k())
            out[lo : lo + _CHUNK] = d2.mean(axis=1) + ((part[:, fixed] - self._fixed[fixed]) ** 2).sum(axis=1)
        return out / self._dm

    def _contrib(self, z: Matrix) -> Matrix:
        if self._nn is None:
            return np.asarray((z - self._fixed) ** 2 / self._dm, dtype=np.float64)
        out = np.empty_like(z)
        for lo in range(0, len(z), _CHUNK):
            part = z[lo : lo + _CHUNK]
            out[lo : lo + _CHUNK] = self._parts(part, self._neighbours(part, self._k())[1])
        return out / self._dm
