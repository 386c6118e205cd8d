"""A Sparkplug B edge node for tests (births, data by alias, deaths; each message's seq as told) and an ingest
running as a host application in the test's event loop. Real broker and database throughout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import unique
from tests.ingest._support import connect_db
from wearline.settings import Settings
from wearline.sparkplug import BDSEQ_METRIC, NAMESPACE, DataType, Metric, decode_payload, encode_payload


class EdgeNode:
    """One edge node's MQTT connection: publishes what a test tells it and records the commands it receives."""

    def __init__(self, host: str, port: int, group: str, edge: str) -> None:
        self.group = group
        self.edge = edge
        self.commands: list[tuple[str, list[Metric]]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("wlt-edge-"), protocol=MQTTProtocolVersion.MQTTv5
        )
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(host, port)
        self._client.loop_start()
        result, _ = self._client.subscribe(f"{NAMESPACE}/{group}/NCMD/{edge}", qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        assert subscribed.wait(10), "no SUBACK for the edge node's commands"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.commands.append((msg.topic, decode_payload(bytes(msg.payload)).metrics))

    def rebirth_requests(self) -> int:
        with self._lock:
            return sum(any(m.name == "Node Control/Rebirth" and m.value is True for m in ms) for _, ms in self.commands)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def send(self, kind: str, metrics: Sequence[Metric], *, seq: int | None, device: str | None = None) -> None:
        """Publish at QoS 1 and wait for the PUBACK."""
        topic = f"{NAMESPACE}/{self.group}/{kind}/{self.edge}" + (f"/{device}" if device else "")
        self.send_raw(topic, encode_payload(timestamp=int(time.time() * 1000), seq=seq, metrics=metrics))

    def send_raw(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def nbirth(self, bdseq: int, metrics: Sequence[Metric] = (), seq: int = 0) -> None:
        self.send("NBIRTH", [Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=bdseq), *metrics], seq=seq)

    def ndeath(self, bdseq: int) -> None:
        self.send("NDEATH", [Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=bdseq)], seq=None)


def double(name: str, alias: int, value: float, **kw: object) -> Metric:
    return Metric(name=name, alias=alias, datatype=DataType.DOUBLE, value=value, **kw)  # type: ignore[arg-type]


def by_alias(alias: int, value: float, **kw: object) -> Metric:
    """A data metric as edge nodes send it after their birth: alias and value, no name, no datatype."""
    return Metric(alias=alias, value=value, datatype=None, **kw)  # type: ignore[arg-type]


def query(schema: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with connect_db(schema) as conn:
        return conn.execute(sql, args).fetchall()


async def wait_until(check: object, timeout_s: float = 20.0) -> None:
    """Poll ``check`` (a callable returning truthy) in a thread until it holds or the time runs out."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def host(settings: Settings) -> AsyncIterator[CollectorRegistry]:
    """Ingest as a Sparkplug host application, subscribed when this enters, stopped (and its batch committed)
    when it leaves."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    task = asyncio.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
    try:
        async with asyncio.timeout(30):
            done, _ = await asyncio.wait(
                [task, asyncio.create_task(subscribed.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                task.result()
        yield registry
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task
