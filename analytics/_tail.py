"""A score threshold for a stated false-alarm rate, from the tail of normal scores (peaks over threshold).

A rate of 0.1 % per row cannot be read off a few hundred normal scores: their 99.9th percentile is the largest of
them, and where it falls says little about where one row in a thousand will. Extreme value theory says the
excesses of scores over a high level follow a generalised Pareto distribution whatever the scores' own
distribution (Pickands-Balkema-de Haan), so the tail can be fitted where data are plentiful and extrapolated to
the target (Siffer et al. 2017, "Anomaly detection in streams with extreme value theory", SPOT's initial step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from analytics._base import Vector

__all__ = ["TailFit", "tail_threshold"]

MIN_TAIL = 30
"""Excesses needed to fit the tail; with fewer, the largest normal score is the threshold (no extrapolation)."""

TAIL_SHARE = 0.02
"""Share of the scores above the initial level (SPOT's 98th percentile), raised to ``MIN_TAIL`` rows if short."""

READ_OFF = 5
"""Normal scores expected above the threshold from which it is read off the data instead of a fitted tail."""

MIN_SHAPE = 0.0
"""Lower bound on the fitted shape: a distance has no upper bound, so its tail is at least exponential."""

MAX_SHAPE = 0.5
"""Upper bound on the fitted shape: beyond it the tail's variance is infinite and 30 points cannot tell."""


@dataclass(frozen=True)
class TailFit:
    """A threshold and how it was found: ``pot`` (a fitted tail), ``quantile`` (the target is within the data's
    reach) or ``max`` (too few scores to fit a tail: the largest one)."""

    threshold: float
    method: Literal["pot", "quantile", "max"]
    shape: float = 0.0
    scale: float = 0.0
    tail_rows: int = 0


def tail_threshold(
    scores: Vector, target: float, *, tail_share: float = TAIL_SHARE, min_tail: int = MIN_TAIL
) -> TailFit:
    """The score that normal rows exceed with probability ``target``, from normal ``scores`` (NaN ignored).

    The generalised Pareto tail is fitted by probability-weighted moments (Hosking and Wallis 1987: closed form,
    and steadier than maximum likelihood on a few dozen points), with its shape kept in [0, ``MAX_SHAPE``]. A
    negative shape would claim the scores have an upper bound; a distance to normal rows has none (a Gaussian
    cloud's squared distances have an exponential tail, shape 0), and at 30 points a negative estimate is mostly
    noise that would put the threshold too low. Raised to 0, the tail keeps its fitted scale (its decay at the
    level, where the data are) rather than its mean excess. Measured on synthetic Gaussian rows fit on 300
    (``python -m analytics._threshold_bench``, ``mahalanobis``, seeds 0-4): the free shape gave up to 18.4 x the
    target rate, the shape raised to 0 with the mean excess kept up to 4.35 x, with the scale kept up to 1.35 x.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    n = len(s)
    if not n:
        return TailFit(1.0, "max")
    if target * n >= READ_OFF:
        # Enough rows lie beyond the target's quantile to read it off. A fitted tail would do no better here, and
        # worse where the top scores hold a cluster (a stuck or missing sensor's fixed score in a fleet's normal
        # rows): the tail fit takes the cluster for a heavy tail (20 x the quantile on one simulated machine type).
        return TailFit(float(np.quantile(s, 1.0 - target)), "quantile")
    tail = max(round(tail_share * n), min_tail)
    if 2 * tail > n:
        return TailFit(float(s[-1]), "max")
    level = float(s[n - tail - 1])
    excess = s[n - tail :] - level
    shape, scale = _pwm(excess)
    if not (np.isfinite(shape) and np.isfinite(scale) and scale > 0):
        return TailFit(float(s[-1]), "max")  # scores that stop varying in the tail: nothing to extrapolate
    if shape > MAX_SHAPE:
        shape, scale = MAX_SHAPE, float(excess.mean()) * (1.0 - MAX_SHAPE)  # keep the mean excess, sigma / (1 - xi)
    elif shape < MIN_SHAPE:
        shape = MIN_SHAPE  # keep sigma, the tail's scale at the level: its decay there, where the data are
    ratio = target * n / tail
    step = -scale * np.log(ratio) if abs(shape) < 1e-6 else scale / shape * (ratio**-shape - 1.0)
    return TailFit(level + float(step), "pot", shape, scale, tail)


def _pwm(excess: Vector) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto distribution by probability-weighted moments."""
    y = np.sort(excess)
    k = len(y)
    a0 = float(y.mean())
    a1 = float(np.mean(y * (1.0 - (np.arange(1, k + 1) - 0.35) / k)))
    d = a0 - 2.0 * a1
    if d <= 0:
        return float("nan"), float("nan")
    return 2.0 - a0 / d, 2.0 * a0 * a1 / d
