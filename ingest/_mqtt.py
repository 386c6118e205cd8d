"""An asyncio MQTT subscriber that acknowledges QoS 1 messages only when told to.

aiomqtt acknowledges on receipt and offers no manual acknowledgement; paho-mqtt has one, but its receive path cost
ingest 42 us of Python a message (one ``recv`` per header byte, objects per message; issue 17). So the subscriber
speaks MQTT itself: an :class:`asyncio.Protocol` hands each read to :class:`~ingest._mqtt_codec.Decoder`, which
cuts every PUBLISH in it at once, and PUBACKs are written in one piece per committed batch. The broker's in-flight
window (MQTT 5 Receive Maximum, or the broker's ``max_inflight_messages`` over 3.1.1) bounds how many
unacknowledged messages we can hold, and since we acknowledge after commit that window is the back-pressure: the
broker keeps the rest. paho stays for the probe below, the Sparkplug host and every publisher.

Reconnecting means leaving the context and entering a new one; with a persistent session the broker redelivers
every message we had not acknowledged. A resumed session delivers up to a whole in-flight window *before* the
SUBACK, so the subscription is confirmed in the background while those messages are processed: waiting for the
SUBACK first would deadlock once the window fills the buffer and reading pauses (issue 11).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest import _mqtt_codec as codec
from ingest._mqtt_codec import BrokerError, Message
from wearline.settings import MqttSettings

__all__ = ["BrokerError", "Message", "Subscriber", "probe_broker_version"]

log = logging.getLogger(__name__)

_CLOSE_WAIT_S = 2.0
"""How long leaving waits for the connection to close (pending PUBACKs and the DISCONNECT written, TLS shut)."""


class _Connection(asyncio.Protocol):
    """The transport's events, passed on to the subscriber."""

    def __init__(self, owner: Subscriber) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._received(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lose(f"connection closed: {exc!r}" if exc else "connection closed by the broker")
        self._owner._closed.set()


class Subscriber:
    """Subscribe to one topic filter at QoS 1 and hand out messages in batches; ``ack`` after commit.

    Use as ``async with Subscriber(...) as sub: batch = await sub.next_batch(...); ...; sub.ack(batch)``.
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        topic_filter: str,
        client_id: str,
        receive_maximum: int,
        max_buffered: int,
        max_payload_bytes: int = 0,
        extra_filters: Sequence[str] = (),
    ) -> None:
        self._settings = settings
        self._filter = topic_filter
        self._filters = [topic_filter, *extra_filters]  # Sparkplug B groups beside the JSON telemetry
        self._client_id = client_id
        self._receive_maximum = receive_maximum
        self._max_buffered = max_buffered
        self._max_payload_bytes = max_payload_bytes
        self._ssl = settings.ssl_context()  # a missing certificate fails here, naming the setting
        self._buffer: collections.deque[Message] = collections.deque()
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._decoder = codec.Decoder(v5=self.is_v5)
        self._transport: asyncio.Transport | None = None
        self._closed = asyncio.Event()
        self._reading = True
        self._connected: asyncio.Future[bool] = self._loop.create_future()
        self._subscribed: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[str] = self._loop.create_future()
        self._keepalive: asyncio.Task[None] | None = None
        self._keepalive_s = float(settings.keepalive_s)
        self._last_in = self._last_out = self._loop.time()
        self._ping_sent: float | None = None
        self._next_mid = 0
        self._sub_mid = 0
        self.session_present = False
        self._connack: codec.Properties = {}

    @property
    def is_v5(self) -> bool:
        return self._settings.protocol == "5"

    # --- the connection's events ----------------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        now = self._last_in = self._loop.time()
        buffer = self._buffer
        before = len(buffer)
        try:
            controls = self._decoder.feed(data, now, buffer)
        except BrokerError as exc:
            self._drop(str(exc))
            controls = []
        if len(buffer) != before:
            self._arrived.set()
            if len(buffer) >= self._max_buffered:
                # Stop reading the socket: TCP flow control and the broker's queue hold the rest.
                self._pause_reading()
        for packet in controls:
            self._control(packet)

    def _control(self, packet: codec.Control) -> None:
        if isinstance(packet, codec.Pingresp):
            self._ping_sent = None
        elif isinstance(packet, codec.Suback):
            self._on_suback(packet)
        elif isinstance(packet, codec.Connack):
            self._on_connack(packet)
        elif isinstance(packet, codec.Disconnect):
            self._drop(f"the broker disconnected us: {codec.explain(packet.reason, packet.properties)}")
        # an UNSUBACK needs nothing: what the broker queued before it still arrives

    def _on_connack(self, packet: codec.Connack) -> None:
        if self._connected.done():
            self._drop("a second CONNACK")
            return
        if packet.reason >= 0x80:
            reason = codec.explain(packet.reason, packet.properties)
            self._connected.set_exception(BrokerError(f"broker refused the connection: {reason}"))
            return
        self._connack = packet.properties
        keepalive = packet.properties.get("ServerKeepAlive")
        if isinstance(keepalive, int):  # MQTT 5: the broker's keepalive replaces ours
            self._keepalive_s = float(keepalive)
        self._connected.set_result(packet.session_present)

    def _on_suback(self, packet: codec.Suback) -> None:
        if self._subscribed.done() or packet.mid != self._sub_mid:
            return
        bad = [codec.reason_name(r, suback=True) for r in packet.reasons if r != 1]
        if bad or len(packet.reasons) != len(self._filters):
            self._subscribed.set_exception(
                BrokerError(f"subscription to {', '.join(self._filters)} refused or downgraded: {bad}")
            )
            self._arrived.set()
            return
        self._subscribed.set_result(None)
        log.info(
            "subscribed to %s as %s (MQTT %s, session %s)",
            ", ".join(self._filters),
            self._client_id,
            self._settings.protocol,
            "resumed" if self.session_present else "new",
        )

    def _lose(self, reason: str) -> None:
        if not self._connected.done():
            self._connected.set_exception(BrokerError(f"disconnected before CONNACK: {reason}"))
        if not self._lost.done():
            self._lost.set_result(reason)
        self._arrived.set()

    def _drop(self, reason: str) -> None:
        """Give up the connection (a protocol error, a dead broker): what was received stays to be handed out."""
        self._lose(reason)
        if self._transport is not None:
            self._transport.abort()

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_out = self._loop.time()

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._reading = True
            if self._ping_sent is not None:
                self._ping_sent = self._loop.time()  # a PINGRESP could not be read while reading was paused

    async def _keepalive_loop(self) -> None:
        # As paho did: a PINGREQ once nothing went either way for a keepalive; no PINGRESP a keepalive later while
        # we read is a dead broker.
        while True:
            await asyncio.sleep(min(1.0, self._keepalive_s / 4) if self._keepalive_s else 1.0)
            if not self._keepalive_s or self._lost.done():
                continue
            now = self._loop.time()
            if self._ping_sent is not None:
                if self._reading and now - self._ping_sent >= self._keepalive_s:
                    self._drop(f"keepalive timeout: no PINGRESP within {self._keepalive_s:g} s")
            elif now - self._last_out >= self._keepalive_s or now - self._last_in >= self._keepalive_s:
                self._send(codec.pingreq())
                self._ping_sent = now

    def _mid(self) -> int:
        self._next_mid = self._next_mid % 65535 + 1
        return self._next_mid

    # --- the interface ------------------------------------------------------------------------------------------

    def _check_broker(self) -> None:
        """What an MQTT 5 CONNACK tells about the promise; refuse what breaks it, warn about what weakens it."""
        s = self._settings
        if not self.is_v5:
            log.info(
                "MQTT 3.1.1: the broker's limits cannot be checked; it must keep queued messages without limit "
                "(mosquitto: a max_queued_messages far above any backlog) and allow at least one batch in flight (max_inflight_messages)"
            )
            return
        got = self._connack.get
        if got("MaximumQoS") == 0:
            raise BrokerError("the broker grants only QoS 0 (CONNACK Maximum QoS): nothing could be redelivered")
        if self._filter.startswith("$share/") and got("SharedSubscriptionAvailable") == 0:
            raise BrokerError(
                "the broker does not support shared subscriptions (CONNACK); set ingest.shared_group to none"
            )
        expiry = got("SessionExpiryInterval")
        if isinstance(expiry, int) and expiry < s.session_expiry_s:
            log.warning(
                "the broker cut our session expiry to %d s (asked %d s): messages published while ingest is down "
                "for longer are lost",
                expiry,
                s.session_expiry_s,
            )
        max_packet = got("MaximumPacketSize")
        if isinstance(max_packet, int) and self._max_payload_bytes and max_packet < self._max_payload_bytes:
            log.warning(
                "the broker accepts packets of at most %d bytes, below ingest.max_payload_bytes (%d): gateways' "
                "larger messages are refused by the broker and cannot be kept as dead letters",
                max_packet,
                self._max_payload_bytes,
            )

    def _connect_packet(self, *, clean: bool) -> bytes:
        s = self._settings
        return codec.connect(
            self._client_id,
            v5=self.is_v5,
            # MQTT 5 resumes the session with clean start off; 3.1.1 with clean session off.
            clean=clean,
            keepalive_s=s.keepalive_s,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            session_expiry_s=s.session_expiry_s if self.is_v5 else None,
            receive_maximum=self._receive_maximum if self.is_v5 else None,
        )

    async def __aenter__(self) -> Subscriber:
        """Connect, check the CONNACK and send the SUBSCRIBE; the SUBACK is awaited by :meth:`next_batch`.

        Every failure, whatever its type (refusal, DNS, TLS, a timeout), is a :class:`BrokerError`: a connection
        problem must lead to a reconnection, never end the process.
        """
        s = self._settings
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                transport, _ = await self._loop.create_connection(
                    lambda: _Connection(self),
                    s.host,
                    s.port,
                    ssl=self._ssl,
                    server_hostname=s.host if self._ssl is not None else None,
                )
        except Exception as exc:  # socket, DNS, TLS and the timeout alike
            raise BrokerError(f"cannot connect to the broker at {s.host}:{s.port}: {exc!r}") from exc
        self._transport = transport
        try:
            self._send(self._connect_packet(clean=False))
            self._keepalive = asyncio.create_task(self._keepalive_loop(), name="mqtt-keepalive")
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    self.session_present = await self._connected
            except TimeoutError as exc:
                raise BrokerError(f"no CONNACK from {s.host}:{s.port} within {s.connect_timeout_s} s") from exc
            self._check_broker()
            self._sub_mid = self._mid()
            self._send(codec.subscribe(self._sub_mid, self._filters, v5=self.is_v5))
        except BaseException as exc:
            await self._close()
            if isinstance(exc, Exception) and not isinstance(exc, BrokerError):
                raise BrokerError(f"connection set-up failed: {exc!r}") from exc
            raise
        return self

    @property
    def subscribed(self) -> bool:
        """True once the broker has granted the subscription (the SUBACK has been read)."""
        return self._subscribed.done() and self._subscribed.exception() is None

    def unsubscribe(self) -> None:
        """Ask the broker to stop routing new messages to us; what it already queued for us still arrives."""
        self._send(codec.unsubscribe(self._mid(), self._filters, v5=self.is_v5))

    async def end_session(self) -> None:
        """Ask the broker to discard our session, so that it stops keeping (or routing) messages for it.

        Call after everything received has been committed and acknowledged. MQTT 5 says so in the DISCONNECT
        (Session Expiry Interval 0); MQTT 3.1.1 can only do it by connecting again with a clean session.
        """
        if self.is_v5 and self._connected.done() and not self._lost.done():
            await self._close(codec.disconnect(v5=True, session_expiry_s=0))
            return
        await self._close()
        s = self._settings
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    s.host, s.port, ssl=self._ssl, server_hostname=s.host if self._ssl is not None else None
                )
                try:
                    writer.write(
                        codec.connect(
                            self._client_id,
                            v5=False,
                            clean=True,
                            keepalive_s=s.keepalive_s,
                            username=s.username,
                            password=s.password.get_secret_value() if s.password is not None else None,
                        )
                    )
                    connack = await reader.readexactly(4)  # the session is gone once the CONNACK is sent
                    if connack[0] >> 4 != codec.CONNACK or connack[3] != 0:
                        raise BrokerError(f"clean connection refused: CONNACK {connack.hex()}")
                    writer.write(codec.disconnect(v5=False))
                    await writer.drain()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except Exception as exc:
            raise BrokerError(f"could not end the session of {self._client_id}: {exc!r}") from exc

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self, goodbye: bytes | None = None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._connected.done() and not self._lost.done():
                # After the pending acknowledgements (close() writes what is buffered first).
                self._send(goodbye or codec.disconnect(v5=self.is_v5))
            if not self._connected.done():
                self._connected.cancel()  # nobody waits for it any more: no "exception never retrieved"
            self._lose("closed by us")
            transport.close()
        if transport is not None:
            try:
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await self._closed.wait()
            except TimeoutError:
                transport.abort()
        self._buffer.clear()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def next_batch(self, max_messages: int, max_delay_s: float, idle_s: float) -> list[Message]:
        """Up to ``max_messages``, waiting at most ``max_delay_s`` after the first arrives, or an empty list after
        ``idle_s`` with nothing. Once the connection is lost, what was received before is still handed out, and
        then :class:`BrokerError` is raised.

        Messages received and not yet committed are not dropped with the connection: a broker that crashed
        (kill -9) restores its last snapshot, which need not hold them, and Mosquitto 2.0 does not count a message
        sent straight to a subscriber as a change towards its next snapshot. Committing them without an
        acknowledgement costs at most an identical redelivery, which ingest stores once."""
        deadline: float | None = None
        idle_until = self._loop.time() + idle_s
        while True:
            if self._lost.done():
                if self._buffer:
                    break
                raise BrokerError(f"connection to the broker lost: {self._lost.result()}")
            if self._subscribed.done() and self._subscribed.exception() is not None:
                raise BrokerError(str(self._subscribed.exception()))
            if len(self._buffer) >= max_messages:
                break
            now = self._loop.time()
            if self._buffer and deadline is None:
                deadline = self._buffer[0].received_at + max_delay_s
            if deadline is not None and now >= deadline:
                break
            if deadline is None and now >= idle_until:
                return []
            self._arrived.clear()
            timeout = (idle_until if deadline is None else deadline) - now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
        n = min(max_messages, len(self._buffer))
        popleft = self._buffer.popleft
        batch = [popleft() for _ in range(n)]
        if len(self._buffer) < self._max_buffered // 2:
            self._resume_reading()
        return batch

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge committed messages, in the order they arrived (as MQTT requires); nothing once the
        connection is lost (the next session's packet ids are not these)."""
        if self._lost.done():
            return
        mids = [m.mid for m in messages if m.qos]
        if mids:
            self._send(codec.puback(mids))


def _probe(settings: MqttSettings, client_id: str, wait_s: float) -> str | None:
    got: list[str] = []
    done = threading.Event()

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            done.set()
            return
        # Mosquitto answers the first, EMQX the second (one topic per node); both are retained.
        client.subscribe([("$SYS/broker/version", 0), ("$SYS/brokers/+/version", 0)])

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        got.append(msg.payload.decode("utf-8", "replace"))
        done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if settings.protocol == "5" else MQTTProtocolVersion.MQTTv311,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password.get_secret_value() if settings.password else None)
    if settings.tls:
        client.tls_set_context(settings.ssl_context())
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    client.loop_start()
    try:
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


async def probe_broker_version(settings: MqttSettings, *, client_id: str, wait_s: float = 2.0) -> str | None:
    """The broker's self-description from ``$SYS`` (``"mosquitto version 2.0.11"``, EMQX's version), or None.

    Used once at start-up to choose a subscription scheme the broker can keep across its own restarts. A broker
    that publishes no ``$SYS`` (HiveMQ, or Mosquitto with ``sys_interval 0``) answers None. Raises
    :class:`BrokerError` when the broker cannot be reached.
    """
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _probe, settings, client_id, wait_s)
    except Exception as exc:
        raise BrokerError(f"cannot connect to the broker at {settings.host}:{settings.port}: {exc!r}") from exc
