"""The offline interface's models: RUL and anomaly bundles that remember their columns, built from tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from analytics._base import DataError, Detector, Matrix, RulEstimator, RulPrediction, RunHistory, Vector
from analytics._changes import row_changes
from analytics._ewma import EwmaMad
from analytics._iforest import IsolationForest
from analytics._knn import KnnDistance
from analytics._mahalanobis import Mahalanobis
from analytics._pca import PcaT2Q
from analytics._regime import Codes, ConditionEncoder
from analytics._rul_gbm import GbmRul
from analytics._tabular import Table
from analytics._threshold import Thresholded

__all__ = [
    "DETECTORS",
    "AnomalyModel",
    "DetectorName",
    "RulModel",
    "RulName",
    "default_features",
    "make_detector",
    "make_rul",
]

DetectorName = Literal["pca", "mahalanobis", "knn", "iforest", "ewma"]
RulName = Literal["gbm"]


DETECTORS: dict[str, Callable[..., Detector]] = {
    # The detectors by the names the CLI, the evaluation, the benchmark and the worker's anomaly labels use.
    "pca": PcaT2Q,
    "mahalanobis": Mahalanobis,
    "knn": KnnDistance,
    "iforest": IsolationForest,
    "ewma": EwmaMad,
}


def make_detector(name: DetectorName, condition: Sequence[str] = (), seed: int = 0) -> Detector:
    """A fresh detector by name."""
    if name == "ewma":
        return EwmaMad(condition=condition)
    return DETECTORS[name](condition=condition, seed=seed)


def detector_name(detector: Detector) -> str:
    """The name ``make_detector`` knows ``detector`` by (the worker labels its anomalies with it)."""
    return next((n for n, cls in DETECTORS.items() if type(detector) is cls), type(detector).__name__.lower())


def make_rul(
    name: RulName, coverage: float = 0.9, seed: int = 0, params: Mapping[str, Any] | None = None
) -> RulEstimator:
    """A fresh RUL estimator by name, with ``params`` for its other settings (``trend`` was removed: it never beat
    ``gbm``, issue 13)."""
    if name != "gbm":
        raise DataError(f"unknown RUL model {name!r}: the one RUL model is gbm (trend was removed, issue 13)")
    return GbmRul(coverage=coverage, seed=seed, **(params or {}))


_NOT_SENSORS = frozenset(
    {"", "index", "id", "time", "timestamp", "ts", "date", "datetime", "hour", "hours", "cycle", "cycles", "unit",
     "unit_id", "machine", "machine_id", "engine", "run", "step"}
)  # fmt: skip
"""Column names that say time or identity, never a sensor: not taken as features unless named in ``--features``."""


def default_features(table: Table, exclude: Sequence[str]) -> list[str]:
    """Every numeric column not named in ``exclude``, not an unnamed index column, not named like a time or unit
    column (:data:`_NOT_SENSORS`) and not a counter (strictly increasing over the whole file: a clock or a row
    number). A model that took the time as a feature would call every new row an anomaly (issue 13 item 5)."""
    out = [
        n
        for n in table.names
        if n not in exclude
        and not n.startswith("column")
        and n.strip().lower() not in _NOT_SENSORS
        and table.is_numeric(n)
        and not _counter(table.numeric(n))
    ]
    if not out:
        raise DataError(f"{table.path}: no numeric feature columns besides {', '.join(exclude)}")
    return out


def _counter(x: Vector) -> bool:
    """True for a column of at least 3 values that rises at every row."""
    return len(x) >= 3 and bool(np.all(np.diff(x) > 0))


@dataclass
class _Conditions:
    """Condition columns to regime codes; text columns (a product, a recipe) are categories."""

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    encoder: ConditionEncoder = field(default_factory=ConditionEncoder)

    def matrix(self, table: Table) -> Matrix:
        table.need(self.columns, "condition")
        cols = []
        for c in self.columns:
            if c in self.categories or not table.is_numeric(c):
                known = self.categories.setdefault(c, sorted(set(table.cols[c])))
                cols.append(np.array([known.index(v) if v in known else -1 for v in table.cols[c]], dtype=float))
            else:
                cols.append(table.numeric(c))
        return np.column_stack(cols) if cols else np.zeros((len(table), 0))

    def fit_codes(self, table: Table) -> np.ndarray | None:
        if not self.columns:
            return None
        m = self.matrix(table)
        self.encoder = ConditionEncoder().fit(m)
        return self.encoder.transform(m)

    def codes(self, table: Table) -> np.ndarray | None:
        return self.codes_of(self.matrix(table))

    def codes_of(self, values: Matrix) -> np.ndarray | None:
        """Regime codes of condition values given as numbers, one column per condition in order (the worker reads
        them from the hourly rollup; an hour that straddles a change goes to the nearest known regime)."""
        return self.encoder.transform(values) if self.columns else None

    @property
    def text(self) -> list[str]:
        """The condition columns that are categories (a product, a recipe): readings carry numbers only."""
        return [c for c in self.columns if c in self.categories]


def _runs(
    table: Table, *, unit: str, time: str, features: list[str], codes: np.ndarray | None, rows: np.ndarray | None = None
) -> list[RunHistory]:
    t = table.hours(time)
    units = np.array(table.cols[unit])
    vals = np.column_stack([table.numeric(f) for f in features])
    idx_all = np.arange(len(t)) if rows is None else rows
    runs = []
    for u in dict.fromkeys(units[idx_all].tolist()):
        idx = idx_all[units[idx_all] == u]
        idx = idx[np.argsort(t[idx], kind="stable")]
        if np.any(~np.isfinite(t[idx])):
            raise DataError(f"{table.path}: unit {u} has missing times in column {time!r}")
        runs.append(RunHistory(str(u), t[idx], vals[idx], None if codes is None else codes[idx]))
    return runs


@dataclass
class RulModel:
    """RUL models (one per group, for example per machine type) plus the columns they read."""

    unit: str
    time: str
    features: list[str]
    conditions: _Conditions
    by: str | None
    estimators: dict[str, RulEstimator]
    life_hours: dict[str, float]

    @classmethod
    def fit(
        cls,
        table: Table,
        *,
        unit: str,
        time: str,
        features: Sequence[str] | None = None,
        condition: Sequence[str] = (),
        by: str | None = None,
        model: RulName = "gbm",
        coverage: float = 0.9,
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
    ) -> RulModel:
        table.need([unit, time], "unit/time")
        if by:
            table.need([by], "group (--by)")
        feats = list(features) if features else default_features(table, [unit, time, *condition, *([by] if by else [])])
        table.need(feats, "feature")
        for f in feats:
            table.numeric(f)
        conds = _Conditions(list(condition))
        codes = conds.fit_codes(table)
        groups = np.array(table.cols[by]) if by else np.full(len(table), "all")
        estimators: dict[str, RulEstimator] = {}
        lives: dict[str, float] = {}
        for g in dict.fromkeys(groups.tolist()):
            runs = _runs(table, unit=unit, time=time, features=feats, codes=codes, rows=np.flatnonzero(groups == g))
            est = make_rul(model, coverage, seed, params)
            estimators[str(g)] = est.fit(runs, feats)
            lives[str(g)] = float(np.mean([r.time[-1] - r.time[0] for r in runs]))
        return cls(unit, time, feats, conds, by, estimators, lives)

    def predict(self, table: Table) -> list[RulPrediction]:
        """One prediction per unit of ``table``, at its last time."""
        table.need([self.unit, self.time, *self.features], "model's")
        groups = np.array(table.cols[self.by]) if self.by else np.full(len(table), "all")
        codes = self.conditions.codes(table)
        out: list[RulPrediction] = []
        for g in dict.fromkeys(groups.tolist()):
            est = self.estimators.get(str(g))
            if est is None:
                raise DataError(f"{table.path}: no model for {self.by} {g!r}; trained for {sorted(self.estimators)}")
            out.extend(
                est.predict(
                    _runs(
                        table,
                        unit=self.unit,
                        time=self.time,
                        features=self.features,
                        codes=codes,
                        rows=np.flatnonzero(groups == g),
                    )
                )
            )
        return out


@dataclass
class AnomalyModel:
    """A thresholded detector plus the feature and condition columns it reads.

    With a ``unit`` column each unit is a stream of its own (its rows in time order), and with ``changes`` the
    detector also sees each sensor's change from the unit's row before (:func:`row_changes`), named ``Δ<sensor>``.
    """

    features: list[str]
    condition: list[str]
    detector: Thresholded
    conditions: _Conditions | None = None
    unit: str | None = None
    changes: bool = False
    warmup: int = 3
    """Rows at the start of a unit whose changes are not scored (a cold start moves every sensor)."""

    @classmethod
    def fit(
        cls,
        table: Table,
        *,
        features: Sequence[str] | None = None,
        condition: Sequence[str] = (),
        detector: DetectorName = "knn",
        persistence: int = 1,
        window: int = 12,
        unit: str | None = None,
        changes: bool = True,
        seed: int = 0,
        target: float = 0.001,
    ) -> AnomalyModel:
        """Fit on normal rows of ``table``; with ``unit`` (each unit's rows in time order) and ``changes``, the
        detector also sees each sensor's change from the row before. The threshold is set so that normal rows
        score above it at the rate ``target`` (see :class:`Thresholded`)."""
        exclude = [*condition, *([unit] if unit else [])]
        feats = list(features) if features else default_features(table, exclude)
        table.need([*feats, *condition, *([unit] if unit else [])], "feature/condition/unit")
        det = make_detector(detector, condition, seed)
        with_changes = changes and unit is not None
        det.set_features([*feats, *([f"Δ{f}" for f in feats] if with_changes else []), *condition])
        conds = _Conditions(list(condition))
        conds.fit_codes(table)
        wrapper = Thresholded(det, persistence=persistence, window=window, target=target)
        model = cls(feats, list(condition), wrapper, conds, unit, with_changes)
        model.detector.calibrate(model.prepare(model._raw(table), model._codes(table), model._units(table)))
        return model

    def prepare(self, raw: Matrix, codes: Codes, units: Sequence[npt.NDArray[np.int64]]) -> Matrix:
        """The detector's input from raw rows (the features, then the condition columns) and their regime codes;
        ``units`` holds each unit's row indices in time order."""
        if not self.changes:
            return raw
        n = len(self.features)
        changes = np.zeros((len(raw), n))
        for idx in units:
            changes[idx] = row_changes(raw[idx, :n], codes[idx], warmup=self.warmup)
        return np.hstack([raw[:, :n], changes, raw[:, n:]])

    def matrix(self, table: Table) -> Matrix:
        """The detector's input for the rows of ``table``."""
        return self.prepare(self._raw(table), self._codes(table), self._units(table))

    def score(self, table: Table) -> tuple[Vector, npt.NDArray[np.bool_]]:
        """Score and flag each row of ``table`` (in file order; each unit is a stream of its own)."""
        scores = self.detector.detector.score_many(self.matrix(table))
        flags = np.zeros(len(scores), dtype=bool)
        for idx in self._units(table):
            flags[idx] = self.detector.restarted().flag_many(scores[idx])
        return scores, flags

    def contributions(self, rows: Matrix) -> Matrix:
        """Per prepared row and feature, how much that sensor drove the score (its change included)."""
        c = self.detector.detector.contributions(rows)
        n = len(self.features)
        return c[:, :n] + c[:, n : 2 * n] if self.changes else c[:, :n]

    def drivers(self, table: Table, top: int = 3) -> list[list[str]]:
        """The ``top`` sensors that drove each row's score."""
        order = np.argsort(-self.contributions(self.matrix(table)), axis=1)[:, :top]
        return [[self.features[j] for j in row] for row in order]

    def _raw(self, table: Table) -> Matrix:
        table.need([*self.features, *self.condition], "model's")
        rows = _matrix(table, self.features)
        if self.conditions is not None and self.condition:
            rows = np.hstack([rows, self.conditions.matrix(table)])
        return rows

    def _codes(self, table: Table) -> Codes:
        codes = self.conditions.codes(table) if self.conditions is not None else None
        return np.zeros(len(table), dtype=np.int64) if codes is None else codes

    def _units(self, table: Table) -> list[npt.NDArray[np.int64]]:
        """Row indices of each unit, in file order (all rows are one unit without a unit column)."""
        if not self.unit:
            return [np.arange(len(table))]
        table.need([self.unit], "unit")
        units = np.array(table.cols[self.unit])
        return [np.flatnonzero(units == u) for u in dict.fromkeys(units.tolist())]


def _matrix(table: Table, cols: Sequence[str]) -> Matrix:
    return np.column_stack([table.numeric(c) for c in cols])
