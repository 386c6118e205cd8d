"""A scenario: the fleet, its operating regime, maintenance, faults and gateways, read from a TOML file.

See ``docs/simulator.md`` for every key; ``deploy/scenarios/*.toml`` are worked examples.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simulators._machines import MACHINE_TYPES
from wearline.errors import WearlineError
from wearline.topics import LEVEL

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultSpec",
    "FleetSpec",
    "GatewaySpec",
    "MachineGroup",
    "Scenario",
    "ScenarioError",
    "load_scenario",
]

FAULT_KINDS = ("spike", "stuck", "dropout", "step", "noise_burst", "drift")
"""Sensor faults; a failure-mode name (for example ``bearing_wear``) as a fault kind forces that degradation."""

Schedule = Literal["continuous", "two_shift", "day_shift"]


class ScenarioError(WearlineError, ValueError):
    """A scenario file or value is invalid; the message names the key."""


@dataclass(frozen=True)
class MachineGroup:
    """``count`` machines of one type on one line, named ``<name>-NNN`` (default name: the type's prefix)."""

    type: str
    count: int
    line: str = "line1"
    name: str = ""
    conditions: tuple[str, ...] = ()
    """Allowed operating conditions (default: all of the type's)."""
    schedule: Schedule = "continuous"
    life_scale: float = 1.0
    """Multiplies every failure mode's Weibull scale: 0.01 makes lives a hundred times shorter."""
    initial_age: tuple[float, float] = (0.0, 0.0)
    """Each machine starts this fraction of the way through its first life (drawn uniformly in the range)."""


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault on machine ``machine`` (fleet index or name), from ``onset_s`` for ``duration_s``.

    ``kind`` is a sensor fault (:data:`FAULT_KINDS`) on ``sensor`` (default: the type's first), or a failure mode
    of the machine's type, which then degrades so that the machine fails ``duration_s`` after onset.
    """

    machine: int | str
    kind: str
    onset_s: float
    duration_s: float = 60.0
    sensor: str | None = None
    magnitude: float | None = None
    """Size relative to the sensor's range (spike, step, drift end, noise sigma); default: drawn."""


@dataclass(frozen=True)
class GatewaySpec:
    """How machines reach the broker: grouped under gateways that batch, fail, skew clocks and resend."""

    machines_per_gateway: int = 50
    batch_samples: int = 1
    """Samples of one machine per message."""
    outage_rate_per_day: float = 0.0
    outage_mean_s: float = 120.0
    buffer_max_samples: int = 100_000
    """Store-and-forward buffer per gateway; beyond it the oldest samples are lost (and counted)."""
    clock_skew_ms: float = 0.0
    """Each gateway's clock is off by a constant drawn uniformly in +-this."""
    duplicate_prob: float = 0.0
    """Probability that a message is sent twice."""


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator needs besides a seed; build with :func:`load_scenario` or directly."""

    name: str = "default"
    tenant: str = "acme"
    site: str = "plant1"
    seed: int = 42
    sample_period_s: float = 1.0
    groups: tuple[MachineGroup, ...] = (MachineGroup("centrifugal_pump", 5),)
    condition_hold_h: float = 4.0
    """Mean hours a machine stays in one operating condition."""
    ambient_c: float = 20.0
    ambient_swing_c: float = 5.0
    """Daily swing of the ambient temperature (peak at 15:00 UTC)."""
    repair_h: float = 8.0
    maintenance_interval_h: float = 0.0
    """Preventive maintenance renews a machine after this many hours of life; 0: run to failure."""
    maintenance_h: float = 2.0
    degradation_visible_health: float = 0.6
    """Below this health a degradation counts as an active fault in the ground truth."""
    fault_rate_per_day: float = 0.0
    """Random sensor faults per machine and day, kinds drawn from ``fault_kinds``."""
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    faults: tuple[FaultSpec, ...] = ()
    gateways: GatewaySpec = field(default_factory=GatewaySpec)
    offline_step_h: float = 1.0
    offline_min_life_h: float = 20.0
    offline_max_life_h: float = 3000.0

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def machines(self) -> int:
        return sum(g.count for g in self.groups)

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Fault:
    """A bearing fault on one machine from ``onset_s`` (the skeleton's spelling; prefer :class:`FaultSpec`)."""

    machine_index: int
    onset_s: float
    kind: str = "bearing_wear"
    duration_s: float = 120.0


@dataclass(frozen=True)
class FleetSpec:
    """The skeleton's pump fleet (steady, one condition, no drift); :meth:`scenario` is the equivalent scenario."""

    tenant: str = "acme"
    site: str = "plant1"
    line: str = "line1"
    machines: int = 5
    sample_period_s: float = 1.0
    seed: int = 42
    faults: tuple[Fault, ...] = ()

    def scenario(self) -> Scenario:
        return Scenario(
            name="pumps",
            tenant=self.tenant,
            site=self.site,
            seed=self.seed,
            sample_period_s=self.sample_period_s,
            groups=(MachineGroup("centrifugal_pump", self.machines, self.line, conditions=("mid",)),),
            ambient_swing_c=0.0,
            faults=tuple(FaultSpec(f.machine_index, f.kind, f.onset_s, f.duration_s) for f in self.faults),
        )


def _validate(s: Scenario) -> None:
    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ScenarioError(f"{key}: {why}")

    for key in ("tenant", "site"):
        need(bool(LEVEL.match(getattr(s, key))), key, "must be 1-64 of [A-Za-z0-9_.-]")
    need(s.sample_period_s > 0, "sample_period_s", "must be > 0")
    need(bool(s.groups), "machines", "at least one machine group")
    for i, g in enumerate(s.groups):
        key = f"machines[{i}]"
        need(g.type in MACHINE_TYPES, f"{key}.type", f"unknown {g.type!r}; known: {', '.join(MACHINE_TYPES)}")
        need(g.count >= 0, f"{key}.count", "must be >= 0")
        need(bool(LEVEL.match(g.line)), f"{key}.line", "must be 1-64 of [A-Za-z0-9_.-]")
        need(not g.name or bool(LEVEL.match(g.name)), f"{key}.name", "must be 1-64 of [A-Za-z0-9_.-]")
        known = {c.name for c in MACHINE_TYPES[g.type].conditions}
        bad = [c for c in g.conditions if c not in known]
        need(not bad, f"{key}.conditions", f"unknown {bad}; {g.type} has {sorted(known)}")
        need(g.life_scale > 0, f"{key}.life_scale", "must be > 0")
        lo, hi = g.initial_age
        need(0 <= lo <= hi < 1, f"{key}.initial_age", "must be [lo, hi] with 0 <= lo <= hi < 1")
    need(s.condition_hold_h > 0, "regime.condition_hold_h", "must be > 0")
    need(s.repair_h >= 0 and s.maintenance_h >= 0, "maintenance", "durations must be >= 0")
    need(0 < s.degradation_visible_health <= 1, "degradation_visible_health", "must be in (0, 1]")
    need(s.fault_rate_per_day >= 0, "faults.rate_per_day", "must be >= 0")
    bad_kinds = [k for k in s.fault_kinds if k not in FAULT_KINDS]
    need(not bad_kinds, "faults.kinds", f"unknown {bad_kinds}; known: {list(FAULT_KINDS)}")
    gw = s.gateways
    need(gw.machines_per_gateway >= 1, "gateways.machines_per_gateway", "must be >= 1")
    need(gw.batch_samples >= 1, "gateways.batch_samples", "must be >= 1")
    need(gw.outage_rate_per_day >= 0 and gw.outage_mean_s > 0, "gateways.outage_*", "rate >= 0, mean > 0")
    need(gw.buffer_max_samples >= 1, "gateways.buffer_max_samples", "must be >= 1")
    need(0 <= gw.duplicate_prob <= 1, "gateways.duplicate_prob", "must be in [0, 1]")
    need(s.offline_step_h > 0, "offline.step_h", "must be > 0")
    need(0 < s.offline_min_life_h < s.offline_max_life_h, "offline.*_life_h", "need 0 < min_life_h < max_life_h")
    for i, f in enumerate(s.faults):
        need(f.onset_s >= 0 and f.duration_s > 0, f"faults.inject[{i}]", "onset_s >= 0 and duration_s > 0")


def _take(table: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in table:
        return default
    value = table.pop(key)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ScenarioError(f"{where}{key}: expected {kind}, got {value!r}")
    return value


def _done(table: dict[str, Any], where: str) -> None:
    if table:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(table)}")


def scenario_from_dict(raw: dict[str, Any]) -> Scenario:
    """Build a scenario from parsed TOML; unknown keys are errors, so typos do not pass silently."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    num = (int, float)
    kw: dict[str, Any] = {}
    for key, kind in (("name", str), ("tenant", str), ("site", str), ("seed", int), ("sample_period_s", num)):
        if key in raw:
            kw[key] = _take(raw, key, "", kind, None)
    groups = []
    for i, raw_group in enumerate(_take(raw, "machines", "", list, [])):
        where = f"machines[{i}]."
        g = dict(raw_group)
        groups.append(
            MachineGroup(
                type=_take(g, "type", where, str, "centrifugal_pump"),
                count=_take(g, "count", where, int, 1),
                line=_take(g, "line", where, str, "line1"),
                name=_take(g, "name", where, str, ""),
                conditions=tuple(_take(g, "conditions", where, list, [])),
                schedule=_take(g, "schedule", where, str, "continuous"),
                life_scale=float(_take(g, "life_scale", where, num, 1.0)),
                initial_age=tuple(float(x) for x in _take(g, "initial_age", where, list, [0.0, 0.0])),  # type: ignore[arg-type]
            )
        )
        if groups[-1].schedule not in ("continuous", "two_shift", "day_shift"):
            raise ScenarioError(f"{where}schedule: one of continuous, two_shift, day_shift")
        _done(g, f"machines[{i}]")
    if groups:
        kw["groups"] = tuple(groups)
    regime = _take(raw, "regime", "", dict, {})
    for key in ("condition_hold_h", "ambient_c", "ambient_swing_c"):
        if key in regime:
            kw[key] = float(_take(regime, key, "regime.", num, 0))
    _done(regime, "regime")
    maint = _take(raw, "maintenance", "", dict, {})
    for key, name in (
        ("repair_h", "repair_h"),
        ("interval_h", "maintenance_interval_h"),
        ("duration_h", "maintenance_h"),
    ):
        if key in maint:
            kw[name] = float(_take(maint, key, "maintenance.", num, 0))
    if "degradation_visible_health" in maint:
        kw["degradation_visible_health"] = float(_take(maint, "degradation_visible_health", "maintenance.", num, 0))
    _done(maint, "maintenance")
    faults = _take(raw, "faults", "", dict, {})
    if "rate_per_day" in faults:
        kw["fault_rate_per_day"] = float(_take(faults, "rate_per_day", "faults.", num, 0))
    if "kinds" in faults:
        kw["fault_kinds"] = tuple(_take(faults, "kinds", "faults.", list, []))
    injected = []
    for i, raw_fault in enumerate(_take(faults, "inject", "faults.", list, [])):
        where = f"faults.inject[{i}]."
        f = dict(raw_fault)
        magnitude = _take(f, "magnitude", where, num, None)
        injected.append(
            FaultSpec(
                machine=_take(f, "machine", where, (int, str), 0),
                kind=_take(f, "kind", where, str, "spike"),
                onset_s=float(_take(f, "onset_s", where, num, 0)),
                duration_s=float(_take(f, "duration_s", where, num, 60)),
                sensor=_take(f, "sensor", where, str, None),
                magnitude=None if magnitude is None else float(magnitude),
            )
        )
        _done(f, f"faults.inject[{i}]")
    kw["faults"] = tuple(injected)
    _done(faults, "faults")
    gw = _take(raw, "gateways", "", dict, {})
    gkw: dict[str, Any] = {}
    for fld in dataclasses.fields(GatewaySpec):
        if fld.name in gw:
            value = _take(gw, fld.name, "gateways.", num, 0)
            gkw[fld.name] = int(value) if fld.type == "int" else float(value)
    _done(gw, "gateways")
    kw["gateways"] = GatewaySpec(**gkw)
    offline = _take(raw, "offline", "", dict, {})
    for key in ("step_h", "min_life_h", "max_life_h"):
        if key in offline:
            kw[f"offline_{key}"] = float(_take(offline, key, "offline.", num, 0))
    _done(offline, "offline")
    _done(raw, "scenario")
    try:
        return Scenario(**kw)
    except TypeError as exc:
        raise ScenarioError(str(exc)) from exc


def load_scenario(path: Path) -> Scenario:
    """Read a scenario TOML file, or raise :class:`ScenarioError` naming the file and the bad key."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from exc
    try:
        return scenario_from_dict(raw)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from exc
