"""Alert rules from TOML files: what each kind of evidence must show before it becomes a ticket, per machine type,
site, line or machine, reloaded when a file changes.

A file holds ``[[rule]]`` tables and ``[[escalation]]`` tables. Every rule has a ``name`` (with the machine, the
ticket's deduplication key) and a ``kind``; ``where`` narrows it to machines (``tenant``, ``site``, ``line``,
``machine``, ``machine_type``: all given keys must match). Files are read in the order ``alerts.rules`` lists them
(a folder: its ``*.toml`` files by name), and for each machine the **last** definition of a name whose ``where``
matches is the one that applies: a site's file listed after the plant-wide one overrides it, ``enabled = false``
switches a rule off there. Escalation policies follow the same "last match wins" order.

Two rules exist before any file is read, from the settings: ``anomaly`` (every anomaly the analytics worker
flags) and ``remaining_life`` (the lower bound of the remaining-life interval under ``alerts.rul_horizon_h``).
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wearline.errors import WearlineError
from wearline.settings import AlertsSettings, toml_error

__all__ = [
    "ISO_20816_ZONES",
    "Escalation",
    "RuleBook",
    "RuleError",
    "RuleSet",
    "Where",
    "load_rules",
]

log = logging.getLogger("wearline.alerts")

# Vibration severity zone boundaries, velocity RMS in mm/s, by machine class, in the style of ISO 10816-1 /
# ISO 20816-1 Annex B: A/B (newly commissioned), B/C (unrestricted long-term operation ends), C/D (damage may
# occur). Class I: small machines (up to 15 kW); II: medium (15-75 kW, or up to 300 kW on special foundations);
# III: large machines on rigid foundations; IV: large machines on soft foundations. The part of ISO 20816 for a
# given machine family may set other values: give ``zones = [a_b, b_c, c_d]`` to use them.
ISO_20816_ZONES: dict[str, tuple[float, float, float]] = {
    "I": (0.71, 1.8, 4.5),
    "II": (1.12, 2.8, 7.1),
    "III": (1.8, 4.5, 11.2),
    "IV": (2.8, 7.1, 18.0),
}


class RuleError(WearlineError):
    """A rule file that cannot be used: the message names the file, the line and the key."""


class Where(BaseModel):
    """Which machines a rule or policy applies to; every key given must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: str | None = None
    site: str | None = None
    line: str | None = None
    machine: str | None = None
    machine_type: str | None = None

    def matches(self, tenant: str, site: str, line: str, machine: str | None, machine_type: str | None) -> bool:
        return (
            (self.tenant is None or self.tenant == tenant)
            and (self.site is None or self.site == site)
            and (self.line is None or self.line == line)
            and (self.machine is None or self.machine == machine)
            and (self.machine_type is None or self.machine_type == machine_type)
        )


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Seconds = Annotated[float, Field(ge=0, le=366 * 86400)]
Priority = Annotated[int, Field(ge=1, le=4)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    where: Where = Where()
    enabled: bool = True


class AnomalyRule(_Rule):
    """Anomalies whose score is ``open_ratio`` times their threshold, one after another (no gap over ``max_gap_s``)
    for ``for_s``, open a ticket; once it is live, any anomaly at ``hold_ratio`` or more counts as new evidence
    (hysteresis: a weaker one does not keep it alive)."""

    kind: Literal["anomaly"]
    open_ratio: Annotated[float, Field(gt=0)] = 1.0
    hold_ratio: Annotated[float, Field(gt=0)] = 1.0
    for_s: Seconds = 0.0
    max_gap_s: Annotated[float, Field(gt=0)] = 900.0

    @model_validator(mode="after")
    def _hysteresis(self) -> AnomalyRule:
        if self.hold_ratio > self.open_ratio:
            raise ValueError(f"hold_ratio ({self.hold_ratio}) is above open_ratio ({self.open_ratio})")
        return self


class RemainingLifeRule(_Rule):
    """A predictive work order when the lower bound of the remaining-life interval is under ``horizon_h``."""

    kind: Literal["remaining_life"]
    horizon_h: Annotated[float, Field(gt=0)]


class ThresholdRule(_Rule):
    """A sensor above ``above`` (or below ``below``) on every reading for ``for_s`` opens a ticket at
    ``priority``; past ``critical`` it is priority 1. It clears once the value is back past ``clear_at``
    (hysteresis; default: the opening bound)."""

    kind: Literal["threshold"]
    sensor: Annotated[str, Field(min_length=1)]
    above: float | None = None
    below: float | None = None
    critical: float | None = None
    clear_at: float | None = None
    for_s: Seconds = 0.0
    priority: Priority = 3

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.above is not None:
            if self.critical is not None and self.critical < self.above:
                raise ValueError(f"critical ({self.critical}) is below above ({self.above})")
            if self.clear_at is not None and self.clear_at > self.above:
                raise ValueError(f"clear_at ({self.clear_at}) is above above ({self.above}): no hysteresis")
        if self.below is not None:
            if self.critical is not None and self.critical > self.below:
                raise ValueError(f"critical ({self.critical}) is above below ({self.below})")
            if self.clear_at is not None and self.clear_at < self.below:
                raise ValueError(f"clear_at ({self.clear_at}) is below below ({self.below}): no hysteresis")
        return self

    def breached(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]

    def cleared(self, value: float) -> bool:
        bound = self.clear_at if self.clear_at is not None else (self.above if self.above is not None else self.below)
        assert bound is not None
        return value <= bound if self.above is not None else value >= bound

    def severity(self, value: float) -> int:
        if self.critical is None:
            return self.priority
        past = value >= self.critical if self.above is not None else value <= self.critical
        return 1 if past else self.priority


class VibrationZoneRule(_Rule):
    """Vibration severity zones on a velocity-RMS sensor (mm/s): zone C (past B/C) for ``for_s`` opens a ticket at
    priority 3, zone D (past C/D) makes it priority 1; it clears back in zone A/B (below the A/B-B/C midpoint)."""

    kind: Literal["vibration_zone"]
    sensor: Annotated[str, Field(min_length=1)]
    machine_class: Literal["I", "II", "III", "IV"] | None = None
    zones: tuple[float, float, float] | None = None
    for_s: Seconds = 60.0

    @model_validator(mode="after")
    def _zones(self) -> VibrationZoneRule:
        if (self.machine_class is None) == (self.zones is None):
            raise ValueError("give exactly one of machine_class (I-IV) or zones = [a_b, b_c, c_d]")
        a, b, c = self.boundaries
        if not 0 < a < b < c:
            raise ValueError(f"zones must rise: 0 < A/B < B/C < C/D, got {[a, b, c]}")
        return self

    @property
    def boundaries(self) -> tuple[float, float, float]:
        return self.zones if self.zones is not None else ISO_20816_ZONES[self.machine_class or "II"]

    def as_threshold(self) -> ThresholdRule:
        a, b, c = self.boundaries
        return ThresholdRule(
            kind="threshold",
            name=self.name,
            where=self.where,
            sensor=self.sensor,
            above=b,
            critical=c,
            clear_at=(a + b) / 2,
            for_s=self.for_s,
            priority=3,
        )


class SilenceRule(_Rule):
    """A machine with no reading for ``factor`` times its usual interval (and at least ``min_s``) gets a ticket;
    when every watched machine of a line (a gateway) is silent, the line gets one ticket instead."""

    kind: Literal["silence"]
    factor: Annotated[float, Field(ge=2)] = 10.0
    min_s: Annotated[float, Field(gt=0)] = 300.0
    priority: Priority = 2


class DeadLetterRule(_Rule):
    """More than ``per_minute`` dead letters a minute over ``window_s`` from one gateway (a tenant/site/line topic
    prefix) open a ticket on that line; ``where`` may name tenant, site and line only."""

    kind: Literal["dead_letters"]
    per_minute: Annotated[float, Field(gt=0)] = 60.0
    window_s: Annotated[float, Field(ge=60, le=86400)] = 300.0
    priority: Priority = 2

    @model_validator(mode="after")
    def _gateway_scope(self) -> DeadLetterRule:
        if self.where.machine is not None or self.where.machine_type is not None:
            raise ValueError("dead-letter rules apply to gateways: where may name tenant, site and line only")
        return self


Rule = Annotated[
    AnomalyRule | RemainingLifeRule | ThresholdRule | VibrationZoneRule | SilenceRule | DeadLetterRule,
    Field(discriminator="kind"),
]


class Escalation(BaseModel):
    """Who is told, and when, about a ticket nobody acknowledged, for the tickets of ``where``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    where: Where = Where()
    ack_timeout_s: Annotated[float, Field(gt=0)]
    levels: Annotated[list[str], Field(min_length=1)]

    @model_validator(mode="after")
    def _site_scope(self) -> Escalation:
        if self.where.machine is not None or self.where.machine_type is not None:
            raise ValueError("escalation follows the organisation: where may name tenant, site and line only")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: list[Rule] = []
    escalation: list[Escalation] = []


@dataclass(frozen=True)
class RuleSet:
    """Every rule definition and escalation policy, in the order they override each other."""

    rules: tuple[Any, ...]
    escalations: tuple[Escalation, ...]
    files: tuple[Path, ...] = ()
    # Rules per machine, worked out once per rule set: a pass asks for every machine of the fleet, and matching
    # 10,000 machines against every rule each second was a tenth of a pass.
    _chosen: dict[tuple[str, str, str, str | None, str | None], tuple[Any, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def for_machine(
        self, tenant: str, site: str, line: str, machine: str | None, machine_type: str | None
    ) -> list[Any]:
        """The rules that apply to one machine (or, with ``machine`` None, to a line): the last matching
        definition of each name, if it is enabled."""
        key = (tenant, site, line, machine, machine_type)
        found = self._chosen.get(key)
        if found is None:
            chosen: dict[str, Any] = {}
            for r in self.rules:
                if r.where.matches(tenant, site, line, machine, machine_type):
                    chosen[r.name] = r
            found = self._chosen[key] = tuple(r for r in chosen.values() if r.enabled)
        return list(found)

    def escalation_for(self, tenant: str, site: str, line: str) -> Escalation:
        found = self.escalations[0]
        for e in self.escalations:
            if e.where.matches(tenant, site, line, None, None):
                found = e
        return found

    @property
    def kinds(self) -> set[str]:
        return {r.kind for r in self.rules if r.enabled}


def built_in(settings: AlertsSettings) -> RuleSet:
    return RuleSet(
        rules=(
            AnomalyRule(kind="anomaly", name="anomaly"),
            RemainingLifeRule(kind="remaining_life", name="remaining_life", horizon_h=settings.rul_horizon_h),
        ),
        escalations=(Escalation(ack_timeout_s=settings.ack_timeout_s, levels=list(settings.escalation_levels)),),
    )


def rule_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.glob("*.toml")))
        elif p.is_file():
            files.append(p)
        else:
            raise RuleError(f"alerts.rules: {p} does not exist")
    return files


def load_rules(settings: AlertsSettings) -> RuleSet:
    """The built-in rules followed by every file of ``alerts.rules``, or :class:`RuleError` naming the first
    problem by file, line and key."""
    base = built_in(settings)
    rules, escalations = list(base.rules), list(base.escalations)
    files = rule_files(list(settings.rules))
    for path in files:
        parsed = _parse(path)
        rules.extend(r.as_threshold() if isinstance(r, VibrationZoneRule) else r for r in parsed.rule)
        escalations.extend(parsed.escalation)
    return RuleSet(tuple(rules), tuple(escalations), tuple(files))


def _parse(path: Path) -> _File:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot be read as UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(toml_error(path, exc)) from exc
    try:
        return _File.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        line = None
        if len(loc) >= 2 and loc[0] in ("rule", "escalation") and loc[1].isdigit():
            table = f"[[{loc[0]}]] #{int(loc[1]) + 1}"
            keys = [x for x in loc[2:] if x not in _KINDS and not x.isdigit()]
            if len(loc) == 2 and err["type"].startswith("union_tag"):
                keys = ["kind"]
            subject = f"{table}, {'.'.join(keys)}" if keys else table  # no key: the table as a whole
            line = _line_of(text, loc[0], int(loc[1]), keys[0] if keys else None)
        else:
            subject = f"top level, {'.'.join(loc)}"
        where = f"{path} line {line}" if line else str(path)
        raise RuleError(f"{where}: {subject}: {msg}") from None


_KINDS = {"anomaly", "remaining_life", "threshold", "vibration_zone", "silence", "dead_letters"}


def _line_of(text: str, table: str, n: int, key: str | None) -> int | None:
    """The line a validation error points at: the key's line inside the n-th ``[[table]]``, else its header."""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\[\s*{table}\s*\]\]")
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    if n >= len(starts):
        return None
    end = next((i for i in range(starts[n] + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    if key is not None:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(starts[n] + 1, end):
            if pattern.match(lines[i]):
                return i + 1
    return starts[n] + 1


@dataclass
class RuleBook:
    """The rules in force, reloaded when a file's modification time or size changes: a file that fails to load
    is logged and the previous rules stay."""

    settings: AlertsSettings
    current: RuleSet = field(init=False)
    _stamp: tuple[tuple[str, float, int], ...] = field(init=False, default=())
    reloads: int = 0
    reload_errors: int = 0

    def __post_init__(self) -> None:
        self.current = load_rules(self.settings)
        self._stamp = self._stamps()

    def _stamps(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        try:
            files = rule_files(list(self.settings.rules))
        except RuleError:
            return (("missing", 0.0, 0),)
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime, st.st_size))
        return tuple(out)

    def refresh(self) -> RuleSet:
        stamp = self._stamps()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.current = load_rules(self.settings)
            except RuleError as exc:
                self.reload_errors += 1
                log.error("alert rules not reloaded, the previous ones stay in force: %s", exc)
            else:
                self.reloads += 1
                log.info(
                    "alert rules reloaded from %d file(s): %d rules", len(self.current.files), len(self.current.rules)
                )
        return self.current
