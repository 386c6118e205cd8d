"""Machine types: sensors with instrument ranges, operating conditions, failure modes and the physics that ties
them together.

Each type computes all its sensors at once from a few shared quantities (speed, load, flow, heat), so sensors are
correlated the way the physics says: a pump at lower speed gives less flow, less head and much less current. Hidden
damage per failure mode (0 new, 1 failed) enters that physics with its own signature. Everything is vectorised over
the machines of one type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["MACHINE_TYPES", "Condition", "FailureMode", "MachineType", "PhysicsInput", "SensorSpec", "machine_type"]

F = NDArray[np.float64]


@dataclass(frozen=True)
class SensorSpec:
    """One sensor: its unit, the instrument range every reading is clipped to, and its noise (one sigma)."""

    name: str
    unit: str
    lo: float
    hi: float
    noise: float
    relative_noise: bool = False


@dataclass(frozen=True)
class FailureMode:
    """A way a machine wears out.

    Damage along a life is ``curve(x)`` of the life fraction ``x``: ``exp`` rises late (``(e^(kx)-1)/(e^k-1)``, a
    bearing that looks fine until it does not), ``power`` is ``x**k``. Lives are Weibull(``shape``, ``scale_h``).
    """

    name: str
    curve: Literal["exp", "power"]
    k: float
    shape: float
    scale_h: float

    def damage(self, x: F) -> F:
        x = np.clip(x, 0.0, 1.0)
        if self.curve == "exp":
            return np.asarray(np.expm1(self.k * x) / np.expm1(self.k), dtype=np.float64)
        return np.asarray(x**self.k, dtype=np.float64)


@dataclass(frozen=True)
class Condition:
    """An operating condition: a setpoint (speed, load or demand as a fraction of rated) and a second parameter."""

    name: str
    setpoint: float
    aux: float = 1.0


@dataclass
class PhysicsInput:
    """What a type's physics reads for one step of ``n`` machines; ``state`` is the type's own, updated in place."""

    dt_s: float
    running: F
    setpoint: F
    aux: F
    ambient: F
    damage: F  # (n, modes)
    rated: F  # (n, rated parameters)
    state: F  # (n, state variables)
    rng: np.random.Generator


Physics = Callable[[PhysicsInput], F]


@dataclass(frozen=True)
class MachineType:
    """A kind of machine: its sensors (in wire order), failure modes, operating conditions and physics."""

    name: str
    prefix: str
    sensors: tuple[SensorSpec, ...]
    modes: tuple[FailureMode, ...]
    conditions: tuple[Condition, ...]
    rated: Callable[[np.random.Generator, int], F]
    state_init: Callable[[F], F]
    physics: Physics

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)

    @property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modes)

    @property
    def bounds(self) -> tuple[F, F]:
        return np.array([s.lo for s in self.sensors]), np.array([s.hi for s in self.sensors])

    def condition_index(self, name: str) -> int:
        for i, c in enumerate(self.conditions):
            if c.name == name:
                return i
        raise KeyError(f"{self.name} has no condition {name!r}; it has {[c.name for c in self.conditions]}")

    def measure(self, inp: PhysicsInput) -> F:
        """The sensor readings ``(n, sensors)``: physics plus noise, clipped to the instrument ranges."""
        true = self.physics(inp)
        sd = np.array([s.noise for s in self.sensors])
        rel = np.array([s.relative_noise for s in self.sensors])
        scale = np.where(rel, np.abs(true) * sd, sd)
        lo, hi = self.bounds
        return np.asarray(np.clip(true + inp.rng.standard_normal(true.shape) * scale, lo, hi), dtype=np.float64)


def _lag(state: F, target: F, dt_s: float, tau_s: float) -> F:
    """First-order thermal lag, exact for any step: a long step simply lands on the target."""
    state += (target - state) * -np.expm1(-dt_s / tau_s)
    return state


# --- centrifugal pump ---------------------------------------------------------------------------------------------


def _pump_rated(rng: np.random.Generator, n: int) -> F:
    # rated flow m3/h, shut-off head bar, no-load current A
    return np.column_stack([rng.uniform(80, 120, n), rng.uniform(5.0, 8.0, n), rng.uniform(8, 12, n)])


def _pump_physics(p: PhysicsInput) -> F:
    bearing, clog, impeller = p.damage[:, 0], p.damage[:, 1], p.damage[:, 2]
    q_rated, head, i_idle = p.rated[:, 0], p.rated[:, 1], p.rated[:, 2]
    s = p.setpoint * p.running * (1 + 0.01 * p.rng.standard_normal(len(p.running)))
    valve = p.aux
    # A clogged suction strainer starves the pump: suction pressure falls with the square of the flow it passes.
    suction = np.maximum(1.2 - 0.9 * clog * s**2, 0.05)
    flow = q_rated * s * valve * (1 - 0.45 * clog) * (1 - 0.15 * impeller)
    # Affinity laws: head ~ speed^2, less the system curve; a worn impeller makes less head at worse efficiency.
    dp = np.maximum(head * (s**2 - 0.35 * (flow / q_rated) ** 2) * (1 - 0.3 * impeller), 0.0)
    efficiency = 0.72 * (1 - 0.35 * impeller)
    hydraulic_kw = flow * dp / 36.0
    current = p.running * (i_idle * s + hydraulic_kw * 1000 / (589 * efficiency) + 4 * bearing * s)
    cavitation = 2.5 * clog**2 * s * np.abs(p.rng.standard_normal(len(s)))
    vibration = 0.05 + p.running * (0.35 + (1.2 + 4 * impeller) * s**2 + 9 * bearing * s) + cavitation
    temp = _lag(p.state[:, 0], p.ambient + p.running * (12 * s + 4 * flow / q_rated + 35 * bearing * s), p.dt_s, 1200)
    return np.column_stack([vibration, temp.copy(), current, suction + dp, flow])


PUMP = MachineType(
    name="centrifugal_pump",
    prefix="pump",
    sensors=(
        SensorSpec("vibration_rms", "mm/s", 0, 50, 0.05),
        SensorSpec("bearing_temp", "degC", -20, 150, 0.2),
        SensorSpec("motor_current", "A", 0, 200, 0.3),
        SensorSpec("discharge_pressure", "bar", 0, 25, 0.03),
        SensorSpec("flow", "m3/h", 0, 400, 0.5),
    ),
    modes=(
        FailureMode("bearing_wear", "exp", 6.0, 2.5, 1400),
        FailureMode("clogging", "power", 1.5, 1.2, 1600),
        FailureMode("impeller_wear", "power", 1.0, 3.0, 1800),
    ),
    conditions=(
        Condition("low", 0.7),
        Condition("mid", 0.85),
        Condition("high", 1.0),
        Condition("throttled", 1.0, 0.7),
    ),
    rated=_pump_rated,
    state_init=lambda ambient: ambient[:, None].copy(),
    physics=_pump_physics,
)


# --- CNC spindle --------------------------------------------------------------------------------------------------


def _spindle_rated(rng: np.random.Generator, n: int) -> F:
    return np.column_stack([rng.uniform(19.5, 20.5, n)])  # coolant setpoint degC


def _spindle_physics(p: PhysicsInput) -> F:
    bearing, tool = p.damage[:, 0], p.damage[:, 1]
    n = len(p.running)
    cutting = (p.rng.random(n) < 0.8) * p.running
    rpm_set = p.setpoint * 18000
    load = p.running * (8 + p.aux * 100 * cutting * (1 + 0.6 * tool) * (1 + 0.03 * p.rng.standard_normal(n)))
    rpm = rpm_set * p.running * (1 - 0.002 * load)
    r = rpm / 12000
    vibration = 0.05 + p.running * (0.3 + 0.6 * r**2 + 0.02 * load + 10 * bearing * r + 1.5 * tool**2 * cutting)
    coolant = p.rated[:, 0] + 0.05 * (p.ambient - 20)
    temp = _lag(p.state[:, 0], coolant + p.running * (8 * r**1.5 + 0.08 * load + 30 * bearing * r), p.dt_s, 900)
    return np.column_stack([vibration, temp.copy(), load, rpm, coolant])


SPINDLE = MachineType(
    name="cnc_spindle",
    prefix="spindle",
    sensors=(
        SensorSpec("vibration", "mm/s", 0, 50, 0.05),
        SensorSpec("spindle_temp", "degC", -20, 150, 0.15),
        SensorSpec("load", "%", 0, 150, 1.0),
        SensorSpec("speed", "rpm", 0, 24000, 5.0),
        SensorSpec("coolant_temp", "degC", -20, 80, 0.1),
    ),
    modes=(
        FailureMode("bearing_wear", "exp", 7.0, 2.2, 1100),
        FailureMode("tool_wear", "power", 1.6, 2.0, 900),
    ),
    conditions=(
        Condition("roughing", 1 / 3, 0.7),
        Condition("finishing", 2 / 3, 0.35),
        Condition("high_speed", 1.0, 0.25),
        Condition("drilling", 1 / 6, 0.8),
    ),
    rated=_spindle_rated,
    state_init=lambda ambient: ambient[:, None].copy(),
    physics=_spindle_physics,
)


# --- air compressor (load/unload control) -------------------------------------------------------------------------

_P_LO, _P_HI = 7.0, 7.5


def _compressor_rated(rng: np.random.Generator, n: int) -> F:
    return np.column_stack([rng.uniform(80, 120, n)])  # full-load current A


def _compressor_physics(p: PhysicsInput) -> F:
    valve, filt, bearing = p.damage[:, 0], p.damage[:, 1], p.damage[:, 2]
    n = len(p.running)
    i_full = p.rated[:, 0]
    pressure, loaded = p.state[:, 1], p.state[:, 2]
    # Leaking valves and a choked inlet filter both cut delivered air, so the machine must run loaded for longer.
    capacity = (1 - 0.45 * valve) * (1 - 0.35 * filt)
    demand = p.setpoint * p.running
    if p.dt_s <= 30:
        loaded[:] = np.where(pressure >= _P_HI, 0.0, np.where(pressure <= _P_LO, 1.0, loaded)) * p.running
        pressure += (loaded * capacity - demand) * 0.02 * p.dt_s - (1 - p.running) * 0.01 * pressure * p.dt_s
        np.maximum(pressure, 0.0, out=pressure)
    else:
        # Steps far longer than a load/unload cycle: sample the cycle instead of integrating it.
        duty = np.clip(demand / capacity, 0, 1)
        loaded[:] = (p.rng.random(n) < duty) * p.running
        sag = np.maximum(demand - capacity, 0) * 4
        pressure[:] = p.running * np.maximum(_P_LO + p.rng.random(n) * (_P_HI - _P_LO) - sag, 0.0)
    current = p.running * (
        loaded * i_full * (0.9 + 0.1 * pressure / _P_HI) * (1 - 0.15 * filt) + (1 - loaded) * 0.35 * i_full
    )
    t_dis = _lag(
        p.state[:, 0],
        p.ambient + p.running * (loaded * (70 + 30 * valve + 25 * filt) + (1 - loaded) * 25),
        p.dt_s,
        300,
    )
    t_oil = _lag(p.state[:, 3], p.ambient + p.running * (25 + 20 * loaded + 20 * bearing + 10 * valve), p.dt_s, 1800)
    vibration = 0.05 + p.running * (1.5 + 1.0 * loaded + 9 * bearing)
    return np.column_stack([pressure.copy(), t_dis.copy(), current, vibration, t_oil.copy()])


COMPRESSOR = MachineType(
    name="air_compressor",
    prefix="comp",
    sensors=(
        SensorSpec("discharge_pressure", "bar", 0, 16, 0.02),
        SensorSpec("discharge_temp", "degC", -20, 200, 0.3),
        SensorSpec("motor_current", "A", 0, 300, 0.5),
        SensorSpec("vibration", "mm/s", 0, 50, 0.05),
        SensorSpec("oil_temp", "degC", -20, 150, 0.2),
    ),
    modes=(
        FailureMode("valve_wear", "power", 1.3, 2.0, 1300),
        FailureMode("filter_clogging", "power", 1.8, 1.8, 1500),
        FailureMode("bearing_wear", "exp", 6.0, 2.5, 1800),
    ),
    conditions=(Condition("light", 0.3), Condition("normal", 0.55), Condition("heavy", 0.8)),
    rated=_compressor_rated,
    state_init=lambda ambient: np.column_stack([ambient, np.full(len(ambient), _P_LO), np.ones(len(ambient)), ambient]),
    physics=_compressor_physics,
)


# --- induction motor ----------------------------------------------------------------------------------------------


def _motor_rated(rng: np.random.Generator, n: int) -> F:
    return np.column_stack([rng.uniform(50, 150, n), rng.uniform(100, 300, n)])  # rated A, new IR at 75 degC MOhm


def _motor_physics(p: PhysicsInput) -> F:
    insulation, bearing, rotor = p.damage[:, 0], p.damage[:, 1], p.damage[:, 2]
    n = len(p.running)
    i_rated, ir_new = p.rated[:, 0], p.rated[:, 1]
    load = p.setpoint * p.running * (1 + 0.03 * p.rng.standard_normal(n))
    # Broken rotor bars raise slip and modulate the current at twice slip frequency (sidebands, seen as ripple).
    slip = 0.035 * load * (1 + 1.5 * rotor)
    speed = 1500 * (1 - slip) * p.running
    ripple = 0.06 * i_rated * rotor * p.running * p.rng.standard_normal(n)
    current = p.running * (0.35 * i_rated + 0.65 * i_rated * load * (1 + 0.15 * rotor)) + ripple
    winding = _lag(
        p.state[:, 0], p.ambient + p.running * (15 + 70 * (current / i_rated) ** 2 + 10 * insulation), p.dt_s, 2400
    )
    # Insulation resistance halves for every 10 K of winding temperature (rated at 75 degC) and falls by decades as
    # the insulation ages.
    ir = ir_new * 10 ** (-3 * insulation) * 2 ** (-(winding - 75) / 10)
    vibration = 0.05 + p.running * (0.8 + 0.5 * load + 8 * bearing + 2.5 * rotor * load)
    voltage = np.full(n, 400.0)
    return np.column_stack([np.abs(current), winding.copy(), vibration, speed, ir, voltage])


MOTOR = MachineType(
    name="electric_motor",
    prefix="motor",
    sensors=(
        SensorSpec("current", "A", 0, 300, 0.3),
        SensorSpec("winding_temp", "degC", -20, 200, 0.2),
        SensorSpec("vibration", "mm/s", 0, 50, 0.04),
        SensorSpec("speed", "rpm", 0, 3600, 1.0),
        SensorSpec("insulation_resistance", "MOhm", 0, 10000, 0.03, relative_noise=True),
        SensorSpec("supply_voltage", "V", 0, 500, 1.0),
    ),
    modes=(
        FailureMode("insulation_wear", "power", 2.0, 3.0, 2200),
        FailureMode("bearing_wear", "exp", 6.0, 2.3, 2000),
        FailureMode("rotor_bar", "power", 1.2, 2.0, 2400),
    ),
    conditions=(Condition("light", 0.4), Condition("medium", 0.7), Condition("full", 0.95)),
    rated=_motor_rated,
    state_init=lambda ambient: ambient[:, None].copy(),
    physics=_motor_physics,
)

MACHINE_TYPES: dict[str, MachineType] = {t.name: t for t in (PUMP, SPINDLE, COMPRESSOR, MOTOR)}


def machine_type(name: str) -> MachineType:
    """The machine type called ``name``, or a KeyError listing the known ones."""
    try:
        return MACHINE_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown machine type {name!r}; known: {', '.join(MACHINE_TYPES)}") from None
