"""The live clock: an accelerated run plays recent history that ends at now, never ahead of the wall clock."""

from __future__ import annotations

import pytest

from simulators import DEFAULT_HISTORY_S, FaultSpec, Scenario, default_history_s, plan_live

NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize("scale", [2.0, 60.0, 1000.0])
@pytest.mark.parametrize("steps", [1, 2, 100, 3600])
def test_the_last_step_is_due_when_the_wall_clock_reaches_it(scale: float, steps: int) -> None:
    plan = plan_live(Scenario(sample_period_s=2.0), time_scale=scale, steps=steps, now_ms=NOW_MS)
    for k in range(steps):
        stamped_ms = plan.start_ms + k * 2_000
        due_ms = NOW_MS + k * 2_000 / scale  # the wall clock when the accelerated schedule publishes step k
        assert stamped_ms <= due_ms + 1  # one millisecond of rounding
    last_ms = plan.start_ms + (steps - 1) * 2_000
    assert last_ms == pytest.approx(NOW_MS + (steps - 1) * 2_000 / scale, abs=1)
    assert plan.accelerated_s == (steps - 1) * 2.0


def test_an_open_ended_run_covers_the_scenarios_injected_faults() -> None:
    plant = Scenario(faults=(FaultSpec(2, "bearing_wear", 600, 1800), FaultSpec(1, "stuck", 300, 120)))
    assert default_history_s(plant) == DEFAULT_HISTORY_S  # the failure at 2,400 s is inside the hour
    late = Scenario(faults=(FaultSpec(0, "bearing_wear", 5_000, 2_000),))
    assert default_history_s(late) == 7_000 + 300
    plan = plan_live(late, time_scale=60, now_ms=NOW_MS)
    assert plan.accelerated_s == 7_300
    assert plan.start_ms == NOW_MS - round(7_300 * 59 / 60 * 1000)
    assert plan_live(late, time_scale=60, history_s=100, now_ms=NOW_MS).accelerated_s == 100


def test_real_time_and_slow_motion_start_now() -> None:
    for scale in (1.0, 0.5):
        plan = plan_live(Scenario(), time_scale=scale, steps=100, now_ms=NOW_MS)
        assert plan.start_ms == NOW_MS
        assert plan.accelerated_s == 0


def test_the_plan_says_which_span_it_covers() -> None:
    text = plan_live(Scenario(), time_scale=60, now_ms=NOW_MS).describe()
    assert text.startswith("simulating 2027-01-15 07:01:00 UTC to 2027-01-15 08:01:00 UTC (60 min) at x60")
    assert "about 60 s of wall time" in text
    assert text.endswith("then runs on at real time until stopped")
    assert plan_live(Scenario(), time_scale=60, steps=600, now_ms=NOW_MS).describe().endswith("then stops")
