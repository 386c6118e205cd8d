"""The JSON telemetry payload (version 1), both directions: gateways encode it, ingest decodes and validates it.

See ``docs/wire-contract.md`` for the prose. Decoding does no per-message allocation beyond what the rows need,
since it runs for every message on the ingest hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import orjson

__all__ = [
    "PAYLOAD_VERSION",
    "DecodedMessage",
    "PayloadError",
    "Reason",
    "Sample",
    "decode_message",
    "encode_message",
    "ms_to_datetime",
]

PAYLOAD_VERSION = 1
MAX_SENSORS = 256


class Reason(StrEnum):
    """Why a message was refused; the label of the dead-letter metric and the ``reason`` column."""

    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    BAD_SCHEMA = "bad_schema"
    UNSUPPORTED_VERSION = "unsupported_version"
    NON_FINITE = "non_finite"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_MACHINE = "unknown_machine"
    TOO_MANY_SENSORS = "too_many_sensors"
    DB_REJECTED = "db_rejected"
    CONFLICT = "conflict"
    """A re-send whose value for a sensor and instant differs from the one stored first (which stays)."""
    REGISTRY_LIMIT = "registry_limit"
    """Auto-registration refused a new tenant, machine or sensor (``ingest.max_*`` and ``auto_register_tenants``)."""
    NOT_SPARKPLUG = "not_sparkplug"
    """A message on a ``spBv1.0/...`` topic that is not a Sparkplug B protobuf payload (or lacks its ``seq``)."""
    SPARKPLUG_UNBORN = "sparkplug_unborn"
    """Sparkplug data from an edge node or device with no birth in force (before its birth, after its death)."""
    SPARKPLUG_UNKNOWN_METRIC = "sparkplug_unknown_metric"
    """Sparkplug data naming an alias or metric its birth certificate did not declare."""
    NO_GATEWAY = "no_gateway"
    """Telemetry for a tenant and site that no live gateway covers, while gateways are in use (``wearline gateways``,
    ``ingest.require_gateways``): the broker should have refused it; ingest refuses it again."""


class PayloadError(ValueError):
    """A message that cannot become readings; ``reason`` is a :class:`Reason`, ``detail`` says exactly what."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Sample:
    """The values of one machine's sensors at one instant; ``None`` marks a sensor that sent no value."""

    ts_ms: int
    values: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    machine_type: str | None
    samples: list[Sample]


def encode_message(samples: Sequence[Sample], machine_type: str | None = None) -> bytes:
    """One message holding one or more samples of one machine."""
    body: dict[str, object] = {"v": PAYLOAD_VERSION}
    if machine_type is not None:
        body["type"] = machine_type
    body["samples"] = [{"ts": s.ts_ms, "values": dict(s.values)} for s in samples]
    return orjson.dumps(body)


def _parse_ts(raw: object) -> int:
    if isinstance(raw, bool):
        raise PayloadError(Reason.BAD_SCHEMA, "ts must be epoch milliseconds or an RFC 3339 string, not a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise PayloadError(Reason.NON_FINITE, "ts is not finite")
        return round(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadError(Reason.BAD_SCHEMA, f"ts {raw[:40]!r} is not RFC 3339") from exc
        if parsed.tzinfo is None:
            raise PayloadError(Reason.BAD_SCHEMA, f"ts {raw[:40]!r} has no UTC offset")
        return round(parsed.timestamp() * 1000)
    raise PayloadError(
        Reason.BAD_SCHEMA, f"ts must be epoch milliseconds or an RFC 3339 string, not {type(raw).__name__}"
    )


def _bad_name(name: str) -> bool:
    # PostgreSQL text refuses NUL and control characters make names unreadable; checked once per new name.
    return not 0 < len(name) <= 64 or not name.isprintable()


def _parse_values(raw: object) -> dict[str, float | None]:
    if not isinstance(raw, dict) or not raw:
        raise PayloadError(Reason.BAD_SCHEMA, "values must be a non-empty object of sensor name to number")
    if len(raw) > MAX_SENSORS:
        raise PayloadError(Reason.TOO_MANY_SENSORS, f"{len(raw)} sensors in one sample, at most {MAX_SENSORS}")
    for name, value in raw.items():
        if name not in _GOOD_NAMES:
            if _bad_name(name):
                raise PayloadError(Reason.BAD_SCHEMA, f"sensor name {name[:64]!r} is not 1-64 printable characters")
            if len(_GOOD_NAMES) < 100_000:
                _GOOD_NAMES.add(name)
        if value is None:
            continue
        if value.__class__ is not float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise PayloadError(
                Reason.BAD_SCHEMA, f"value of sensor {name[:64]!r} is {type(value).__name__}, not a number"
            )
        if not math.isfinite(value):  # orjson never yields these, but a Python caller might
            raise PayloadError(Reason.NON_FINITE, f"value of sensor {name[:64]!r} is not finite")
    return raw


# Sensor names already validated: a fleet uses a few hundred, so the per-name check runs about once per name.
_GOOD_NAMES: set[str] = set()


def decode_message(
    payload: bytes,
    *,
    now_ms: int,
    max_bytes: int,
    max_future_ms: int,
    max_past_ms: int,
) -> DecodedMessage:
    """Validate one payload into samples, or raise :class:`PayloadError` with the first problem found."""
    if len(payload) > max_bytes:
        raise PayloadError(Reason.OVERSIZED, f"{len(payload)} bytes, at most {max_bytes}")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # JSON has no NaN or Infinity; a number too large for a double is the one way to write a non-finite value.
        reason = Reason.NON_FINITE if "infinity" in str(exc) else Reason.NOT_JSON
        raise PayloadError(reason, str(exc)[:200]) from exc
    if not isinstance(body, dict):
        raise PayloadError(Reason.BAD_SCHEMA, f"top level is {type(body).__name__}, not an object")
    version = body.get("v")
    if version != PAYLOAD_VERSION:
        raise PayloadError(Reason.UNSUPPORTED_VERSION, f"v is {version!r}, this ingest reads v={PAYLOAD_VERSION}")
    machine_type = body.get("type")
    if machine_type is not None and (not isinstance(machine_type, str) or _bad_name(machine_type)):
        raise PayloadError(Reason.BAD_SCHEMA, "type must be a string of 1-64 printable characters")
    if "samples" in body:
        raw_samples = body["samples"]
        if not isinstance(raw_samples, list) or not raw_samples:
            raise PayloadError(Reason.BAD_SCHEMA, "samples must be a non-empty array")
    elif "ts" in body or "values" in body:
        raw_samples = [body]
    else:
        raise PayloadError(Reason.BAD_SCHEMA, "neither samples nor ts/values present")
    lo, hi = now_ms - max_past_ms, now_ms + max_future_ms
    samples = []
    for raw in raw_samples:
        if not isinstance(raw, dict):
            raise PayloadError(Reason.BAD_SCHEMA, "each sample must be an object with ts and values")
        if "ts" not in raw:
            raise PayloadError(Reason.BAD_SCHEMA, "sample has no ts")
        ts = _parse_ts(raw["ts"])
        if ts > hi:
            raise PayloadError(Reason.TS_FUTURE, f"ts {ts} is {(ts - now_ms) / 1000:.0f} s ahead of ingest's clock")
        if ts < lo:
            raise PayloadError(Reason.TS_PAST, f"ts {ts} is {(now_ms - ts) / 86_400_000:.1f} days old")
        samples.append(Sample(ts, _parse_values(raw.get("values"))))
    return DecodedMessage(machine_type, samples)


def ms_to_datetime(ts_ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
