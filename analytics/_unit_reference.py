"""Each unit measured against its own first rows, and row-to-row changes: the per-machine inputs of a detector.

Machines of one type differ in rated parameters (flow, current, insulation resistance) by more than an early fault
or wear moves a sensor, so a model fit across machines sees mostly that spread. Referencing every unit to its own
commissioning rows leaves the change since then, which is what a fault or wear adds. Row-to-row changes show what
levels hide: a spike, the edge of a step, a burst of noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from analytics._base import DataError, Matrix, _Params
from analytics._regime import Codes

__all__ = ["UnitReference", "row_changes"]


class UnitReference(_Params):
    """Shifts each unit's rows so that its first ``rows`` rows sit at the fleet's typical level.

    :meth:`fit` learns the fleet's level per operating regime: the median of every unit's first ``rows`` rows in
    that regime. :meth:`transform` takes one unit's rows in time order and subtracts its offset: the median,
    over its own first ``rows`` rows, of how far each sensor was from the fleet's level for the row's regime. One
    offset per unit and sensor (not per regime): a unit sees few rows of some regimes early on, and a median of
    few rows is noise. The shift is additive, in the sensors' own units; the median keeps a short fault in the
    reference rows from moving it; a sensor the unit never reported early is not shifted.
    """

    def __init__(self, *, rows: int = 96) -> None:
        self.rows = rows
        self.level_: Matrix | None = None

    def fit(self, units: Sequence[tuple[Matrix, Codes]]) -> UnitReference:
        """Learn the fleet's level from ``units``: (sensor rows, regime codes) per unit, each in time order."""
        if not units:
            raise DataError("a unit reference needs at least one unit's rows")
        head = np.vstack([x[: self.rows] for x, _ in units])
        codes = np.concatenate([c[: self.rows] for _, c in units])
        n_reg = int(max(int(c.max(initial=0)) for _, c in units)) + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # sensors or regimes absent early: all-NaN, handled
            pooled = np.nan_to_num(np.nanmedian(head, axis=0), nan=0.0)
            level = np.tile(pooled, (n_reg, 1))
            for r in range(n_reg):
                sub = head[codes == r]
                if len(sub):
                    med = np.nanmedian(sub, axis=0)
                    level[r] = np.where(np.isfinite(med), med, pooled)
        self.level_ = level
        return self

    def transform(self, x: Matrix, codes: Codes) -> Matrix:
        """One unit's rows (time order) less its own offset; NaN stays NaN."""
        if self.level_ is None:
            raise DataError("UnitReference used before fit")
        codes = np.clip(codes, 0, len(self.level_) - 1)
        head = x[: self.rows] - self.level_[codes[: self.rows]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a sensor the unit never reported early
            offset = np.nanmedian(head, axis=0) if len(head) else np.zeros(x.shape[1])
        return np.asarray(x - np.nan_to_num(offset, nan=0.0), dtype=np.float64)


def row_changes(x: Matrix, codes: Codes, *, warmup: int) -> Matrix:
    """Each row less the one before it, for one unit's rows in time order.

    A change of operating regime moves every sensor for a good reason, and so does a cold start: those rows (the
    first ``warmup`` rows, and every row whose regime differs from the row before) get 0, "no change". NaN (a
    sensor that did not report) stays NaN, so a dropout still shows as missing.
    """
    out = np.vstack([x[:1] - x[:1], np.diff(x, axis=0)]) if len(x) else x.copy()
    steady = np.concatenate([[False], codes[1:] == codes[:-1]])[: len(x)]
    steady[:warmup] = False
    return np.asarray(np.where(steady[:, None], out, np.where(np.isnan(x), np.nan, 0.0)), dtype=np.float64)
