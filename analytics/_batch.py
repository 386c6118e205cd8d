"""Shared machinery of the detectors fit on a healthy baseline: buffering, per-regime scaling, lazy refits."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from analytics._base import Detector, Matrix, ModelError, Vector
from analytics._regime import ConditionEncoder, RegimeScaler

__all__ = ["BaselineDetector"]


class BaselineDetector(Detector):
    """Learns a baseline of normal rows; scores rows against it after normalising each sensor per regime.

    ``condition`` names features that describe the operating condition (not sensors): they pick the regime whose
    statistics normalise the sensors and are not scored themselves. ``learn_one`` buffers rows; the model is
    refit when scored after the buffer has grown by a quarter (or on :meth:`fit_baseline`). A sensor present in
    (nearly) every baseline row that goes missing adds ``missing_score`` (a dropout is a fault too), and so does
    a sensor repeating exactly the same value for ``stuck_rows`` consecutive rows of a batch when it never did in
    the baseline (a stuck sensor); rows of a batch are taken to be in time order.
    """

    def __init__(
        self,
        *,
        condition: Sequence[str] = (),
        max_rows: int = 20_000,
        seed: int = 0,
        missing_score: float = 1e3,
        stuck_rows: int = 6,
    ) -> None:
        super().__init__()
        self.missing_score = missing_score
        self.stuck_rows = stuck_rows
        self._may_repeat = np.zeros(0, dtype=bool)
        self._expected = np.zeros(0, dtype=bool)
        self.condition = list(condition)
        self.max_rows = max_rows
        self.seed = seed
        self._rows: list[Matrix] = []
        self._n = 0
        self._fitted_n = 0
        self._encoder = ConditionEncoder()
        self._scaler = RegimeScaler()
        self._sensor_idx: list[int] = []

    def learn_many(self, rows: Matrix) -> None:
        self._rows.append(np.array(rows, dtype=np.float64))
        self._n += len(rows)

    def fit_baseline(self, rows: Matrix) -> BaselineDetector:
        """Learn ``rows`` and fit now."""
        self.learn_many(rows)
        self._refit()
        return self

    def score_many(self, rows: Matrix) -> Vector:
        z, missing = self._prepare(rows)
        return np.asarray(self._score(z) + self.missing_score * missing.sum(axis=1), dtype=np.float64)

    def contributions(self, rows: Matrix) -> Matrix:
        z, missing = self._prepare(rows)
        out = np.zeros((len(rows), len(self.feature_names)))
        out[:, self._sensor_idx] = self._contrib(z) + self.missing_score * missing
        return out

    @property
    def sensors(self) -> list[str]:
        """The scored features (everything but the condition columns)."""
        return [self.feature_names[i] for i in self._sensor_idx]

    # -- for subclasses ----------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, z: Matrix) -> None:
        """Fit on scaled baseline rows (NaN already replaced by 0, the regime median)."""

    @abstractmethod
    def _score(self, z: Matrix) -> Vector: ...

    @abstractmethod
    def _contrib(self, z: Matrix) -> Matrix: ...

    # -- internals ---------------------------------------------------------------------------------------
    def _width(self, rows: Matrix) -> Matrix:
        width = len(self.feature_names)
        if rows.shape[1] > width:
            self.set_features([f"x{i}" for i in range(width, rows.shape[1])])
            width = rows.shape[1]
        if rows.shape[1] < width:
            rows = np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=np.nan)
        return rows

    def _split(self, rows: Matrix) -> tuple[Matrix, Matrix]:
        cond_idx = [self.feature_names.index(c) for c in self.condition if c in self.feature_names]
        self._sensor_idx = [i for i in range(len(self.feature_names)) if i not in cond_idx]
        return rows[:, cond_idx], rows[:, self._sensor_idx]

    def _refit(self) -> None:
        if self._n == 0:
            raise ModelError(f"{type(self).__name__} has learned no rows; fit it on normal operation first")
        base = self._width(np.vstack([self._width(r) for r in self._rows]))
        if len(base) > self.max_rows:
            pick = np.random.default_rng(self.seed).choice(len(base), self.max_rows, replace=False)
            base = base[np.sort(pick)]
        self._rows = [base]
        cond, sens = self._split(base)
        self._encoder = ConditionEncoder().fit(cond) if cond.shape[1] else ConditionEncoder()
        codes = self._encoder.transform(cond) if cond.shape[1] else None
        self._scaler = RegimeScaler().fit(sens, codes)
        z = np.nan_to_num(self._scaler.transform(sens, codes), nan=0.0)
        self._expected = np.isfinite(sens).mean(axis=0) >= 0.99
        self._may_repeat = np.asarray((_repeats(sens) >= self.stuck_rows).any(axis=0))
        self._fit(z)
        self._fitted_n = self._n

    def _prepare(self, rows: Matrix) -> tuple[Matrix, Matrix]:
        if self._n == 0:
            raise ModelError(f"{type(self).__name__} has learned no rows; fit it on normal operation first")
        if self._fitted_n == 0 or self._n > 1.25 * self._fitted_n:
            self._refit()
        rows = self._width(np.asarray(rows, dtype=np.float64))
        cond, sens = self._split(rows)
        codes = self._encoder.transform(cond) if cond.shape[1] and self._encoder.regimes else None
        stuck = (_repeats(sens) >= self.stuck_rows) & ~self._may_repeat[: sens.shape[1]]
        missing = ((~np.isfinite(sens) & self._expected[: sens.shape[1]]) | stuck).astype(np.float64)
        z = np.nan_to_num(self._scaler.transform(sens, codes), nan=0.0, posinf=1e6, neginf=-1e6)
        return z, missing


def _repeats(x: Matrix) -> npt.NDArray[np.int64]:
    """Per row and column, how many rows in a row (this one included) have held exactly this finite value."""
    same = np.vstack([np.zeros((1, x.shape[1]), dtype=bool), x[1:] == x[:-1]])
    i = np.arange(len(x))[:, None]
    last_change = np.maximum.accumulate(np.where(same, 0, i), axis=0)
    return np.asarray(i - last_change + 1, dtype=np.int64)
