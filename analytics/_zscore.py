"""Robust per-sensor z-score: distance from the recent median in units of the median absolute deviation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["RobustZ", "ZResult"]

Matrix = npt.NDArray[np.float64]
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class ZResult:
    z: Matrix
    """|z| per row and sensor; NaN where the value or the baseline is missing."""
    flagged: npt.NDArray[np.bool_]
    """Rows with at least one sensor past the threshold."""


class RobustZ:
    """Scores rows against a baseline; a sensor whose baseline is constant is scored against a small floor."""

    def __init__(self, threshold: float, rel_floor: float = 1e-3) -> None:
        self.threshold = threshold
        self.rel_floor = rel_floor

    def score(self, baseline: Matrix, rows: Matrix) -> ZResult:
        width = max(baseline.shape[1], rows.shape[1])
        baseline = _pad(baseline, width)
        rows = _pad(rows, width)
        with np.errstate(all="ignore"):
            med = np.nanmedian(baseline, axis=0) if baseline.size else np.full(width, np.nan)
            mad = np.nanmedian(np.abs(baseline - med), axis=0) if baseline.size else np.full(width, np.nan)
            scale = np.maximum(_MAD_TO_SIGMA * mad, self.rel_floor * np.maximum(np.abs(med), 1.0))
            z = np.abs(rows - med) / scale
        flagged = np.nan_to_num(z, nan=0.0).max(axis=1, initial=0.0) > self.threshold
        return ZResult(z, flagged)


def _pad(m: Matrix, width: int) -> Matrix:
    if m.shape[1] >= width:
        return m
    return np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=np.nan)
