"""The estimator contract every detector and RUL model follows, and the errors analytics raises.

Detectors follow river's streaming shape over plain feature dicts: ``learn_one(x)`` updates the model,
``score_one(x)`` returns a non-negative score where higher means more anomalous, and scoring comes before learning
on each new row. Thresholds live in a separate wrapper (:class:`analytics.Thresholded`). Each detector also has
vectorised ``learn_many``/``score_many`` over a matrix whose columns follow ``feature_names``, which the worker
and the benchmarks use, and ``explain_one`` naming how much each feature drove a score.

RUL estimators ``fit`` on run-to-failure histories and ``predict`` the remaining life with an interval at the
last time of each history.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from wearline.errors import WearlineError

__all__ = [
    "AnalyticsError",
    "DataError",
    "Detector",
    "Features",
    "Matrix",
    "ModelError",
    "RulEstimator",
    "RulPrediction",
    "RunHistory",
    "Vector",
    "clone",
]

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]
Features = Mapping[str, float | None]
"""One row: sensor or feature name to value; a missing or ``None`` value is treated as not measured."""

E = TypeVar("E", bound="_Params")


class AnalyticsError(WearlineError):
    """Base of the errors the analytics package raises."""


class DataError(AnalyticsError):
    """Input data that cannot be used; the message names the file, row or column at fault."""


class ModelError(AnalyticsError):
    """A model file that cannot be loaded, or a model used before it was fitted."""


class _Params:
    """Constructor parameters are kept as attributes of the same name, so an estimator can be cloned."""

    def params(self) -> dict[str, Any]:
        """The constructor arguments this estimator was built with."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: copy.deepcopy(getattr(self, n)) for n in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def clone(estimator: E) -> E:
    """A fresh, unfitted estimator with the same parameters (wrapped estimators are cloned too)."""
    params = {k: clone(v) if isinstance(v, _Params) else v for k, v in estimator.params().items()}
    return type(estimator)(**params)


class Detector(_Params, ABC):
    """An anomaly detector: scores rows, higher is more anomalous; never thresholds by itself."""

    def __init__(self) -> None:
        self.feature_names: list[str] = []
        self._index: dict[str, int] = {}

    # -- dict interface -------------------------------------------------------------------------------------
    def learn_one(self, x: Features) -> None:
        """Update the model with one row believed to be normal operation."""
        self.learn_many(self._row(x, grow=True)[None, :])

    def score_one(self, x: Features) -> float:
        """Anomaly score of one row (0 or more; higher is more anomalous)."""
        return float(self.score_many(self._row(x, grow=False)[None, :])[0])

    def explain_one(self, x: Features) -> dict[str, float]:
        """Each known feature's share in the score of ``x``, largest first."""
        contrib = self.contributions(self._row(x, grow=False)[None, :])[0]
        pairs = sorted(zip(self.feature_names, contrib.tolist(), strict=True), key=lambda p: -p[1])
        return dict(pairs)

    # -- matrix interface -----------------------------------------------------------------------------------
    def set_features(self, names: Sequence[str]) -> None:
        """Fix the column order of the matrix interface (new names are appended; known names keep their place)."""
        for n in names:
            if n not in self._index:
                self._index[n] = len(self.feature_names)
                self.feature_names.append(n)

    @abstractmethod
    def learn_many(self, rows: Matrix) -> None:
        """Learn rows (columns in ``feature_names`` order; NaN means missing) as normal operation."""

    @abstractmethod
    def score_many(self, rows: Matrix) -> Vector:
        """Scores for rows in time order, without learning from them (a streaming detector carries its state
        through the batch as if it had learned each row, then forgets)."""

    def process_many(self, rows: Matrix) -> Vector:
        """Score rows in time order, learning each after scoring it: the streaming worker's step."""
        scores = self.score_many(rows)
        self.learn_many(rows)
        return scores

    @abstractmethod
    def contributions(self, rows: Matrix) -> Matrix:
        """Per row and feature, how much that feature drove the score (non-negative)."""

    def _row(self, x: Features, *, grow: bool) -> Vector:
        if grow:
            self.set_features([k for k in x if k not in self._index])
        out = np.full(len(self.feature_names), np.nan)
        for k, v in x.items():
            i = self._index.get(k)
            if i is not None and v is not None:
                out[i] = float(v)
        return out


@dataclass(frozen=True)
class RunHistory:
    """One unit's history: times in hours (increasing), one row of features per time, optional condition labels."""

    unit: str
    time: Vector
    values: Matrix
    condition: npt.NDArray[np.int64] | None = None
    failed: bool = True
    """True when the history ends at failure (training runs); False for a unit still running."""
    start: float | None = None
    """When the unit started (hours), if before the first row: a live machine's history is only a window."""

    def __post_init__(self) -> None:
        if len(self.time) == 0:
            raise DataError(f"unit {self.unit}: no rows")
        if self.values.ndim != 2 or self.values.shape[0] != self.time.shape[0]:
            raise DataError(f"unit {self.unit}: {self.values.shape[0]} rows of values for {len(self.time)} times")
        if self.condition is not None and self.condition.shape[0] != self.time.shape[0]:
            raise DataError(f"unit {self.unit}: condition labels do not match the rows")


@dataclass(frozen=True)
class RulPrediction:
    """Remaining useful life (hours) at the last time of a history, with a prediction interval."""

    unit: str
    time: float
    rul: float
    lower: float
    upper: float


class RulEstimator(_Params, ABC):
    """Fits on run-to-failure histories; predicts remaining life with a ``coverage`` prediction interval."""

    feature_names: list[str]

    @abstractmethod
    def fit(self, runs: Sequence[RunHistory], feature_names: Sequence[str]) -> RulEstimator:
        """Learn from histories that each end at failure; returns self."""

    @abstractmethod
    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        """One prediction per history, at its last time."""

    def summary(self) -> dict[str, object]:
        """What the model file's metadata should state about the fitted model (its cap, its own figures)."""
        return {}
