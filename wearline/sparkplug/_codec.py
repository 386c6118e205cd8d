"""Sparkplug B topics and payloads as plain Python values, both directions.

Only this module touches the generated protobuf classes: ingest and the simulators work with :class:`Payload` and
:class:`Metric`. Decoding keeps every metric, whatever its type; what becomes a reading is ingest's decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from google.protobuf.message import DecodeError

from wearline.errors import WearlineError
from wearline.sparkplug import sparkplug_b_pb2 as pb

__all__ = [
    "BDSEQ_METRIC",
    "NAMESPACE",
    "NUMERIC",
    "REBIRTH_METRIC",
    "DataType",
    "MessageType",
    "Metric",
    "Payload",
    "SparkplugError",
    "Topic",
    "datatype_name",
    "decode_payload",
    "encode_payload",
    "metric_number",
    "parse_topic",
    "rebirth_command",
    "state_topic",
]

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"


class SparkplugError(WearlineError):
    """A topic or payload that is not Sparkplug B; the message says what is wrong."""


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    DCMD = "DCMD"


class DataType(IntEnum):
    """Metric datatypes of the specification (the numbers are on the wire)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    # 22-34 are arrays (Int8Array ... DateTimeArray), sent as bytes_value.


NUMERIC = frozenset(range(DataType.INT8, DataType.DOUBLE + 1))
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}


def datatype_name(datatype: int) -> str:
    """The specification's name of a datatype number (arrays by number, anything else ``unknown``)."""
    try:
        return DataType(datatype).name.lower()
    except ValueError:
        return "array" if 22 <= datatype <= 34 else "unknown"


@dataclass(frozen=True, slots=True)
class Topic:
    """``spBv1.0/<group>/<type>/<edge node>[/<device>]``."""

    group: str
    kind: MessageType
    edge: str
    device: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device is not None else ""
        return f"{NAMESPACE}/{self.group}/{self.kind}/{self.edge}{tail}"


def parse_topic(topic: str) -> Topic:
    """The parts of a Sparkplug B topic, or :class:`SparkplugError` saying which part is wrong."""
    levels = topic.split("/")
    if levels[0] != NAMESPACE:
        raise SparkplugError(f"topic {topic!r} is not in the {NAMESPACE} namespace")
    if len(levels) not in (4, 5) or not all(levels[1:]):
        raise SparkplugError(f"topic {topic!r} is not {NAMESPACE}/<group>/<message type>/<edge node>[/<device>]")
    try:
        kind = MessageType(levels[2])
    except ValueError:
        raise SparkplugError(f"topic {topic!r}: {levels[2]!r} is not a Sparkplug B message type") from None
    device_message = kind.startswith("D")
    if device_message != (len(levels) == 5):
        need = "a device id" if device_message else "no device id"
        raise SparkplugError(f"topic {topic!r}: a {kind} topic has {need}")
    return Topic(levels[1], kind, levels[3], levels[4] if device_message else None)


def state_topic(host_id: str) -> str:
    """Where a Sparkplug 3.0 host application publishes whether it is online."""
    return f"{NAMESPACE}/STATE/{host_id}"


@dataclass(slots=True)
class Metric:
    """One metric as sent. ``value`` holds scalar values (numbers, booleans, strings, bytes); datasets, templates
    and extensions are kept only as their datatype (``value`` None, ``is_null`` False)."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    value: float | int | bool | str | bytes | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None
    seq: int | None
    metrics: list[Metric]


def decode_payload(raw: bytes) -> Payload:
    """Decode a Sparkplug B payload, or :class:`SparkplugError` naming what is malformed."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(raw)
    except (DecodeError, RuntimeWarning) as exc:  # RuntimeWarning: the C runtime on unexpected end-group tags
        raise SparkplugError(f"not a Sparkplug B protobuf payload: {exc}") from exc
    metrics = []
    # One C call per metric for the fields it set (HasField per field cost three times as much): field numbers are
    # the specification's; 10-16 are the scalar values, 17-19 datasets, templates and extensions (kept as None).
    for m in msg.metrics:
        x = Metric()
        for f, v in m.ListFields():
            n = f.number
            if n >= 10:
                if n <= 16:
                    x.value = v
            elif n == 1:
                x.name = v
            elif n == 2:
                x.alias = v
            elif n == 3:
                x.timestamp = v
            elif n == 4:
                x.datatype = v
            elif n == 5:
                x.is_historical = v
            elif n == 6:
                x.is_transient = v
            elif n == 7:
                x.is_null = v
        metrics.append(x)
    return Payload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        metrics=metrics,
    )


def _encode_metric(out: pb.Payload.Metric, m: Metric) -> None:
    if m.name is not None:
        out.name = m.name
    if m.alias is not None:
        out.alias = m.alias
    if m.timestamp is not None:
        out.timestamp = m.timestamp
    if m.datatype is not None:
        out.datatype = m.datatype
    if m.is_historical:
        out.is_historical = True
    if m.is_transient:
        out.is_transient = True
    if m.is_null or m.value is None:
        out.is_null = m.is_null
        return
    dt = m.datatype
    v = m.value
    if isinstance(v, bool) or dt == DataType.BOOLEAN:
        out.boolean_value = bool(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif dt in (DataType.FLOAT,):
        out.float_value = float(v)
    elif dt in (DataType.DOUBLE,) or isinstance(v, float):
        out.double_value = float(v)
    elif dt in (DataType.INT64, DataType.UINT64, DataType.DATETIME):
        out.long_value = int(v) % 2**64  # two's complement for negative Int64
    else:
        out.int_value = int(v) % 2**32  # Int8/16/32 negative values as 32-bit two's complement


def encode_payload(*, timestamp: int | None, seq: int | None, metrics: Sequence[Metric]) -> bytes:
    """A Sparkplug B payload (edge nodes in the simulators and tests; ingest's commands)."""
    msg = pb.Payload()
    if timestamp is not None:
        msg.timestamp = timestamp
    if seq is not None:
        msg.seq = seq
    for m in metrics:
        _encode_metric(msg.metrics.add(), m)
    return msg.SerializeToString()


def rebirth_command(timestamp: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    return encode_payload(
        timestamp=timestamp,
        seq=None,
        metrics=[Metric(name=REBIRTH_METRIC, timestamp=timestamp, datatype=DataType.BOOLEAN, value=True)],
    )


def metric_number(value: float | int | bool | str | bytes | None, datatype: int) -> float | None:
    """A numeric or boolean metric's value as a float (booleans 0/1, signed integers from two's complement);
    None for a non-finite float. Raises ValueError when the value is not of a numeric datatype."""
    if datatype == DataType.BOOLEAN and isinstance(value, bool | int):
        return 1.0 if value else 0.0
    if datatype not in NUMERIC or isinstance(value, str | bytes) or value is None:
        raise ValueError(f"a {datatype_name(datatype)} metric is not a number")
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        number = float(value)
        return number if math.isfinite(number) else None
    n = int(value)
    bits = _SIGNED_BITS.get(DataType(datatype))
    if bits is not None:
        width = 64 if bits == 64 else 32
        if n >= 2 ** (width - 1):
            n -= 2**width
        elif bits < 32 and 2 ** (bits - 1) <= n < 2**bits:  # some encoders send only the type's own width
            n -= 2**bits
    return float(n)
