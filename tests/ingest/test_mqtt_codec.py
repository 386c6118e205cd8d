"""The subscriber's own MQTT codec (issue 17): frames split at every byte, remaining lengths at the boundaries of
their encoding, malformed frames refused by name; and, against a real Mosquitto, what it writes (CONNECT with
Receive Maximum, SUBSCRIBE, PUBACK, PINGREQ) doing what it should."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest import _mqtt_codec as codec
from ingest._mqtt import BrokerError, Subscriber
from ingest._mqtt_codec import Decoder, MalformedPacket, Message
from tests.conftest import TEST_MQTT, unique
from tests.ingest._fault_support import Broker, broker
from wearline.mosquitto import LocalAuth, LocalBroker, password_entry
from wearline.settings import MqttSettings


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish(
    topic: bytes, payload: bytes, *, qos: int, mid: int = 0, v5: bool, props: bytes = b"", dup: bool = False
) -> bytes:
    """A PUBLISH as a broker writes it (built here independently of the codec's encoders)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if v5:
        body += _varint(len(props)) + props
    return bytes([0x30 | qos << 1 | (0x08 if dup else 0)]) + _varint(len(body + payload)) + body + payload


def _stream(v5: bool) -> bytes:
    connack = b"\x20\x02\x01\x00" if not v5 else b"\x20\x0d\x01\x00\x0a\x21\x00\x64\x2a\x00\x13\x00\x05\x24\x01"
    suback = b"\x90\x03\x00\x01\x01" if not v5 else b"\x90\x04\x00\x01\x00\x01"
    return b"".join(
        [
            connack,
            _publish(b"a/b", b'{"v":1}', qos=1, mid=7, v5=v5, props=b"\x01\x01\x23\x00\x02" if v5 else b""),
            suback,
            _publish(b"a/\xc3\xa9", b"", qos=0, v5=v5),
            _publish(b"t" * 100, bytes(range(256)) * 2, qos=1, mid=65535, v5=v5, dup=True),  # two-byte length
            b"\xd0\x00",  # PINGRESP
        ]
    )


def _feed_all(pieces: list[bytes], v5: bool) -> tuple[list[Message], list[codec.Control], int]:
    decoder = Decoder(v5=v5)
    messages: list[Message] = []
    controls: list[codec.Control] = []
    for piece in pieces:
        controls += decoder.feed(piece, 1.0, messages)
    return messages, controls, decoder.pending


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_stream_split_at_every_byte_decodes_as_a_whole(v5: bool) -> None:
    data = _stream(v5)
    whole = _feed_all([data], v5)
    messages, controls, pending = whole
    assert pending == 0
    assert [(m.topic, m.mid, m.qos, m.redelivered) for m in messages] == [
        ("a/b", 7, 1, False),
        ("a/é", 0, 0, False),
        ("t" * 100, 65535, 1, True),
    ]
    assert messages[0].payload == b'{"v":1}'
    assert messages[2].payload == bytes(range(256)) * 2
    assert [type(c).__name__ for c in controls] == ["Connack", "Suback", "Pingresp"]
    connack = controls[0]
    assert isinstance(connack, codec.Connack)
    assert connack.session_present
    assert connack.reason == 0
    if v5:
        assert connack.properties == {
            "ReceiveMaximum": 100,
            "SharedSubscriptionAvailable": 0,
            "ServerKeepAlive": 5,
            "MaximumQoS": 1,
        }
    assert controls[1] == codec.Suback(1, [1])
    for cut in range(1, len(data)):
        assert _feed_all([data[:cut], data[cut:]], v5) == whole, f"split at byte {cut}"
    assert _feed_all([data[i : i + 1] for i in range(len(data))], v5) == whole, "one byte at a time"


@pytest.mark.parametrize("remaining", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_remaining_lengths_at_the_boundaries_of_their_encoding(remaining: int) -> None:
    """One, two, three and four bytes of remaining length, each at both ends; the last byte arriving last."""
    if remaining == 0:
        frame = b"\xd0\x00"
    else:
        frame = _publish(b"x", b"p" * (remaining - 3), qos=0, v5=False)
        assert frame[1 : 1 + len(_varint(remaining))] == _varint(remaining)
    messages: list[Message] = []
    decoder = Decoder(v5=False)
    assert decoder.feed(frame[:-1], 0.0, messages) == []
    assert not messages
    controls = decoder.feed(frame[-1:], 0.0, messages)
    assert decoder.pending == 0
    if remaining == 0:
        assert controls == [codec.Pingresp()]
    else:
        assert [len(m.payload) for m in messages] == [remaining - 3]
    assert codec._varint(remaining) == _varint(remaining)


def test_the_largest_remaining_length_encodes_and_one_more_does_not() -> None:
    assert codec._varint(268_435_455) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError, match="variable byte integer"):
        codec._varint(268_435_456)
    # A header announcing the largest length waits for the rest rather than failing.
    assert Decoder(v5=False).feed(b"\x30\xff\xff\xff\x7f\x00", 0.0, []) == []


@pytest.mark.parametrize(
    ("v5", "frame", "named"),
    [
        (False, b"\x30\xff\xff\xff\xff\x01", "remaining length longer than 4 bytes"),
        (False, b"\x30\x05\x00\x09abc", "malformed PUBLISH: topic and packet id need 11 bytes, the packet has 5"),
        (False, b"\x32\x04\x00\x01a\x00", "malformed PUBLISH: topic and packet id need 5 bytes, the packet has 4"),
        (False, b"\x36\x05\x00\x01a\x00\x01", "malformed PUBLISH: QoS bits 11"),
        (False, b"\x34\x05\x00\x01a\x00\x01", "malformed PUBLISH: QoS 2 on a QoS 1 subscription"),
        (True, b"\x30\x03\x00\x01a", "malformed PUBLISH: no property length"),
        (True, b"\x30\x05\x00\x01a\x05x", "malformed PUBLISH: properties run past the packet"),
        (True, b"\x20\x05\x00\x00\x02\x7e\x00", "malformed CONNACK: unknown property 0x7E"),
        (True, b"\x20\x05\x00\x00\x02\x21\x00", "malformed CONNACK: property ReceiveMaximum runs past the packet"),
        (True, b"\x20\x06\x00\x00\x03\x1f\x00\x05", "malformed CONNACK: property ReasonString runs past the packet"),
        (False, b"\x20\x01\x00", "malformed CONNACK: remaining length 1"),
        (False, b"\x62\x02\x00\x01", "unexpected PUBREL from the broker"),
        (False, b"\xe0\x00", "unexpected DISCONNECT from the broker"),  # only MQTT 5 brokers may send one
    ],
)
def test_a_malformed_frame_is_a_broker_error_naming_it(v5: bool, frame: bytes, named: str) -> None:
    messages: list[Message] = []
    good = _publish(b"ok", b"1", qos=1, mid=1, v5=v5)
    with pytest.raises(BrokerError, match=named.replace("(", r"\(")) as caught:
        Decoder(v5=v5).feed(good + frame, 0.0, messages)
    assert isinstance(caught.value, MalformedPacket)
    assert [m.payload for m in messages] == [b"1"], "what came before the bad frame is kept"


def test_a_topic_that_is_not_utf8_is_kept_under_a_placeholder() -> None:
    messages: list[Message] = []
    Decoder(v5=True).feed(_publish(b"a/\xff", b"x", qos=1, mid=3, v5=True), 0.0, messages)
    assert [(m.topic, m.payload, m.mid) for m in messages] == [("<topic is not UTF-8>", b"x", 3)]


def test_encoders_write_what_the_standard_says() -> None:
    assert codec.puback([1, 258, 65535]) == b"\x40\x02\x00\x01\x40\x02\x01\x02\x40\x02\xff\xff"
    assert codec.subscribe(9, ["a/#", "b"], v5=True) == b"\x82\x0d\x00\x09\x00\x00\x03a/#\x01\x00\x01b\x01"
    assert codec.subscribe(9, ["a"], v5=False) == b"\x82\x06\x00\x09\x00\x01a\x01"
    assert codec.unsubscribe(2, ["a"], v5=True) == b"\xa2\x06\x00\x02\x00\x00\x01a"
    assert codec.disconnect(v5=True, session_expiry_s=0) == b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00"
    assert codec.connect("c", v5=False, clean=False, keepalive_s=30, username="u", password="p") == (
        b"\x10\x13\x00\x04MQTT\x04\xc0\x00\x1e\x00\x01c\x00\x01u\x00\x01p"
    )
    assert codec.connect("c", v5=True, clean=True, keepalive_s=30, session_expiry_s=60, receive_maximum=100) == (
        b"\x10\x16\x00\x04MQTT\x05\x02\x00\x1e\x08\x11\x00\x00\x00\x3c\x21\x00\x64\x00\x01c"
    )


def _settings(host: str, port: int, protocol: str, keepalive_s: int = 30) -> MqttSettings:
    return MqttSettings(host=host, port=port, protocol=protocol, keepalive_s=keepalive_s)


def _publish_with_paho(host: str, port: int, items: list[tuple[str, bytes, int]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        for topic, payload, qos in items:
            client.publish(topic, payload, qos).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def _drain(sub: Subscriber, want: int, *, ack: bool) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < want and time.monotonic() < deadline:
        batch = await sub.next_batch(want, 0.05, idle_s=0.5)
        got += batch
        if ack:
            sub.ack(batch)
    return got


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_through_mosquitto_acknowledged_messages_stay_acknowledged_and_the_rest_come_back(protocol: str) -> None:
    """An in-flight window of 20 (Receive Maximum over MQTT 5, the machine broker's max_inflight_messages over
    3.1.1) against 50 messages, some of 70 kB (three bytes of remaining length), on a non-ASCII topic: the first
    session acknowledges 10 of the 30 it gets; the resumed one gets the other 20 again, marked redelivered and in
    order, then the 20 never sent, and nothing more. CONNECT, SUBSCRIBE and PUBACK as the broker reads them."""
    host, port = TEST_MQTT.rsplit(":", 1)
    settings = _settings(host, int(port), protocol)
    base = unique("wlt/codec-")
    client_id = unique("wlt-codec-")
    items = [(f"{base}/m{i}/é", (b"%d:" % i) + b"x" * (70_000 if i % 10 == 0 else i), 1) for i in range(50)]

    def sub() -> Subscriber:
        return Subscriber(
            settings=settings, topic_filter=f"{base}/#", client_id=client_id, receive_maximum=20, max_buffered=20
        )

    async with sub() as first:
        assert not await first.next_batch(1, 0.01, idle_s=1.0)
        assert first.subscribed
        assert not first.session_present
        await asyncio.to_thread(_publish_with_paho, host, int(port), items)
        got = await _drain(first, 20, ack=False)
        assert len(got) == 20
        assert first.buffered == 0, "Receive Maximum (5) or max_inflight_messages (3.1.1) holds the rest"
        first.ack(got[:10])
        more = await _drain(first, 10, ack=False)  # ten acknowledged: ten more in flight
        assert [m.payload.split(b":")[0] for m in more] == [b"%d" % i for i in range(20, 30)]
    async with sub() as second:
        assert second.session_present
        again = await _drain(second, 40, ack=True)
        assert not await second.next_batch(1, 0.01, idle_s=0.5), "the ten acknowledged did not come back"
        await second.end_session()
    payloads = [m.payload for m in again]
    print(f"\nMQTT {protocol}: 20 + 10 received, 10 acknowledged; after resuming {len(again)} received")
    assert payloads[:20] == [p for _, p, _ in items[10:30]], "the unacknowledged, in order"
    assert all(m.redelivered for m in again[:20])
    assert sorted(payloads) == sorted(p for _, p, _ in items[10:])
    assert again[0].topic == f"{base}/m10/é"


async def _until_lost(sub: Subscriber) -> None:
    for _ in range(10):
        await sub.next_batch(1, 0.01, idle_s=0.5)


@pytest.fixture
def stoppable_broker() -> Iterator[Broker]:
    """A Mosquitto of the test's own, to be stopped with SIGSTOP (and continued before it is killed)."""
    with broker() as b:
        try:
            yield b
        finally:
            if b.proc is not None:
                b.proc.send_signal(signal.SIGCONT)


async def test_a_broker_that_stops_answering_is_found_by_the_keepalive(stoppable_broker: Broker) -> None:
    """PINGREQs keep an idle connection up; once the broker stops answering them the connection is given up
    within twice the keepalive, as a BrokerError. The keepalive is 1 s, below the settings' floor of 5 s
    (``model_copy`` does not validate), so that the test takes seconds."""
    broker = stoppable_broker
    settings = _settings("127.0.0.1", broker.port, "5").model_copy(update={"keepalive_s": 1})
    async with Subscriber(
        settings=settings,
        topic_filter=unique("wlt/ka-") + "/#",
        client_id=unique("wlt-ka-"),
        receive_maximum=10,
        max_buffered=10,
    ) as sub:
        assert not await sub.next_batch(1, 0.01, idle_s=2.5), "idle for two keepalives: still connected"
        assert sub.subscribed
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(BrokerError, match="keepalive timeout: no PINGRESP within 1 s"):
            await _until_lost(sub)
        took = time.monotonic() - started
        print(f"\nbroker stopped: connection given up after {took:.1f} s (keepalive 1 s)")
        assert took < 3.5


class _PasswordBroker(LocalBroker):
    """Mosquitto with one user, ``ingest``, who may read ``wlt/allowed/#`` and nothing else."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="wlt-codec-mosquitto-"))
        passwords, acl = self.folder / "passwd", self.folder / "acl"
        passwords.write_text(password_entry("ingest", "right") + "\n")
        acl.write_text("user ingest\ntopic read wlt/allowed/#\n")
        for path in (passwords, acl):
            os.chmod(path, 0o644)  # the broker drops to its own user, which must read them
        super().__init__(self.folder, auth=LocalAuth(password_file=passwords, acl_file=acl))


@pytest.fixture(scope="module")
def password_broker() -> Iterator[_PasswordBroker]:
    b = _PasswordBroker()
    b.start()
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(b.folder, ignore_errors=True)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_wrong_password_is_a_broker_error_in_words(password_broker: _PasswordBroker, protocol: str) -> None:
    """Refused at CONNACK, as a BrokerError that says why; the right password subscribes."""

    def sub(password: str) -> Subscriber:
        settings = MqttSettings(
            host="127.0.0.1", port=password_broker.port, protocol=protocol, username="ingest", password=password
        )
        return Subscriber(
            settings=settings,
            topic_filter="wlt/allowed/#",
            client_id=unique("wlt-refused-"),
            receive_maximum=10,
            max_buffered=10,
        )

    with pytest.raises(BrokerError, match=r"broker refused the connection: (Not authorized|Bad user name or password)"):
        await sub("wrong").__aenter__()
    async with sub("right") as allowed:
        assert not await allowed.next_batch(1, 0.01, idle_s=0.5)
        assert allowed.subscribed


@pytest.mark.parametrize(
    ("protocol", "said"),
    [
        ("5", r"the broker grants only QoS 0 \(CONNACK Maximum QoS\)"),
        ("3.1.1", r"subscription to wlt/q/# refused or downgraded: \['Granted QoS 0'\]"),
    ],
)
async def test_a_broker_granting_only_qos_0_is_refused(protocol: str, said: str) -> None:
    """MQTT 5 says so in the CONNACK, checked before subscribing; over 3.1.1 the SUBACK's downgrade is the sign."""
    b = Broker()
    with b.conf.open("a") as conf:
        conf.write("\nmax_qos 0\n")
    b.start()
    try:
        settings = _settings("127.0.0.1", b.port, protocol)
        with pytest.raises(BrokerError, match=said):
            await _subscribe_and_wait(settings, "wlt/q/#")
    finally:
        b.close()


async def _subscribe_and_wait(settings: MqttSettings, topic_filter: str) -> None:
    async with Subscriber(
        settings=settings, topic_filter=topic_filter, client_id=unique("wlt-q0-"), receive_maximum=10, max_buffered=10
    ) as sub:
        await sub.next_batch(1, 0.01, idle_s=2.0)
