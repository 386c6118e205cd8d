"""The few MQTT packets a subscriber needs, in MQTT 3.1.1 and 5, encoded and decoded by hand.

paho-mqtt read each PUBLISH with one ``recv`` per header byte and built objects per message: 42 us of Python a
message in ingest (issue 17). Here every read is appended to one bytearray and the PUBLISH frames in it are cut out
in one pass, remaining length and packet id read by index. The MQTT 5 properties of a PUBLISH are skipped by their
length: the subscriber advertises no Topic Alias Maximum and sets no subscription identifiers, so no property of a
PUBLISH can change which topic or message it is.

Covered: CONNECT, CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PUBLISH received at QoS 0 and 1, PUBACK,
PINGREQ, PINGRESP, DISCONNECT (both ways in MQTT 5). Not covered: publishing, QoS 2 (ingest subscribes at QoS 1 and
refuses any other grant, so a QoS 2 PUBLISH is a broker's protocol error), AUTH (enhanced authentication), wills.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass, field

from wearline.errors import WearlineError

__all__ = [
    "BrokerError",
    "Connack",
    "Decoder",
    "Disconnect",
    "MalformedPacket",
    "Message",
    "Pingresp",
    "Suback",
    "Unsuback",
    "connect",
    "disconnect",
    "explain",
    "pingreq",
    "puback",
    "reason_name",
    "subscribe",
    "unsubscribe",
]


class BrokerError(WearlineError):
    """The broker could not be reached, refused us, broke the protocol, or the connection dropped."""


class MalformedPacket(BrokerError):
    """A packet from the broker that does not parse; the message names the packet and what is wrong."""


@dataclass(slots=True)
class Message:
    """A PUBLISH as received: ``mid`` is the broker's packet id (0 at QoS 0), acknowledged by :func:`puback`."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    redelivered: bool
    received_at: float


Properties = dict[str, int | str | bytes]


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suback:
    mid: int
    reasons: list[int]
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unsuback:
    mid: int


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int
    properties: Properties = field(default_factory=dict)


Control = Connack | Suback | Unsuback | Pingresp | Disconnect

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
_PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# MQTT 5 reason codes, worded as paho words them (log lines and error messages stayed the same).
_REASONS = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with will message",
    0x80: "Unspecified error",
    0x81: "Malformed packet",
    0x82: "Protocol error",
    0x83: "Implementation specific error",
    0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid",
    0x86: "Bad user name or password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic filter invalid",
    0x90: "Topic name invalid",
    0x91: "Packet identifier in use",
    0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscriptions not supported",
}
# MQTT 3.1.1 CONNACK return codes, mapped to the MQTT 5 reason they mean (as paho does).
_V3_CONNACK = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


def reason_name(code: int, *, suback: bool = False) -> str:
    """The words for a reason code; in a SUBACK, 0 means QoS 0 granted (a downgrade for ingest)."""
    if suback and code == 0:
        return "Granted QoS 0"
    return _REASONS.get(code, f"reason code 0x{code:02X}")


def explain(code: int, properties: Properties) -> str:
    """A reason code in words, with the broker's own Reason String when it sent one."""
    why = properties.get("ReasonString")
    return reason_name(code) + (f" ({why})" if isinstance(why, str) else "")


_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTIES: dict[int, tuple[str, int]] = {
    0x01: ("PayloadFormatIndicator", _BYTE),
    0x02: ("MessageExpiryInterval", _FOUR),
    0x03: ("ContentType", _UTF8),
    0x08: ("ResponseTopic", _UTF8),
    0x09: ("CorrelationData", _BINARY),
    0x0B: ("SubscriptionIdentifier", _VARINT),
    0x11: ("SessionExpiryInterval", _FOUR),
    0x12: ("AssignedClientIdentifier", _UTF8),
    0x13: ("ServerKeepAlive", _TWO),
    0x15: ("AuthenticationMethod", _UTF8),
    0x16: ("AuthenticationData", _BINARY),
    0x17: ("RequestProblemInformation", _BYTE),
    0x18: ("WillDelayInterval", _FOUR),
    0x19: ("RequestResponseInformation", _BYTE),
    0x1A: ("ResponseInformation", _UTF8),
    0x1C: ("ServerReference", _UTF8),
    0x1F: ("ReasonString", _UTF8),
    0x21: ("ReceiveMaximum", _TWO),
    0x22: ("TopicAliasMaximum", _TWO),
    0x23: ("TopicAlias", _TWO),
    0x24: ("MaximumQoS", _BYTE),
    0x25: ("RetainAvailable", _BYTE),
    0x26: ("UserProperty", _PAIR),
    0x27: ("MaximumPacketSize", _FOUR),
    0x28: ("WildcardSubscriptionAvailable", _BYTE),
    0x29: ("SubscriptionIdentifierAvailable", _BYTE),
    0x2A: ("SharedSubscriptionAvailable", _BYTE),
}
_NOT_UTF8 = "<topic is not UTF-8>"
_MAX_REMAINING = 268_435_455  # four bytes of variable byte integer


# --- encoding -----------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if not 0 <= n <= _MAX_REMAINING:
        raise ValueError(f"{n} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 65535:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(
    client_id: str,
    *,
    v5: bool,
    clean: bool,
    keepalive_s: int,
    username: str | None = None,
    password: str | None = None,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
) -> bytes:
    """A CONNECT; over MQTT 5 with the session expiry and Receive Maximum given (``None``: not sent)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    head = _utf8("MQTT") + bytes([5 if v5 else 4, flags]) + keepalive_s.to_bytes(2, "big")
    if v5:
        props = b""
        if session_expiry_s is not None:
            props += b"\x11" + session_expiry_s.to_bytes(4, "big")
        if receive_maximum is not None:
            props += b"\x21" + receive_maximum.to_bytes(2, "big")
        head += _varint(len(props)) + props
    body = head + _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        raw = password.encode()
        body += len(raw).to_bytes(2, "big") + raw
    return _packet(CONNECT << 4, body)


def subscribe(mid: int, filters: Iterable[str], *, v5: bool, qos: int = 1) -> bytes:
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for f in filters:
        body += _utf8(f) + bytes([qos])
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(mid: int, filters: Iterable[str], *, v5: bool) -> bytes:
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for f in filters:
        body += _utf8(f)
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


_PUBACK = struct.Struct(">BBH")


def puback(mids: Iterable[int]) -> bytes:
    """PUBACKs for these packet ids, in this order, as one write (reason Success, which MQTT 5 lets us omit)."""
    pack = _PUBACK.pack
    return b"".join([pack(0x40, 2, mid) for mid in mids])


def pingreq() -> bytes:
    return b"\xc0\x00"


def disconnect(*, v5: bool, session_expiry_s: int | None = None) -> bytes:
    """A normal DISCONNECT; over MQTT 5 ``session_expiry_s`` replaces the session expiry (0 ends the session)."""
    if not v5 or session_expiry_s is None:
        return b"\xe0\x00"
    props = b"\x11" + session_expiry_s.to_bytes(4, "big")
    return _packet(DISCONNECT << 4, b"\x00" + _varint(len(props)) + props)


# --- decoding -----------------------------------------------------------------------------------------------------


def _read_varint(buf: bytes | bytearray, pos: int, end: int, what: str) -> tuple[int, int]:
    """A variable byte integer at ``pos``: (value, position after it); malformed past ``end`` or four bytes."""
    value = 0
    shift = 0
    for i in range(pos, min(end, pos + 4)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    if end - pos >= 4:
        raise MalformedPacket(f"malformed {what}: variable byte integer longer than 4 bytes")
    raise MalformedPacket(f"malformed {what}: variable byte integer runs past the packet")


def _properties(buf: bytes | bytearray, pos: int, end: int, what: str) -> tuple[Properties, int]:
    length, pos = _read_varint(buf, pos, end, f"{what} property length")
    stop = pos + length
    if stop > end:
        raise MalformedPacket(f"malformed {what}: properties of {length} bytes run past the packet")
    props: Properties = {}
    while pos < stop:
        ident, pos = _read_varint(buf, pos, stop, f"{what} property identifier")
        known = _PROPERTIES.get(ident)
        if known is None:
            raise MalformedPacket(f"malformed {what}: unknown property 0x{ident:02X}")
        name, kind = known
        value: int | str | bytes
        if kind == _BYTE:
            size = 1
        elif kind == _TWO:
            size = 2
        elif kind == _FOUR:
            size = 4
        elif kind == _VARINT:
            value, pos = _read_varint(buf, pos, stop, f"{what} property {name}")
            props[name] = value
            continue
        else:
            size = -1
        if size > 0:
            if pos + size > stop:
                raise MalformedPacket(f"malformed {what}: property {name} runs past the packet")
            props[name] = int.from_bytes(buf[pos : pos + size], "big")
            pos += size
            continue
        for _ in range(2 if kind == _PAIR else 1):
            if pos + 2 > stop:
                raise MalformedPacket(f"malformed {what}: property {name} runs past the packet")
            n = int.from_bytes(buf[pos : pos + 2], "big")
            if pos + 2 + n > stop:
                raise MalformedPacket(f"malformed {what}: property {name} runs past the packet")
            raw = bytes(buf[pos + 2 : pos + 2 + n])
            pos += 2 + n
            try:
                value = raw if kind == _BINARY else raw.decode()
            except UnicodeDecodeError as exc:
                raise MalformedPacket(f"malformed {what}: property {name} is not UTF-8") from exc
            if kind != _PAIR:  # user properties carry nothing ingest reads
                props[name] = value
    return props, stop


class Decoder:
    """Cuts packets from the bytes a connection delivers, whatever the boundaries of the reads.

    ``feed`` appends each PUBLISH, as a :class:`Message`, to the caller's list or deque and returns the other
    packets; a partial packet waits for the next read. A packet that does not parse raises :class:`MalformedPacket`
    (the PUBLISH messages before it in the same read have been appended)."""

    __slots__ = ("_buf", "_v5")

    def __init__(self, *, v5: bool) -> None:
        self._v5 = v5
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes, now: float, into: MutableSequence[Message]) -> list[Control]:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        controls: list[Control] = []
        append = into.append
        v5 = self._v5
        try:
            with memoryview(buf) as view:
                while n - pos >= 2:
                    first = buf[pos]
                    length = buf[pos + 1]
                    start = pos + 2
                    if length >= 0x80:  # two bytes (128 B to 16 kB, telemetry's usual size) inline, more in a loop
                        if start < n and buf[start] < 0x80:
                            length = (length & 0x7F) | buf[start] << 7
                            start += 1
                        else:
                            length, start = _remaining(buf, pos + 1, n)
                            if start < 0:
                                break
                    end = start + length
                    if end > n:
                        break
                    if first >> 4 == PUBLISH:
                        qos = (first >> 1) & 3
                        if length < 2:
                            raise MalformedPacket(f"malformed PUBLISH: remaining length {length}")
                        t_end = start + 2 + (buf[start] << 8 | buf[start + 1])
                        body = t_end + (2 if qos else 0)
                        if body > end:
                            raise MalformedPacket(
                                f"malformed PUBLISH: topic and packet id need {body - start} bytes, the packet has "
                                f"{length}"
                            )
                        if qos == 1:
                            mid = buf[t_end] << 8 | buf[t_end + 1]
                        elif qos == 0:
                            mid = 0
                        else:
                            raise MalformedPacket(
                                f"malformed PUBLISH: QoS {qos} on a QoS 1 subscription"
                                if qos == 2
                                else "malformed PUBLISH: QoS bits 11"
                            )
                        if v5:
                            if body >= end:
                                raise MalformedPacket("malformed PUBLISH: no property length")
                            skip = buf[body]
                            if skip < 0x80:
                                body += 1 + skip
                            else:
                                skip, body = _read_varint(buf, body, end, "PUBLISH property length")
                                body += skip
                            if body > end:
                                raise MalformedPacket("malformed PUBLISH: properties run past the packet")
                        try:
                            topic = str(view[start + 2 : t_end], "utf-8")
                        except UnicodeDecodeError:
                            # Brokers should refuse such topics; if one gets through, keep it (a dead letter later).
                            topic = _NOT_UTF8
                        append(Message(topic, view[body:end].tobytes(), mid, qos, bool(first & 0x08), now))
                    else:
                        controls.append(self._control(first, buf, start, end))
                    pos = end
        finally:
            if pos:
                del buf[:pos]
        return controls

    def _control(self, first: int, buf: bytearray, start: int, end: int) -> Control:
        kind = first >> 4
        name = _PACKET_NAMES.get(kind, f"packet type {kind}")
        length = end - start
        if kind == CONNACK:
            if length < 2:
                raise MalformedPacket(f"malformed CONNACK: remaining length {length}")
            present = bool(buf[start] & 0x01)
            if not self._v5:
                code = buf[start + 1]
                return Connack(present, _V3_CONNACK.get(code, 0x80))
            props, _ = _properties(buf, start + 2, end, "CONNACK") if length > 2 else ({}, end)
            return Connack(present, buf[start + 1], props)
        if kind == SUBACK:
            if length < 3:
                raise MalformedPacket(f"malformed SUBACK: remaining length {length}")
            mid = buf[start] << 8 | buf[start + 1]
            props, pos = _properties(buf, start + 2, end, "SUBACK") if self._v5 else ({}, start + 2)
            return Suback(mid, list(buf[pos:end]), props)
        if kind == UNSUBACK:
            if length < 2:
                raise MalformedPacket(f"malformed UNSUBACK: remaining length {length}")
            return Unsuback(buf[start] << 8 | buf[start + 1])
        if kind == PINGRESP:
            return Pingresp()
        if kind == DISCONNECT and self._v5:
            if length == 0:
                return Disconnect(0)
            props, _ = _properties(buf, start + 1, end, "DISCONNECT") if length > 1 else ({}, end)
            return Disconnect(buf[start], props)
        raise MalformedPacket(f"unexpected {name} from the broker (a subscriber at QoS 1 never receives one)")


def _remaining(buf: bytearray, pos: int, n: int) -> tuple[int, int]:
    """The remaining length starting at ``pos``: (value, start of the variable header), or (0, -1) if incomplete."""
    value = 0
    shift = 0
    for i in range(pos, pos + 4):
        if i >= n:
            return 0, -1
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    raise MalformedPacket(f"malformed packet type {buf[pos - 1] >> 4}: remaining length longer than 4 bytes")
