"""The simulated clock of a live run: an accelerated stretch that ends at "now", then real time.

A sample stamped ahead of the wall clock is not a reading but a dead letter (ingest refuses anything more than
``ingest.max_future_s`` ahead), so an accelerated run plays *recent history*: its clock starts in the past, far
enough that at ``time_scale`` it reaches the wall clock as the accelerated stretch ends, and from there it can only
keep pace with real time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from simulators._scenario import Scenario

__all__ = ["DEFAULT_HISTORY_S", "LivePlan", "default_history_s", "plan_live"]

DEFAULT_HISTORY_S = 3600.0
"""Simulated seconds an accelerated run without ``--steps`` plays before it reaches now, at least."""

_AFTER_LAST_FAULT_S = 300.0
"""Room after the last injected fault ends, so the stages see it through before the clock slows to real time."""


def default_history_s(scenario: Scenario) -> float:
    """The accelerated stretch of an open-ended run: an hour, longer if an injected fault ends later.

    Every injected fault (and a forced degradation's failure, at onset + duration) then happens in the
    accelerated stretch, not hours later in real time.
    """
    last = max((f.onset_s + f.duration_s for f in scenario.faults), default=0.0)
    return max(DEFAULT_HISTORY_S, last + _AFTER_LAST_FAULT_S)


@dataclass(frozen=True)
class LivePlan:
    """Where a live run's simulated clock starts and how long it runs ahead of real time."""

    start_ms: int
    """The first sample's time (ms since the epoch)."""
    accelerated_s: float
    """Simulated seconds played at ``time_scale`` from ``start_ms``; they end when the wall clock gets there."""
    time_scale: float
    steps: int | None
    """The run's length in samples per machine, or None: on until stopped, at real time after the stretch."""

    @property
    def wall_s(self) -> float:
        """Wall seconds the accelerated stretch takes, if publishing keeps up."""
        return self.accelerated_s / self.time_scale if self.time_scale > 1 else 0.0

    def describe(self) -> str:
        """One line for the user: the simulated span, its wall time, and what follows."""
        start = _iso(self.start_ms)
        if self.time_scale <= 1 or self.accelerated_s <= 0:
            then = "until stopped" if self.steps is None else f"for {self.steps} samples per machine"
            return f"simulated time starts at {start}, x{self.time_scale:g} {then}"
        end = _iso(self.start_ms + round(self.accelerated_s * 1000))
        then = "then stops" if self.steps is not None else "then runs on at real time until stopped"
        return (
            f"simulating {start} to {end} ({_span(self.accelerated_s)}) at x{self.time_scale:g}, "
            f"about {_span(self.wall_s)} of wall time, reaching now as it ends; {then}"
        )


def plan_live(
    scenario: Scenario,
    *,
    time_scale: float,
    steps: int | None = None,
    history_s: float | None = None,
    now_ms: int | None = None,
) -> LivePlan:
    """Plan a live run so that no sample is ever stamped ahead of the wall clock.

    The accelerated stretch covers ``steps`` samples when given, else ``history_s``, else
    :func:`default_history_s`. Its last sample is due at the very moment the wall clock reaches its timestamp;
    a run that goes on then follows real time. At ``time_scale`` <= 1 the simulated clock cannot run ahead of
    the wall clock and starts now.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if time_scale <= 1:
        return LivePlan(now_ms, 0.0, time_scale, steps)
    if steps is not None:
        span = (steps - 1) * scenario.sample_period_s
    else:
        span = default_history_s(scenario) if history_s is None else history_s
    # Simulated time t after the start is due at wall time t / time_scale: starting span * (1 - 1/scale) in the
    # past, the stretch's last sample is due exactly when the wall clock reaches its timestamp.
    lead_ms = round(span * (1 - 1 / time_scale) * 1000)
    return LivePlan(now_ms - lead_ms, span, time_scale, steps)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
