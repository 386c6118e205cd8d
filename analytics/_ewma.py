"""Streaming per-sensor detector: a fast EWMA of each sensor against a slow, robustly scaled EWMA level and trend.

Vectorised over a batch with linear filters, so one machine's backlog or many machines' rows score at numpy speed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter  # type: ignore[import-untyped]

from analytics._base import Detector, Matrix, Vector

__all__ = ["EwmaMad"]

_MAD_TO_SIGMA = 1.4826


@dataclass
class _State:
    """One regime's filter state per sensor."""

    seen: int = 0
    buffer: list[Vector] = field(default_factory=list)
    fast: Vector = field(default_factory=lambda: np.zeros(0))
    slow: Vector = field(default_factory=lambda: np.zeros(0))
    trend: Vector = field(default_factory=lambda: np.zeros(0))
    scale: Vector = field(default_factory=lambda: np.zeros(0))
    band_left: int = 0
    """Rows left before the clip band (``band_slow`` +- clip x ``band_scale``) is set again from the state."""
    band_slow: Vector = field(default_factory=lambda: np.zeros(0))
    band_scale: Vector = field(default_factory=lambda: np.zeros(0))

    def grow(self, width: int) -> None:
        add = width - len(self.slow)
        if add > 0:
            self.band_left = 0  # a new sensor: set the band again, with it
            self.fast = np.concatenate([self.fast, np.full(add, np.nan)])
            self.slow = np.concatenate([self.slow, np.full(add, np.nan)])
            self.trend = np.concatenate([self.trend, np.zeros(add)])
            self.scale = np.concatenate([self.scale, np.full(add, np.nan)])


class EwmaMad(Detector):
    """Score per sensor = max(|fast - slow| / scale, trend_weight * |slow trend| * slow_span / scale).

    ``slow`` follows the normal level (it adapts, so slow load swings are not flagged), ``scale`` is an EWMA of
    the absolute deviation from it with outliers clipped at ``clip`` scales (a fault does not widen its own
    yardstick), and the first ``warmup`` rows seed level and scale from their median and MAD without being scored.
    Regime-aware: rows are split by the values of the ``condition`` features (rounded to ``condition_digits``)
    and each regime is its own stream with its own state, so switching between conditions is not a fault.
    The row score is the largest sensor score; :meth:`contributions` gives the per-sensor scores.
    """

    def __init__(
        self,
        *,
        fast_span: float = 5.0,
        slow_span: float = 300.0,
        warmup: int = 30,
        clip: float = 4.0,
        trend_weight: float = 0.5,
        rel_floor: float = 1e-3,
        condition: Sequence[str] = (),
        condition_digits: int = 1,
    ) -> None:
        super().__init__()
        self.fast_span = fast_span
        self.slow_span = slow_span
        self.warmup = warmup
        self.clip = clip
        self.trend_weight = trend_weight
        self.rel_floor = rel_floor
        self.condition = list(condition)
        self.condition_digits = condition_digits
        # Keyed by the regime's condition values as text: a model file (skops) keeps string keys only.
        self._states: dict[str, _State] = {}

    def learn_many(self, rows: Matrix) -> None:
        self._run(rows, commit=True)

    def score_many(self, rows: Matrix) -> Vector:
        per = self._run(rows, commit=False)
        return np.asarray(per.max(axis=1, initial=0.0), dtype=np.float64)

    def process_many(self, rows: Matrix) -> Vector:
        per = self._run(rows, commit=True)
        return np.asarray(per.max(axis=1, initial=0.0), dtype=np.float64)

    def contributions(self, rows: Matrix) -> Matrix:
        return self._run(rows, commit=False)

    def sensor_scores(self, rows: Matrix) -> Matrix:
        """Per-sensor scores of rows in time order, learning each row after scoring it."""
        return self._run(rows, commit=True)

    # -- internals ---------------------------------------------------------------------------------------
    def _run(self, rows: Matrix, *, commit: bool) -> Matrix:
        rows = np.asarray(rows, dtype=np.float64)
        width = max(rows.shape[1], len(self.feature_names))
        if rows.shape[1] < width:
            rows = np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=np.nan)
        if len(self.feature_names) < width:
            self.set_features([f"x{i}" for i in range(len(self.feature_names), width)])
        cond_idx = [self.feature_names.index(c) for c in self.condition if c in self.feature_names]
        out = np.zeros(rows.shape)
        if not cond_idx:
            groups: list[tuple[str, npt.NDArray[np.intp]]] = [("", np.arange(len(rows)))]
        else:
            keys = np.round(np.nan_to_num(rows[:, cond_idx], nan=-1.0), self.condition_digits)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            groups = [
                (",".join(repr(float(v)) for v in u), np.flatnonzero(inv.ravel() == g)) for g, u in enumerate(uniq)
            ]
        for key, idx in groups:
            state = self._states.get(key)
            state = _State() if state is None else copy.deepcopy(state) if not commit else state
            out[idx] = self._stream(state, rows[idx], width)
            if commit:
                self._states[key] = state
        out[:, cond_idx] = 0.0
        return out

    def _stream(self, st: _State, rows: Matrix, width: int) -> Matrix:
        st.grow(width)
        out = np.zeros(rows.shape)
        start = 0
        if st.seen < self.warmup:
            # Warm-up rows seed the level and scale and are not scored.
            start = min(self.warmup - st.seen, len(rows))
            st.buffer.extend(rows[:start])
            st.seen += start
            if st.seen >= self.warmup:
                _seed(st, np.array(st.buffer))
        # The clip band is fixed for a quarter of the slow span at a time, counted in rows of the stream, not of
        # the call: scores must not depend on how a stream is cut into batches (a worker that keeps up scores a
        # few rows a pass; evaluation scores a whole history at once).
        i = start
        while i < len(rows):
            fresh = st.band_left <= 0
            if fresh:
                st.band_left = max(int(self.slow_span) // 4, 1)
            n = min(st.band_left, len(rows) - i)
            out[i : i + n] = self._chunk(st, rows[i : i + n], fresh_band=fresh)
            st.band_left -= n
            i += n
        st.seen += len(rows) - start
        return out

    def _chunk(self, st: _State, x: Matrix, *, fresh_band: bool) -> Matrix:
        a_f = 2.0 / (self.fast_span + 1.0)
        a_s = 2.0 / (self.slow_span + 1.0)
        # A sensor first seen now starts from its first value; missing values carry the last known one forward.
        first = _first_valid(x)
        fast0 = np.where(np.isfinite(st.fast), st.fast, first)
        slow0 = np.where(np.isfinite(st.slow), st.slow, first)
        trend0 = np.nan_to_num(st.trend)
        missing = ~np.isfinite(x)
        x = _ffill(x, fast0)
        floor = self.rel_floor * np.maximum(np.abs(slow0), 1.0)
        scale0 = np.where(np.isfinite(st.scale), np.maximum(st.scale, floor), floor)
        if fresh_band:
            st.band_slow, st.band_scale = slow0.copy(), scale0.copy()
        # Clip outliers before they reach the level and scale (against the band's scale).
        band_slow, band_scale = st.band_slow, st.band_scale
        xc = np.clip(x, band_slow - self.clip * band_scale, band_slow + self.clip * band_scale)
        fast = _ewma(x, a_f, fast0)
        slow = _ewma(xc, a_s, slow0)
        slow_prev = np.vstack([slow0[None, :], slow[:-1]])
        trend = _ewma(np.diff(np.vstack([slow0[None, :], slow]), axis=0), a_s, trend0)
        trend_prev = np.vstack([trend0[None, :], trend[:-1]])
        dev = np.minimum(np.abs(x - slow_prev), self.clip * band_scale)
        scale = np.maximum(_ewma(dev / 0.8, a_s, scale0), floor)  # E|N(0,s)| = 0.8 s
        scale_prev = np.vstack([scale0[None, :], scale[:-1]])
        level = np.abs(fast - slow_prev) / scale_prev
        drift = self.trend_weight * np.abs(trend_prev) * self.slow_span / scale_prev
        per = np.maximum(level, drift)
        per[missing] = 0.0
        st.fast, st.slow, st.trend, st.scale = fast[-1], slow[-1], trend[-1], scale[-1]
        return np.asarray(np.nan_to_num(per, nan=0.0), dtype=np.float64)


def _seed(st: _State, base: Matrix) -> None:
    with np.errstate(all="ignore"):
        ok = np.isfinite(base).any(axis=0)
        filled = np.where(np.isfinite(base), base, 0.0)
        med = np.where(ok, np.median(filled, axis=0), np.nan)
        mad = np.median(np.abs(filled - np.nan_to_num(med)), axis=0)
    st.fast = med.copy()
    st.slow = med.copy()
    st.trend = np.zeros_like(med)
    st.scale = np.where(ok, _MAD_TO_SIGMA * mad, np.nan)
    st.buffer = []


def _ewma(x: Matrix, alpha: float, y0: Vector) -> Matrix:
    zi = ((1.0 - alpha) * y0)[None, :]
    y, _ = lfilter([alpha], [1.0, alpha - 1.0], x, axis=0, zi=zi)
    return np.asarray(y, dtype=np.float64)


def _first_valid(x: Matrix) -> Vector:
    ok = np.isfinite(x)
    idx = ok.argmax(axis=0)
    vals = x[idx, np.arange(x.shape[1])]
    return np.where(ok.any(axis=0), vals, 0.0)


def _ffill(x: Matrix, start: Vector) -> Matrix:
    """Replace NaN by the last finite value above it (``start`` before the first)."""
    x = np.vstack([np.where(np.isfinite(start), start, 0.0)[None, :], x])
    ok = np.isfinite(x)
    idx = np.where(ok, np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return np.asarray(x[idx, np.arange(x.shape[1])][1:], dtype=np.float64)
