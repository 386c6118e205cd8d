"""The fleet engine: determinism, exact RUL, physical bounds, faults labelled where they show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulators import (
    FAULT_KINDS,
    FAULT_LABELS,
    MACHINE_TYPES,
    FaultSpec,
    Fleet,
    Frame,
    MachineGroup,
    Scenario,
    ScenarioError,
    load_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
ALL_TYPES = tuple(MachineGroup(t, 3, initial_age=(0.2, 0.9), life_scale=0.002) for t in MACHINE_TYPES)


def run(fleet: Fleet, steps: int, dt: float = 1.0) -> list[list[Frame]]:
    return [fleet.step(k * dt) for k in range(steps)]


def stacked(frames: list[list[Frame]], attr: str) -> np.ndarray:
    return np.stack([np.concatenate([np.atleast_1d(getattr(f, attr)).ravel() for f in step]) for step in frames])


def test_same_seed_same_stream_and_another_seed_another() -> None:
    scenario = load_scenario(ROOT / "deploy/scenarios/plant.toml")
    a, b = (run(Fleet(scenario, start_ms=1_700_000_000_000), 200) for _ in range(2))
    other = run(Fleet(scenario, seed=scenario.seed + 1, start_ms=1_700_000_000_000), 200)
    for attr in ("values", "health", "rul_h", "fault_code", "failure_mode", "condition"):
        np.testing.assert_array_equal(stacked(a, attr), stacked(b, attr))
    assert not np.array_equal(stacked(a, "values"), stacked(other, "values"), equal_nan=True)


def test_true_rul_falls_by_exactly_the_elapsed_time_until_failure() -> None:
    scenario = Scenario(groups=ALL_TYPES, repair_h=0.05)
    fleet = Fleet(scenario)
    dt = 10.0
    steps = run(fleet, 400, dt)
    rul = stacked(steps, "rul_h")
    health = stacked(steps, "health")
    failures = [e for e in fleet.events if e.kind == "failure"]
    assert failures, "short lives should fail some machines within the run"
    drop = rul[:-1] - rul[1:]
    within_life = (rul[1:] > 0) & (drop > -1e-9)
    np.testing.assert_allclose(drop[within_life], dt / 3600, atol=1e-9)
    for e in failures:
        k = int(np.ceil(e.time_s / dt))  # the first sample at or after the failure
        if k < len(steps):
            assert rul[k, e.machine] == 0.0
            assert health[k, e.machine] == 0.0
            before = k - 1
            assert rul[before, e.machine] == pytest.approx((e.time_s - before * dt) / 3600, abs=1e-9)
    assert any(e.kind == "repair" for e in fleet.events), "a failed machine is repaired and restored"
    assert np.all((health >= 0) & (health <= 1))


@pytest.mark.parametrize("mtype", list(MACHINE_TYPES))
def test_values_stay_within_physical_bounds(mtype: str) -> None:
    scenario = Scenario(
        groups=(MachineGroup(mtype, 20, initial_age=(0.0, 0.95), life_scale=0.001, schedule="two_shift"),),
        fault_rate_per_day=2000.0,
        condition_hold_h=0.01,
        repair_h=0.01,
    )
    frames = [f[0] for f in run(Fleet(scenario, start_ms=1_699_992_000_000), 300, 60.0)]  # Tue 20:00 UTC
    lo, hi = MACHINE_TYPES[mtype].bounds
    values = np.stack([f.values for f in frames])
    finite = ~np.isnan(values)
    assert finite.mean() > 0.9
    assert np.all(np.where(finite, values >= lo, True))
    assert np.all(np.where(finite, values <= hi, True))
    running = np.stack([f.running for f in frames])
    assert running.any()
    assert not running.all(), "shifts and repairs stop machines now and then"


def test_each_fault_type_appears_where_it_is_labelled() -> None:
    groups = (MachineGroup("electric_motor", len(FAULT_KINDS), conditions=("medium",)),)
    onset, duration = 20.0, 15.0
    faults = tuple(
        FaultSpec(i, kind, onset, duration, sensor="winding_temp", magnitude=0.1) for i, kind in enumerate(FAULT_KINDS)
    )
    clean = [f[0] for f in run(Fleet(Scenario(groups=groups)), 60)]
    faulty = [f[0] for f in run(Fleet(Scenario(groups=groups, faults=faults)), 60)]
    sensor = MACHINE_TYPES["electric_motor"].sensor_names.index("winding_temp")
    for i, kind in enumerate(FAULT_KINDS):
        labelled = np.array([FAULT_LABELS[f.fault_code[i]] == kind for f in faulty])
        assert np.array([f.fault_sensor[i] == sensor for f in faulty])[labelled].all()
        expected = np.zeros(60, dtype=bool)
        expected[int(onset) : int(onset) + (1 if kind == "spike" else int(duration))] = True
        np.testing.assert_array_equal(labelled, expected, err_msg=kind)
        got = np.array([f.values[i, sensor] for f in faulty])
        want = np.array([f.values[i, sensor] for f in clean])
        differs = ~np.isclose(got, want, equal_nan=False) | (np.isnan(got) != np.isnan(want))
        # Outside the labelled window the stream is the clean one; inside it the fault shows.
        assert not differs[~labelled].any(), kind
        # A stuck sensor holds the value it had when it stuck, and a drift starts from zero.
        assert differs[labelled][1:].all() if kind in ("stuck", "drift") else differs[labelled].all(), kind
        if kind == "dropout":
            assert np.isnan(got[labelled]).all()
        if kind == "stuck":
            assert np.all(got[labelled] == got[labelled][0])
        other = [j for j in range(len(MACHINE_TYPES["electric_motor"].sensors)) if j != sensor]
        np.testing.assert_array_equal(
            np.array([f.values[i, other] for f in faulty]), np.array([f.values[i, other] for f in clean])
        )


def test_injected_degradation_fails_the_machine_on_time_with_its_signature() -> None:
    groups = (MachineGroup("centrifugal_pump", 2, conditions=("mid",)),)
    sc = Scenario(groups=groups, ambient_swing_c=0, faults=(FaultSpec("pump-001", "bearing_wear", 100, 300),))
    frames = [f[0] for f in run(Fleet(sc), 401)]
    assert frames[99].rul_h[1] > 300 / 3600
    assert frames[100].rul_h[1] == pytest.approx(300 / 3600)
    assert frames[399].rul_h[1] == pytest.approx(1 / 3600)
    assert frames[400].rul_h[1] == 0.0
    assert frames[400].health[1] == 0.0
    assert FAULT_LABELS[frames[150].fault_code[1]] == "degradation"
    assert frames[150].failure_mode[1] == 0  # bearing_wear
    vib = np.array([f.values[:, 0] for f in frames])
    assert vib[380:398, 1].mean() > vib[380:398, 0].mean() + 3  # a worn bearing shakes


def test_scenario_files_load_and_typos_are_named(tmp_path: Path) -> None:
    for path in (ROOT / "deploy/scenarios").glob("*.toml"):
        assert load_scenario(path).machines > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[regime]\ncondition_hold=3\n")
    with pytest.raises(ScenarioError, match="regime: unknown key"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="neither a sensor fault"):
        Fleet(Scenario(faults=(FaultSpec("pump-001", "spikey", 10),)))
    with pytest.raises(ScenarioError, match="no sensor"):
        Fleet(Scenario(faults=(FaultSpec(1, "stuck", 10, sensor="speed"),)))
    bad.write_text('[[machines]]\ntype="turbine"\n')
    with pytest.raises(ScenarioError, match=r"machines\[0\].type"):
        load_scenario(bad)
