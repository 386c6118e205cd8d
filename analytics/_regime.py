"""Operating-regime awareness: encode condition columns into regimes and normalise each sensor per regime."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin, silhouette_score
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from analytics._base import Matrix, ModelError, Vector, _Params

__all__ = ["ConditionEncoder", "RegimeScaler"]

Codes = npt.NDArray[np.int64]
_MAD_TO_SIGMA = 1.4826


class ConditionEncoder(_Params):
    """Maps condition columns (settings such as altitude, speed, product) to a few regime codes found in the data.

    A column holding only whole numbers, at most ``max_categories`` of them (a text condition arrives as category
    numbers; a set point such as a throttle angle of 60 or 100), is a category: each value its own regime. The other
    columns, standardised, are clustered with k-means for k = 2..``max_regimes``; the k of the best mean silhouette
    is kept if that silhouette shows strong structure (at least ``min_silhouette``; 0.7 is Kaufman and Rousseeuw's
    "strong"), otherwise they are one regime: settings that are noise around one operating point give one regime,
    six set points with noise give six. A regime is a combination of categories and cluster seen in training; an
    unseen combination goes to the nearest known one. Memory is O(rows): rows are assigned to at most
    ``max_regimes`` centres in chunks.
    """

    def __init__(
        self,
        *,
        max_regimes: int = 8,
        min_silhouette: float = 0.7,
        max_categories: int = 64,
        sample_rows: int = 5_000,
        seed: int = 0,
    ) -> None:
        self.max_regimes = max_regimes
        self.min_silhouette = min_silhouette
        self.max_categories = max_categories
        self.sample_rows = sample_rows
        self.seed = seed
        self.silhouette_: float | None = None
        self._cat: list[int] = []
        self._cont: list[int] = []
        self._mean: Vector = np.zeros(0)
        self._scale: Vector = np.ones(0)
        self._centers: Matrix = np.zeros((1, 0))
        self._levels: list[Vector] = []
        self._keys: Matrix | None = None

    def fit(self, cond: Matrix) -> ConditionEncoder:
        cond = np.nan_to_num(np.atleast_2d(np.asarray(cond, dtype=np.float64)), nan=0.0)
        whole = [
            j
            for j in range(cond.shape[1])
            if np.all(cond[:, j] == np.round(cond[:, j])) and len(np.unique(cond[:, j])) <= self.max_categories
        ]
        self._cat = whole
        self._levels = [np.unique(cond[:, j]) for j in whole]
        self._cont = [j for j in range(cond.shape[1]) if j not in whole]
        x = cond[:, self._cont]
        self._mean = x.mean(axis=0) if len(x) else np.zeros(len(self._cont))
        std = x.std(axis=0) if len(x) else np.ones(len(self._cont))
        self._scale = np.where(std > 0, std, 1.0)
        self._centers = self._cluster((x - self._mean) / self._scale)
        self._keys = np.unique(self._key(cond), axis=0)
        return self

    def _cluster(self, z: Matrix) -> Matrix:
        """Centres of the regimes of the continuous columns (one centre when they show no clusters)."""
        self.silhouette_ = None
        one = np.zeros((1, z.shape[1]))
        if z.shape[1] == 0 or len(z) < 3 or not np.any(z.std(axis=0) > 0):
            return one
        rng = np.random.default_rng(self.seed)
        sample = z if len(z) <= self.sample_rows else z[rng.choice(len(z), self.sample_rows, replace=False)]
        best: tuple[float, Matrix] = (-1.0, one)
        distinct = len(np.unique(sample, axis=0))
        for k in range(2, min(self.max_regimes, distinct) + 1):
            # One thread: a few thousand rows, and OpenMP's second thread only waits on a busy machine.
            with threadpool_limits(limits=1, user_api="openmp"):
                km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(sample)
            s = float(silhouette_score(sample, km.labels_, sample_size=min(len(sample), 2_000), random_state=self.seed))
            if s > best[0]:
                best = (s, np.asarray(km.cluster_centers_, dtype=np.float64))
        self.silhouette_ = best[0]
        return best[1] if best[0] >= self.min_silhouette else one

    @property
    def regimes(self) -> int:
        return 0 if self._keys is None else len(self._keys)

    def transform(self, cond: Matrix) -> Codes:
        if not hasattr(self, "_centers"):
            raise ModelError("this model's condition encoder was saved by an older Wearline (a grid); fit it again")
        if self._keys is None:
            return np.zeros(len(cond), dtype=np.int64)
        keys = self._key(np.nan_to_num(np.atleast_2d(np.asarray(cond, dtype=np.float64)), nan=0.0))
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        # A few distinct keys: each is matched to a known regime (itself, or the nearest: same cluster first,
        # then the closest categories), then spread back to the rows.
        gap = np.abs(uniq[:, None, :] - self._keys[None, :, :])
        gap[:, :, -1] = np.where(gap[:, :, -1] > 0, 1e12, 0.0)
        code = gap.sum(axis=2).argmin(axis=1)
        return np.asarray(code[inverse.ravel()], dtype=np.int64)

    def _key(self, cond: Matrix) -> Matrix:
        """Per row: its category values (each snapped to the nearest one seen in training, so that a worker's hourly
        mean across a change of set point stays one of a few keys), then its cluster."""
        cats = [_nearest(levels, cond[:, j]) for j, levels in zip(self._cat, self._levels, strict=True)]
        z = (cond[:, self._cont] - self._mean) / self._scale
        cluster = (
            np.zeros(len(cond))
            if len(self._centers) == 1
            else pairwise_distances_argmin(z, self._centers).astype(np.float64)
        )
        return np.column_stack([*cats, cluster])


def _nearest(levels: Vector, x: Vector) -> Vector:
    """Each value of ``x`` replaced by the nearest of the sorted ``levels``."""
    if len(levels) == 0:
        return np.zeros(len(x))
    i = np.clip(np.searchsorted(levels, x), 1, max(len(levels) - 1, 1))
    lo, hi = levels[i - 1], levels[np.minimum(i, len(levels) - 1)]
    return np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)


class RegimeScaler(_Params):
    """Robust per-regime centring and scaling: (x - median) / (1.4826 MAD), with floors for constant sensors.

    A regime seen with too few rows borrows the pooled statistics; a sensor that never varied gets a small scale
    so a later change still shows, and a sensor never seen gets a centre of zero and unit scale.
    """

    def __init__(self, *, min_rows: int = 10, rel_floor: float = 1e-3) -> None:
        self.min_rows = min_rows
        self.rel_floor = rel_floor
        self.center_: Matrix | None = None
        self.scale_: Matrix | None = None

    def fit(self, x: Matrix, codes: Codes | None = None) -> RegimeScaler:
        codes = np.zeros(len(x), dtype=np.int64) if codes is None else codes
        n_reg = int(codes.max(initial=0)) + 1
        pooled_c, pooled_s = self._stats(x)
        self.center_ = np.tile(pooled_c, (n_reg, 1))
        self.scale_ = np.tile(pooled_s, (n_reg, 1))
        for r in range(n_reg):
            sub = x[codes == r]
            if len(sub) >= self.min_rows:
                c, s = self._stats(sub)
                ok = np.isfinite(c)
                self.center_[r, ok] = c[ok]
                self.scale_[r, ok] = s[ok]
        return self

    def transform(self, x: Matrix, codes: Codes | None = None) -> Matrix:
        """Scaled values; NaN stays NaN. Unknown regimes use regime 0's statistics."""
        if self.center_ is None or self.scale_ is None:
            raise ValueError("RegimeScaler used before fit")
        codes = np.zeros(len(x), dtype=np.int64) if codes is None else np.clip(codes, 0, len(self.center_) - 1)
        width = self.center_.shape[1]
        if x.shape[1] < width:
            x = np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=np.nan)
        out: Matrix = (x[:, :width] - self.center_[codes]) / self.scale_[codes]
        return out

    def _stats(self, x: Matrix) -> tuple[Vector, Vector]:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected
            med = np.nanmedian(x, axis=0) if len(x) else np.full(x.shape[1], np.nan)
            mad = np.nanmedian(np.abs(x - med), axis=0) if len(x) else np.full(x.shape[1], np.nan)
            std = np.nanstd(x, axis=0) if len(x) else np.full(x.shape[1], np.nan)
        center = np.where(np.isfinite(med), med, 0.0)
        # MAD is zero for sensors that are mostly constant with rare changes; the standard deviation then
        # still gives a scale, and the relative floor covers sensors that never moved at all.
        spread = np.where(mad > 0, _MAD_TO_SIGMA * mad, std)
        floor = self.rel_floor * np.maximum(np.abs(center), 1.0)
        scale = np.where(np.isfinite(spread), np.maximum(spread, floor), 1.0)
        return center, scale
