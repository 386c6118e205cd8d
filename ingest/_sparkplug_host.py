"""The host application's own MQTT connection: its STATE (Sparkplug 3.0) and the rebirth commands it sends.

Ingest's subscriber acknowledges by hand on the event loop and never publishes; this is a second, ordinary paho
client with its network thread. Only the worker that is the host's voice (worker 0) publishes STATE:
``spBv1.0/STATE/<host id>`` = ``{"online": true, "timestamp": T}``, QoS 1, retained, with the Will
``{"online": false, "timestamp": T}`` (the same T, as the specification asks), so edge nodes that wait for their
primary host see it go offline when the connection drops. Every worker sends the rebirth requests of its own edge
nodes (NCMD ``Node Control/Rebirth``, QoS 0 as commands are).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import TracebackType
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest._mqtt import BrokerError
from wearline.settings import MqttSettings
from wearline.sparkplug import NAMESPACE, MessageType, rebirth_command, state_topic

__all__ = ["HostClient"]

log = logging.getLogger(__name__)


def state_payload(*, online: bool, timestamp: int) -> bytes:
    return orjson.dumps({"online": online, "timestamp": timestamp})


class HostClient:
    """``async with HostClient(...) as host: host.request_rebirth(group, edge)``; STATE online while inside."""

    def __init__(self, *, settings: MqttSettings, client_id: str, host_id: str, publish_state: bool) -> None:
        self._settings = settings
        self._state_topic = state_topic(host_id)
        self._publish_state = publish_state
        self._timestamp = int(time.time() * 1000)
        self._connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if settings.protocol == "5" else MQTTProtocolVersion.MQTTv311,
        )
        s = settings
        if s.username is not None:
            self._client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            self._client.tls_set_context(s.ssl_context())
        if publish_state:
            offline = state_payload(online=False, timestamp=self._timestamp)
            self._client.will_set(self._state_topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("sparkplug host connection refused: %s", reason)
            return
        if self._publish_state:
            # On every (re)connection: the retained message may have been replaced by our Will meanwhile.
            client.publish(self._state_topic, state_payload(online=True, timestamp=self._timestamp), 1, True)
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._connected.clear()

    async def __aenter__(self) -> HostClient:
        s = self._settings
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self._client.connect(s.host, s.port, keepalive=s.keepalive_s)
            )
        except Exception as exc:  # socket, DNS, TLS and paho's own errors alike
            raise BrokerError(f"sparkplug host: cannot connect to the broker at {s.host}:{s.port}: {exc!r}") from exc
        self._client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, s.connect_timeout_s):
            self._client.loop_stop()
            raise BrokerError(f"sparkplug host: no CONNACK from {s.host}:{s.port} within {s.connect_timeout_s} s")
        log.info(
            "sparkplug host %s connected%s",
            self._state_topic.rsplit("/", 1)[-1],
            f"; STATE online on {self._state_topic}" if self._publish_state else "",
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._publish_state and self._client.is_connected():
            # A clean stop says offline itself (the broker sends no Will after a DISCONNECT).
            info = self._client.publish(
                self._state_topic, state_payload(online=False, timestamp=self._timestamp), 1, True
            )
            await asyncio.to_thread(info.wait_for_publish, self._settings.connect_timeout_s)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def request_rebirth(self, group: str, edge: str) -> None:
        """Ask an edge node to publish its NBIRTH and DBIRTHs again (thread-safe; dropped while disconnected, and
        asked again on the next cause)."""
        topic = f"{NAMESPACE}/{group}/{MessageType.NCMD}/{edge}"
        self._client.publish(topic, rebirth_command(int(time.time() * 1000)), qos=0)
