"""The fleet engine: hidden health, lives, failures, maintenance, operating regimes and sensor faults.

One :class:`Fleet` steps every machine of a scenario on a shared simulated clock and returns, per machine type, a
:class:`Frame` of sensor readings plus the ground truth behind them. Everything is drawn from one seed, so a scenario
and a seed give the same stream every time.

Lives are counted in calendar time: each failure mode of a machine has a life drawn at renewal, its damage follows
the mode's curve along that life, and the machine fails when the first mode reaches full damage. True RUL is
therefore exact (failure time minus now), and it falls by exactly the elapsed time until the failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from simulators._machines import MachineType, PhysicsInput, machine_type
from simulators._scenario import FAULT_KINDS, FaultSpec, MachineGroup, Scenario, ScenarioError
from wearline.topics import MachinePath

__all__ = ["FAULT_LABELS", "Fleet", "Frame", "SimEvent"]

F = NDArray[np.float64]
IntArr = NDArray[np.int64]
B = NDArray[np.bool_]

FAULT_LABELS = ("", *FAULT_KINDS, "degradation")
"""Ground-truth fault labels by code: 0 none, then the sensor faults, then an active degradation."""
_DEGRADATION = len(FAULT_LABELS) - 1
_NONE = -1
# Random sensor faults last this many samples (uniform in the range); a spike is one sample.
_DURATION_SAMPLES = {
    "spike": (1, 1),
    "stuck": (5, 48),
    "dropout": (2, 24),
    "step": (24, 120),
    "noise_burst": (3, 24),
    "drift": (24, 120),
}
# Size relative to the sensor's range (drawn uniformly, random sign where it matters).
_MAGNITUDE = {
    "spike": (0.15, 0.4),
    "stuck": (0.0, 0.0),
    "dropout": (0.0, 0.0),
    "step": (0.05, 0.15),
    "noise_burst": (0.02, 0.06),
    "drift": (0.05, 0.2),
}


@dataclass(frozen=True)
class SimEvent:
    """Something that happened to a machine: failure, repair, maintenance, fault_onset or fault_end."""

    time_s: float
    machine: int
    kind: str
    detail: str = ""


@dataclass
class Frame:
    """One step of all machines of one type: readings (NaN where a sensor sent nothing) and their truth."""

    mtype: MachineType
    machines: IntArr
    time_s: float
    values: F
    health: F
    rul_h: F
    fault_code: NDArray[np.int8]
    fault_sensor: IntArr
    fault_onset_s: F
    failure_mode: IntArr
    condition: IntArr
    running: B

    @property
    def fault(self) -> B:
        return np.asarray(self.fault_code > 0)


@dataclass
class _Group:
    spec: MachineGroup
    mtype: MachineType
    idx: IntArr
    rng: np.random.Generator
    allowed: IntArr
    schedule: str
    frng: np.random.Generator
    """Sensor faults draw from their own generator, so a fault leaves the physics' random stream untouched."""
    rated: F = field(init=False)
    ambient_offset: F = field(init=False)
    state: F = field(init=False)
    mode_start: F = field(init=False)
    mode_life: F = field(init=False)
    fail_t: F = field(init=False)
    fail_mode: IntArr = field(init=False)
    life_start: F = field(init=False)
    failed: B = field(init=False)
    down_until: F = field(init=False)
    cond: IntArr = field(init=False)
    cond_until: F = field(init=False)
    forced_onset: F = field(init=False)
    deg_onset: F = field(init=False)
    f_kind: IntArr = field(init=False)
    f_sensor: IntArr = field(init=False)
    f_start: F = field(init=False)
    f_end: F = field(init=False)
    f_mag: F = field(init=False)
    f_held: F = field(init=False)

    @property
    def n(self) -> int:
        return len(self.idx)


class Fleet:
    """Every machine of ``scenario``, stepped together on one simulated clock starting at ``start_ms``.

    ``offline`` clips first lives to the scenario's offline bounds and rounds them up to a whole number of
    ``step_s`` steps, so a run-to-failure history ends on a sample with RUL 0.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        start_ms: int = 0,
        offline: bool = False,
        step_s: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.start_ms = start_ms
        self.offline = offline
        self.step_s = scenario.sample_period_s if step_s is None else step_s
        self.time_s = -math.inf
        self.events: list[SimEvent] = []
        seqs = np.random.SeedSequence(self.seed).spawn(len(scenario.groups))
        self.paths: list[MachinePath] = []
        self.types: list[MachineType] = []
        self.groups: list[_Group] = []
        used: dict[str, int] = {}
        for g, seq in zip(scenario.groups, seqs, strict=False):
            mtype = machine_type(g.type)
            base = g.name or mtype.prefix
            first = used.get(base, 0)
            used[base] = first + g.count
            start = len(self.paths)
            for i in range(g.count):
                self.paths.append(MachinePath(scenario.tenant, scenario.site, g.line, f"{base}-{first + i:03d}"))
                self.types.append(mtype)
            allowed = [mtype.condition_index(c) for c in g.conditions] or list(range(len(mtype.conditions)))
            grp = _Group(
                g,
                mtype,
                np.arange(start, start + g.count),
                np.random.default_rng(seq),
                np.array(allowed),
                g.schedule,
                np.random.default_rng(seq.spawn(1)[0]),
            )
            self._init_group(grp)
            self.groups.append(grp)
        self._index = {str(p.machine): i for i, p in enumerate(self.paths)}
        self._pending = sorted(scenario.faults, key=lambda f: f.onset_s)
        for f in self._pending:  # a bad injected fault fails now, not when its onset comes
            mt = self.types[self.machine_index(f.machine)]
            if f.kind not in FAULT_KINDS and f.kind not in mt.mode_names:
                raise ScenarioError(
                    f"fault kind {f.kind!r} is neither a sensor fault {list(FAULT_KINDS)} "
                    f"nor a failure mode of {mt.name} {list(mt.mode_names)}"
                )
            if f.sensor is not None:
                self._sensor_index(mt, f.sensor)

    # --- set-up ---------------------------------------------------------------------------------------------------

    def machine_index(self, machine: int | str) -> int:
        """The fleet index of a machine given by index or name (``pump-002``)."""
        if isinstance(machine, int):
            if not 0 <= machine < len(self.paths):
                raise ScenarioError(f"machine index {machine} is outside 0..{len(self.paths) - 1}")
            return machine
        try:
            return self._index[machine]
        except KeyError:
            raise ScenarioError(f"no machine named {machine!r} in the scenario") from None

    def _draw_lives(self, g: _Group, rows: IntArr) -> F:
        modes = g.mtype.modes
        shape = np.array([m.shape for m in modes])
        scale = np.array([m.scale_h for m in modes]) * g.spec.life_scale * 3600.0
        return np.asarray(g.rng.weibull(shape, (len(rows), len(modes))) * scale, dtype=np.float64)

    def _renew(self, g: _Group, rows: IntArr, at: F) -> None:
        """New parts: every mode starts a fresh life at ``at``."""
        if len(rows) == 0:
            return
        lives = self._draw_lives(g, rows)
        g.mode_start[rows] = at[:, None]
        g.mode_life[rows] = lives
        g.life_start[rows] = at
        g.failed[rows] = False
        g.forced_onset[rows] = np.nan
        g.deg_onset[rows] = np.nan
        self._refresh_failure(g, rows)

    def _refresh_failure(self, g: _Group, rows: IntArr) -> None:
        ends = g.mode_start[rows] + g.mode_life[rows]
        g.fail_mode[rows] = np.argmin(ends, axis=1)
        g.fail_t[rows] = ends.min(axis=1)

    def _init_group(self, g: _Group) -> None:
        n, sc = g.n, self.scenario
        mt = g.mtype
        m = len(mt.modes)
        g.rated = mt.rated(g.rng, n)
        g.ambient_offset = g.rng.uniform(-2.0, 2.0, n)
        g.state = mt.state_init(sc.ambient_c + g.ambient_offset)
        g.mode_start = np.zeros((n, m))
        g.mode_life = np.ones((n, m))
        g.fail_t = np.zeros(n)
        g.fail_mode = np.zeros(n, dtype=np.int64)
        g.life_start = np.zeros(n)
        g.failed = np.zeros(n, dtype=np.bool_)
        g.down_until = np.full(n, -np.inf)
        g.forced_onset = np.full(n, np.nan)
        g.deg_onset = np.full(n, np.nan)
        rows = np.arange(n)
        self._renew(g, rows, np.zeros(n))
        if self.offline:
            # A usable run-to-failure data set needs bounded lives; scale all modes so the mix of modes is kept.
            life = g.fail_t.copy()
            target = np.clip(life, sc.offline_min_life_h * 3600, sc.offline_max_life_h * 3600)
            g.mode_life *= (target / life)[:, None]
        lo, hi = g.spec.initial_age
        if self.offline and hi == 0:
            lo, hi = 0.0, 0.1  # like engines entering service with some unrecorded wear
        age = g.rng.uniform(lo, hi, n) * (g.mode_life.min(axis=1))
        g.mode_start -= age[:, None]
        g.life_start -= age
        self._refresh_failure(g, rows)
        if self.offline:
            step = self.step_s
            end = np.ceil(g.fail_t / step) * step
            g.mode_life[rows, g.fail_mode] += end - g.fail_t
            # Another mode ending inside the rounding gap would otherwise fail the machine first.
            others = g.mode_start + g.mode_life
            others[rows, g.fail_mode] = np.inf
            g.mode_life = np.where(others <= end[:, None], end[:, None] + step - g.mode_start, g.mode_life)
            g.fail_t = end  # exactly k * step, the same float the clock will show
        g.cond = g.allowed[g.rng.integers(0, len(g.allowed), n)]
        g.cond_until = g.rng.exponential(sc.condition_hold_h * 3600, n)
        g.f_kind = np.full(n, _NONE, dtype=np.int64)
        g.f_sensor = np.full(n, _NONE, dtype=np.int64)
        g.f_start = np.full(n, np.nan)
        g.f_end = np.full(n, np.nan)
        g.f_mag = np.zeros(n)
        g.f_held = np.full(n, np.nan)

    def failure_times_s(self) -> F:
        """Each machine's current failure time (simulated seconds), in fleet order."""
        out = np.empty(len(self.paths))
        for g in self.groups:
            out[g.idx] = g.fail_t
        return out

    # --- stepping -------------------------------------------------------------------------------------------------

    def step(self, time_s: float) -> list[Frame]:
        """Advance to ``time_s`` simulated seconds after the start and sample every machine there."""
        dt = self.step_s if not math.isfinite(self.time_s) else time_s - self.time_s
        if dt <= 0:
            raise ValueError(f"time goes forward: {time_s} after {self.time_s}")
        self.time_s = time_s
        wall_s = self.start_ms / 1000 + time_s
        hour = (wall_s / 3600) % 24
        weekday = int(wall_s // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 is Monday
        ambient = self.scenario.ambient_c + self.scenario.ambient_swing_c * math.cos(2 * math.pi * (hour - 15) / 24)
        self._inject(time_s, dt)
        on_shift = {s: _on_shift(s, hour, weekday) for s in ("continuous", "two_shift", "day_shift")}
        return [
            self._step_group(g, time_s, dt, on_shift=on_shift[g.schedule], ambient_c=ambient)
            for g in self.groups
            if g.n
        ]

    def _inject(self, t: float, dt: float) -> None:
        while self._pending and self._pending[0].onset_s <= t:
            spec = self._pending.pop(0)
            i = self.machine_index(spec.machine)
            g = next(g for g in self.groups if g.n and g.idx[0] <= i <= g.idx[-1])
            r = np.array([i - int(g.idx[0])])
            mt = g.mtype
            if spec.kind in mt.mode_names:
                m = mt.mode_names.index(spec.kind)
                g.mode_start[r, m] = t
                g.mode_life[r, m] = spec.duration_s
                self._refresh_failure(g, r)
                g.forced_onset[r] = t
                self.events.append(SimEvent(t, i, "fault_onset", spec.kind))
            else:
                sensor = 0 if spec.sensor is None else self._sensor_index(mt, spec.sensor)
                end = t + (0.5 * dt if spec.kind == "spike" else spec.duration_s)
                self._start_fault(g, r, FAULT_KINDS.index(spec.kind), sensor=sensor, start=t, end=end, spec=spec)

    @staticmethod
    def _sensor_index(mt: MachineType, name: str) -> int:
        try:
            return mt.sensor_names.index(name)
        except ValueError:
            raise ScenarioError(f"{mt.name} has no sensor {name!r}; it has {list(mt.sensor_names)}") from None

    def _start_fault(
        self,
        g: _Group,
        rows: IntArr,
        kind: int,
        *,
        sensor: int | IntArr,
        start: float,
        end: float | F,
        spec: FaultSpec | None,
    ) -> None:
        name = FAULT_KINDS[kind]
        lo, hi = _MAGNITUDE[name]
        mag = g.frng.uniform(lo, hi, len(rows)) * np.where(g.frng.random(len(rows)) < 0.5, -1.0, 1.0)
        if spec is not None and spec.magnitude is not None:
            mag[:] = spec.magnitude
        if name == "noise_burst":
            mag = np.abs(mag)
        for r in rows[g.f_kind[rows] != _NONE].tolist():  # an injected fault replaces a random one still active
            self.events.append(SimEvent(start, int(g.idx[r]), "fault_end", FAULT_KINDS[g.f_kind[r]]))
        g.f_kind[rows] = kind
        g.f_sensor[rows] = sensor
        g.f_start[rows] = start
        g.f_end[rows] = end
        g.f_mag[rows] = mag
        g.f_held[rows] = np.nan
        names = g.mtype.sensor_names
        for r, s in zip(rows.tolist(), np.broadcast_to(sensor, rows.shape).tolist(), strict=True):
            self.events.append(SimEvent(start, int(g.idx[r]), "fault_onset", f"{name}:{names[s]}"))

    def _step_group(self, g: _Group, t: float, dt: float, *, on_shift: bool, ambient_c: float) -> Frame:
        sc, mt = self.scenario, g.mtype
        # Failures, repairs and preventive maintenance, in that order; each renewal restores full health.
        newly = np.nonzero(~g.failed & (g.fail_t <= t))[0]
        if len(newly):
            g.failed[newly] = True
            g.down_until[newly] = g.fail_t[newly] + sc.repair_h * 3600
            for r in newly.tolist():
                self.events.append(
                    SimEvent(float(g.fail_t[r]), int(g.idx[r]), "failure", mt.modes[g.fail_mode[r]].name)
                )
        if not self.offline:
            repaired = np.nonzero(g.failed & (g.down_until <= t))[0]
            self._renew(g, repaired, g.down_until[repaired])
            for r in repaired.tolist():
                self.events.append(SimEvent(float(g.down_until[r]), int(g.idx[r]), "repair"))
            if sc.maintenance_interval_h > 0:
                due = np.nonzero(~g.failed & (t - g.life_start >= sc.maintenance_interval_h * 3600))[0]
                if len(due):
                    g.down_until[due] = t + sc.maintenance_h * 3600
                    self._renew(g, due, g.down_until[due])
                    for r in due.tolist():
                        self.events.append(SimEvent(t, int(g.idx[r]), "maintenance"))
        switch = np.nonzero(g.cond_until <= t)[0]
        if len(switch):
            g.cond[switch] = g.allowed[g.rng.integers(0, len(g.allowed), len(switch))]
            g.cond_until[switch] = t + g.rng.exponential(sc.condition_hold_h * 3600, len(switch))
        running = ~g.failed & (g.down_until <= t) & on_shift

        x = (t - g.mode_start) / g.mode_life
        damage = np.column_stack([m.damage(x[:, j]) for j, m in enumerate(mt.modes)])
        failed_rows = np.nonzero(g.failed)[0]
        damage[failed_rows, g.fail_mode[failed_rows]] = 1.0
        health = 1.0 - damage.max(axis=1)
        rul_h = np.where(g.failed, 0.0, np.maximum(g.fail_t - t, 0.0) / 3600.0)

        setpoint = np.array([c.setpoint for c in mt.conditions])[g.cond]
        aux = np.array([c.aux for c in mt.conditions])[g.cond]
        values = mt.measure(
            PhysicsInput(
                dt_s=dt,
                running=running.astype(np.float64),
                setpoint=setpoint,
                aux=aux,
                ambient=ambient_c + g.ambient_offset,
                damage=damage,
                rated=g.rated,
                state=g.state,
                rng=g.rng,
            )
        )
        self._sensor_faults(g, t, dt, values)

        visible = (health < sc.degradation_visible_health) | ~np.isnan(g.forced_onset)
        newly_visible = visible & np.isnan(g.deg_onset)
        g.deg_onset[newly_visible] = np.where(np.isnan(g.forced_onset[newly_visible]), t, g.forced_onset[newly_visible])
        g.deg_onset[~visible] = np.nan
        sensor_on = g.f_kind != _NONE
        code = np.where(sensor_on, g.f_kind + 1, np.where(visible, _DEGRADATION, 0)).astype(np.int8)
        onset = np.where(sensor_on, g.f_start, np.where(visible, g.deg_onset, np.nan))
        return Frame(
            mtype=mt,
            machines=g.idx,
            time_s=t,
            values=values,
            health=health,
            rul_h=rul_h,
            fault_code=code,
            fault_sensor=np.where(sensor_on, g.f_sensor, _NONE),
            fault_onset_s=onset,
            failure_mode=g.fail_mode.copy(),
            condition=g.cond.copy(),
            running=running,
        )

    def _sensor_faults(self, g: _Group, t: float, dt: float, values: F) -> None:
        sc, mt = self.scenario, g.mtype
        ended = np.nonzero((g.f_kind != _NONE) & (g.f_end <= t))[0]
        for r in ended.tolist():
            self.events.append(SimEvent(t, int(g.idx[r]), "fault_end", FAULT_KINDS[g.f_kind[r]]))
        g.f_kind[ended] = _NONE
        g.f_sensor[ended] = _NONE
        if sc.fault_rate_per_day > 0 and sc.fault_kinds:
            p = -math.expm1(-sc.fault_rate_per_day * dt / 86400)
            new = np.nonzero((g.f_kind == _NONE) & (g.frng.random(g.n) < p))[0]
            if len(new):
                kinds = np.array([FAULT_KINDS.index(k) for k in sc.fault_kinds])
                chosen = kinds[g.frng.integers(0, len(kinds), len(new))]
                sensors = g.frng.integers(0, len(mt.sensors), len(new))
                for kind in np.unique(chosen).tolist():
                    sel = chosen == kind
                    shortest, longest = _DURATION_SAMPLES[FAULT_KINDS[kind]]
                    length = np.asarray(
                        g.frng.integers(shortest, longest + 1, int(sel.sum())) * dt - 0.5 * dt, dtype=np.float64
                    )
                    self._start_fault(g, new[sel], kind, sensor=sensors[sel], start=t, end=t + length, spec=None)
        active = np.nonzero(g.f_kind != _NONE)[0]
        if not len(active):
            return
        lo, hi = mt.bounds
        span = hi - lo
        cols = g.f_sensor[active]
        kinds = g.f_kind[active]
        v = values[active, cols]
        mag = g.f_mag[active] * span[cols]
        name = np.array(FAULT_KINDS)[kinds]
        progress = np.clip((t - g.f_start[active]) / np.maximum(g.f_end[active] - g.f_start[active], 1e-9), 0, 1)
        held = g.f_held[active]
        held = np.where(np.isnan(held), v, held)
        g.f_held[active] = held
        v = np.select(
            [
                (name == "spike") | (name == "step"),
                name == "drift",
                name == "noise_burst",
                name == "stuck",
                name == "dropout",
            ],
            [v + mag, v + mag * progress, v + mag * g.frng.standard_normal(len(v)), held, np.nan],
            v,
        )
        values[active, cols] = np.clip(v, lo[cols], hi[cols])


def _on_shift(schedule: str, hour: float, weekday: int) -> bool:
    if schedule == "two_shift":
        return weekday < 5 and 6 <= hour < 22
    if schedule == "day_shift":
        return weekday < 5 and 7 <= hour < 16
    return True
