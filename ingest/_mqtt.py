"""An asyncio MQTT subscriber that acknowledges QoS 1 messages only when told to.

aiomqtt acknowledges on receipt and offers no manual acknowledgement, so ingest drives paho-mqtt 2.x itself, with
``manual_ack=True``, on the event loop's own selector (no network thread): the socket's readability calls
``loop_read``, its writability ``loop_write``. The broker's in-flight window (MQTT 5 Receive Maximum, or the
broker's ``max_inflight_messages`` over 3.1.1) bounds how many unacknowledged messages we can hold, and since we
acknowledge after commit that window is the back-pressure: the broker keeps the rest.

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
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wearline.errors import WearlineError
from wearline.settings import MqttSettings

__all__ = ["BrokerError", "Message", "Subscriber", "probe_broker_version"]

log = logging.getLogger(__name__)


class BrokerError(WearlineError):
    """The broker could not be reached, refused us, or the connection dropped."""


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    redelivered: bool
    received_at: float


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
        self._buffer: collections.deque[Message] = collections.deque()
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sock: socket.socket | None = None
        self._reading = False
        self._connected: asyncio.Future[bool] = self._loop.create_future()
        self._subscribed: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[str] = self._loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        self.session_present = False
        self._connack: Properties | None = None
        self._client = self._make_client()

    @property
    def is_v5(self) -> bool:
        return self._settings.protocol == "5"

    def _make_client(self) -> paho.Client:
        s = self._settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.is_v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.is_v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            client.tls_set_context(s.ssl_context())
        client.connect_timeout = s.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    # paho callbacks. The socket ones also run in the executor thread that performs the blocking connect; there
    # they hand their work to the loop. On the loop's own thread they act at once, before paho closes the socket.
    def _on_loop(self, fn: Callable[[], object]) -> None:
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def register() -> None:
            self._sock = sock
            self._resume_reading()

        self._on_loop(register)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            self._pause_reading()
            self._loop.remove_writer(sock)
            self._sock = None

        self._on_loop(unregister)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(lambda: self._loop.add_writer(sock, client.loop_write))

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(lambda: self._loop.remove_writer(sock))

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.done():
            return
        if reason.is_failure:
            self._connected.set_exception(BrokerError(f"broker refused the connection: {reason}"))
        else:
            self._connack = properties
            self._connected.set_result(bool(flags.session_present))

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if self._subscribed.done():
            return
        bad = [r for r in reasons if r.is_failure or r.value != 1]
        if bad:
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

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._connected.done():
            self._connected.set_exception(BrokerError(f"disconnected before CONNACK: {reason}"))
        if not self._lost.done():
            self._lost.set_result(str(reason))
        self._arrived.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # Brokers should refuse such topics; if one gets through, keep it (as a dead letter later), not crash.
            topic = "<topic is not UTF-8>"
        self._buffer.append(Message(topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), self._loop.time()))
        self._arrived.set()
        if len(self._buffer) >= self._max_buffered:
            # Stop reading the socket: TCP flow control and the broker's queue hold the rest.
            self._pause_reading()

    def _on_readable(self) -> None:
        self._client.loop_read()

    def _pause_reading(self) -> None:
        if self._reading and self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._sock is not None:
            self._loop.add_reader(self._sock, self._on_readable)
            self._reading = True

    async def _misc_loop(self) -> None:
        # paho's keepalive pings and retries live in loop_misc, which wants calling about once a second.
        while True:
            await asyncio.sleep(1)
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS and not self._lost.done():
                self._lost.set_result("keepalive or socket failure")
                self._arrived.set()

    def _check_broker(self) -> None:
        """What an MQTT 5 CONNACK tells about the promise; refuse what breaks it, warn about what weakens it."""
        s = self._settings
        if not self.is_v5:
            log.info(
                "MQTT 3.1.1: the broker's limits cannot be checked; it must keep queued messages without limit "
                "(mosquitto: a max_queued_messages far above any backlog) and allow at least one batch in flight (max_inflight_messages)"
            )
            return
        props = self._connack

        def got(name: str) -> object:
            return getattr(props, name, None)

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

    async def __aenter__(self) -> Subscriber:
        """Connect, check the CONNACK and send the SUBSCRIBE; the SUBACK is awaited by :meth:`next_batch`.

        Every failure, whatever its type (refusal, DNS, TLS, a timeout), is a :class:`BrokerError`: a connection
        problem must lead to a reconnection, never end the process.
        """
        s = self._settings
        props = None
        if self.is_v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = self._receive_maximum
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    s.host,
                    s.port,
                    keepalive=s.keepalive_s,
                    # MQTT 5 resumes the session by clean_start; 3.1.1 by clean_session=False on the client.
                    clean_start=False if self.is_v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=props,
                ),
            )
        except Exception as exc:  # socket, DNS, TLS and paho's own errors alike
            raise BrokerError(f"cannot connect to the broker at {s.host}:{s.port}: {exc!r}") from exc
        self._misc = asyncio.create_task(self._misc_loop(), name="mqtt-misc")
        try:
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    self.session_present = await self._connected
            except TimeoutError as exc:
                raise BrokerError(f"no CONNACK from {s.host}:{s.port} within {s.connect_timeout_s} s") from exc
            self._check_broker()
            result, _ = self._client.subscribe([(f, 1) for f in self._filters])
            if result != paho.MQTT_ERR_SUCCESS:
                raise BrokerError(f"cannot send SUBSCRIBE: {paho.error_string(result)}")
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
        self._client.unsubscribe(self._filters)

    async def end_session(self) -> None:
        """Ask the broker to discard our session, so that it stops keeping (or routing) messages for it.

        Call after everything received has been committed and acknowledged. MQTT 5 says so in the DISCONNECT
        (Session Expiry Interval 0); MQTT 3.1.1 can only do it by connecting again with a clean session.
        """
        if self.is_v5 and self._client.is_connected():
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._client.loop_write()
            self._client.disconnect(properties=props)
            self._client.loop_write()
            await self._close()
            return
        await self._close()
        s = self._settings

        def clean_connect() -> None:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=True,
            )
            if s.username is not None:
                client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
            if s.tls:
                client.tls_set_context(s.ssl_context())
            client.connect(s.host, s.port, keepalive=s.keepalive_s)
            client.loop(s.connect_timeout_s)  # read the CONNACK: the session is gone from here
            client.disconnect()

        try:
            await self._loop.run_in_executor(None, clean_connect)
        except Exception as exc:
            raise BrokerError(f"could not end the session of {self._client_id}: {exc!r}") from exc

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        if self._client.is_connected():
            # Flush pending acknowledgements before saying goodbye.
            self._client.loop_write()
            self._client.disconnect()
            self._client.loop_write()
        if self._sock is not None:  # paho did not close it itself (no connection was ever made)
            self._pause_reading()
            self._loop.remove_writer(self._sock)
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
        batch = [self._buffer.popleft() for _ in range(n)]
        if len(self._buffer) < self._max_buffered // 2:
            self._resume_reading()
        return batch

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge committed messages, in the order they arrived (as MQTT requires); nothing once the
        connection is lost (the next session's packet ids are not these)."""
        if self._lost.done():
            return
        for m in messages:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)


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
