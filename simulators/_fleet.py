"""A small fleet of centrifugal pumps with noise, load changes and an optional injected fault.

This is the walking skeleton's simulator: enough physics to give correlated, plausible signals and a fault with
a known onset. The full simulator (machine types, failure modes, gateways, ground truth) grows from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wearline.topics import MachinePath
from wearline.wire import Sample

__all__ = ["Fault", "FleetSpec", "PumpFleet"]

PUMP_SENSORS = ("vibration_rms", "bearing_temp", "motor_current", "discharge_pressure", "flow")


@dataclass(frozen=True)
class Fault:
    """A bearing fault on one machine from ``onset_s`` (simulated seconds after the start)."""

    machine_index: int
    onset_s: float
    kind: str = "bearing_wear"


@dataclass(frozen=True)
class FleetSpec:
    tenant: str = "acme"
    site: str = "plant1"
    line: str = "line1"
    machines: int = 5
    sample_period_s: float = 1.0
    seed: int = 42
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def path(self, index: int) -> MachinePath:
        return MachinePath(self.tenant, self.site, self.line, f"pump-{index:03d}")


class PumpFleet:
    """Deterministic for a given spec: the same seed gives the same samples."""

    machine_type = "centrifugal_pump"
    sensors = PUMP_SENSORS

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(spec.seed)
        n = spec.machines
        self._nominal_flow = self._rng.uniform(80.0, 120.0, n)  # m3/h
        self._temp = np.full(n, 45.0)  # degC, integrated with a thermal time constant
        self._faults = {f.machine_index: f for f in spec.faults}

    def step(self, elapsed_s: float, ts_ms: int) -> list[tuple[MachinePath, Sample]]:
        """One sample per machine at ``elapsed_s`` simulated seconds."""
        spec, rng = self.spec, self._rng
        out = []
        for i in range(spec.machines):
            # Load follows a slow daily-ish cycle per machine; flow, current and pressure follow the load.
            load = 0.75 + 0.2 * math.sin(2 * math.pi * (elapsed_s / 3600.0 + i / spec.machines))
            flow = float(self._nominal_flow[i]) * load
            wear = 0.0
            fault = self._faults.get(i)
            if fault is not None and elapsed_s >= fault.onset_s:
                # Bearing wear grows quickly once it starts; vibration and friction heat rise with it.
                wear = min(1.0, 0.02 * (elapsed_s - fault.onset_s) / spec.sample_period_s)
            vibration = 1.2 + 0.8 * load + 6.0 * wear
            target_temp = 40.0 + 15.0 * load + 30.0 * wear
            self._temp[i] += (target_temp - self._temp[i]) * min(1.0, spec.sample_period_s / 60.0)
            current = 20.0 + 25.0 * load + 3.0 * wear
            pressure = 2.0 + 3.0 * load**2
            noise = [float(v) for v in rng.normal(0.0, 1.0, 5)]
            values = {
                "vibration_rms": round(vibration + 0.05 * noise[0], 4),
                "bearing_temp": round(float(self._temp[i]) + 0.2 * noise[1], 3),
                "motor_current": round(current + 0.3 * noise[2], 3),
                "discharge_pressure": round(pressure + 0.03 * noise[3], 4),
                "flow": round(flow + 0.5 * noise[4], 3),
            }
            out.append((spec.path(i), Sample(ts_ms, values)))
        return out
