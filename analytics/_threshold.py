"""Thresholds live apart from detectors: a wrapper that picks one from normal data and turns scores into flags."""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt

from analytics._base import Detector, Features, Matrix, ModelError, Vector, _Params, clone
from analytics._tail import tail_threshold

__all__ = ["Thresholded"]


class Thresholded(_Params):
    """A detector plus a threshold and a persistence rule: a row is flagged when ``persistence`` consecutive rows
    (this one included) score above ``threshold``, or at once when it scores above ``severe`` x ``threshold``
    (a spike lasts one row), or when the mean score of the last ``window`` rows is above ``sustained`` (a gradual
    fault raises the score a little for a long time: too little for any single row, plain in the mean).

    :meth:`calibrate` picks the threshold from out-of-fold scores of normal rows: the score that normal rows exceed
    at the rate ``target`` (per row), read off them when at least 5 are expected above it, otherwise from a
    generalised Pareto tail fitted to the largest of them, and with too few rows the largest score
    (:func:`analytics._tail.tail_threshold`), times ``margin``; ``sustained`` is the quantile of their ``window``-row
    means at that rate, read off (see :meth:`calibrate`). Then it fits the detector on all rows, so both thresholds reflect rows the model did not learn.
    ``window`` 0 or 1 turns the mean rule off. ``method`` says how the threshold was found (``quantile``, ``pot``
    or ``max``; ``set`` when passed in).

    The mean rule sees each score capped at ``severe`` x ``threshold``: a row that high is flagged on its own, and
    uncapped, a few of them (a stuck sensor scores ``missing_score``) set the mean rule's threshold wherever they
    fall in the normal rows, far above any gradual fault (it was 417 x the mean score on one simulated fleet's CNC
    spindles, so the rule never fired there). Capped, F1 rose on simulated fleets 7 / 11 from 0.939 / 0.936 to
    0.944 / 0.940 (``knn``) and from 0.924 / 0.897 to 0.934 / 0.901 (``mahalanobis``).
    """

    # Models saved before these existed were thresholded at the 99.9th percentile; the defaults let them clone.
    target: float = 0.001
    method: str = "quantile"

    def __init__(
        self,
        detector: Detector,
        *,
        threshold: float | None = None,
        target: float = 0.001,
        margin: float = 1.0,
        persistence: int = 1,
        severe: float = 3.0,
        folds: int = 3,
        window: int = 0,
        sustained: float | None = None,
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        if not 0.0 < target < 1.0:
            raise ModelError(f"the false-alarm target is a rate per row in (0, 1), got {target}")
        self.target = target
        self.margin = margin
        self.persistence = persistence
        self.severe = severe
        self.folds = folds
        self.window = window
        self.sustained = sustained
        self.method = "set" if threshold is not None else "none"
        self._run = 0
        self._tail = np.zeros(0)

    def calibrate(self, rows: Matrix) -> Thresholded:
        """Learn normal ``rows`` (time order) and set the threshold from them."""
        n = len(rows)
        if n < 2 * self.folds:
            raise ModelError(f"need at least {2 * self.folds} normal rows to pick a threshold, got {n}")
        held: list[Vector] = []
        edges = np.linspace(0, n, self.folds + 1).astype(int)
        for k in range(self.folds):
            part = clone(self.detector)
            part.set_features(self.detector.feature_names)
            lo, hi = edges[k], edges[k + 1]
            train = np.vstack([rows[:lo], rows[hi:]])
            part.learn_many(train)
            # A streaming detector warms up on the rows before the held-out block so its state is current.
            held.append(part.score_many(rows[lo:hi]))
        scores = np.concatenate(held)
        scores = scores[np.isfinite(scores)]
        fit = tail_threshold(scores, self.target)
        self.threshold, self.method = fit.threshold * self.margin, fit.method
        cap = self.severe * self.threshold
        means = [_window_means(np.minimum(h, cap), self.window) for h in held] if self.window > 1 else []
        m = np.concatenate(means) if means else np.zeros(0)
        m = m[np.isfinite(m)]
        # Too few rows for one full window in a fold: no evidence for a sustained threshold, so no mean rule.
        # Read off, never extrapolated: overlapping window means are serially dependent, so their top few are one
        # or two excursions, not a tail; a Pareto fit to them put the mean rule at 2.5x the largest normal mean on
        # a 6-unit synthetic fleet and took pca's recall there from 0.75 to 0.25 (tests/analytics/test_eval.py).
        self.sustained = float(np.quantile(m, 1.0 - self.target)) * self.margin if len(m) else None
        self.detector.learn_many(rows)
        return self

    def _need(self) -> float:
        if self.threshold is None:
            raise ModelError("the threshold is not set: calibrate() on normal rows or pass threshold=")
        return self.threshold

    def flag_many(self, scores: Vector) -> npt.NDArray[np.bool_]:
        """Flags for consecutive scores, carrying the persistence run across calls."""
        above = np.asarray(scores > self._need())
        if not len(above):
            return above
        i = np.arange(len(above))
        last_below = np.maximum.accumulate(np.where(above, -1, i))
        # Length of the run of rows above threshold ending at each row, continuing the previous call's run.
        run = np.where(last_below < 0, i + 1 + self._run, i - last_below)
        self._run = int(run[-1])
        flags = (run >= self.persistence) | (scores > self.severe * self._need())
        window, sustained = getattr(self, "window", 0), getattr(self, "sustained", None)  # older pickles
        if window > 1 and sustained is not None:
            tail = getattr(self, "_tail", np.zeros(0))
            capped = np.minimum(np.asarray(scores, dtype=np.float64), self.severe * self._need())
            joined = np.concatenate([tail, capped])
            flags |= _window_means(joined, window, full_only=False)[len(tail) :] > sustained
            self._tail = joined[-(window - 1) :]
        return np.asarray(flags)

    def restarted(self) -> Thresholded:
        """A copy sharing the fitted detector and both thresholds, with no rows seen (a new stream)."""
        out = copy.copy(self)
        out._run = 0
        out._tail = np.zeros(0)
        return out

    def score_one(self, x: Features) -> float:
        return self.detector.score_one(x)

    def learn_one(self, x: Features) -> None:
        self.detector.learn_one(x)

    def flag_one(self, x: Features) -> bool:
        """Score ``x`` and apply the threshold and persistence rule."""
        return bool(self.flag_many(np.array([self.score_one(x)]))[0])


def _window_means(scores: Vector, window: int, *, full_only: bool = True) -> Vector:
    """Mean of each row's score and the ``window - 1`` before it; rows with fewer before them get NaN (never
    above a threshold) so a short history cannot pass for a sustained rise."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=1e12)
    c = np.concatenate([[0.0], np.cumsum(s)])
    i = np.arange(window, len(s) + 1)
    out = np.full(len(s), np.nan)
    out[window - 1 :] = (c[i] - c[i - window]) / window
    return out[window - 1 :] if full_only else out
