"""Operating-regime awareness: encode condition columns into regimes and normalise each sensor per regime."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

from analytics._base import Matrix, Vector, _Params

__all__ = ["ConditionEncoder", "RegimeScaler"]

Codes = npt.NDArray[np.int64]
_MAD_TO_SIGMA = 1.4826


class ConditionEncoder(_Params):
    """Maps condition columns (settings such as altitude, speed, product) to a small set of regime codes.

    Values are snapped to a grid of ``bins`` steps across each column's range, so settings that scatter slightly
    around a few set points (as they do in real exports) fall into one regime each; an unseen combination goes
    to the nearest known regime.
    """

    def __init__(self, *, bins: int = 50) -> None:
        self.bins = bins
        self._low: Vector | None = None
        self._step: Vector | None = None
        self._keys: Matrix | None = None

    def fit(self, cond: Matrix) -> ConditionEncoder:
        cond = np.nan_to_num(np.atleast_2d(cond), nan=0.0)
        self._low = cond.min(axis=0)
        span = cond.max(axis=0) - self._low
        self._step = np.where(span > 0, span / self.bins, 1.0)
        self._keys = np.unique(self._snap(cond), axis=0)
        return self

    @property
    def regimes(self) -> int:
        return 0 if self._keys is None else len(self._keys)

    def transform(self, cond: Matrix) -> Codes:
        if self._keys is None:
            return np.zeros(len(cond), dtype=np.int64)
        snapped = self._snap(np.nan_to_num(np.atleast_2d(cond), nan=0.0))
        dist = np.abs(snapped[:, None, :] - self._keys[None, :, :]).sum(axis=2)
        return np.asarray(dist.argmin(axis=1), dtype=np.int64)

    def _snap(self, cond: Matrix) -> Matrix:
        assert self._low is not None
        assert self._step is not None
        return np.round((cond - self._low) / self._step)


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
