"""Load mode: one process drives a large fleet at QoS 0 as fast as it can, and measures what it reaches.

Raw speed matters more here than asyncio's comforts, so it publishes with paho-mqtt's threaded loop directly.
The physics is the same vectorised engine as every other mode; the run is short and on its own topic prefix.
"""

from __future__ import annotations

import collections
import json
import math
import resource
import threading
import time
from dataclasses import asdict, dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from simulators._fleet import Fleet
from simulators._scenario import MachineGroup, Scenario
from wearline.errors import WearlineError
from wearline.settings import MqttSettings
from wearline.topics import telemetry_topic
from wearline.wire import Sample, encode_message

__all__ = ["LoadResult", "run_load"]

_MAX_QUEUED = 20_000  # messages handed to paho and not yet written to the socket


class LoadError(WearlineError, RuntimeError):
    """The broker could not be reached or refused the load run."""


@dataclass(frozen=True)
class LoadResult:
    """Figures of one load run."""

    machines: int
    seconds: float
    messages: int
    samples: int
    bytes: int
    messages_per_s: float
    simulate_s: float
    encode_publish_s: float
    cpu_s: float
    max_rss_mb: float
    topic_prefix: str
    qos: int
    batch_samples: int

    def text(self) -> str:
        return (
            f"load: {self.machines} machines, {self.messages} messages ({self.samples} samples, "
            f"{self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s = {self.messages_per_s:,.0f} messages/s at QoS "
            f"{self.qos}; simulate {self.simulate_s:.1f} s, encode+publish {self.encode_publish_s:.1f} s, "
            f"cpu {self.cpu_s:.1f} s, max RSS {self.max_rss_mb:.0f} MB"
        )

    def json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _scaled(scenario: Scenario, machines: int) -> Scenario:
    total = max(scenario.machines, 1)
    counts = [g.count * machines // total for g in scenario.groups]
    counts[0] += machines - sum(counts)
    groups = tuple(
        MachineGroup(g.type, c, g.line, g.name, g.conditions, g.schedule, g.life_scale, g.initial_age)
        for g, c in zip(scenario.groups, counts, strict=True)
    )
    return scenario.replace(groups=groups, faults=())


def run_load(
    mqtt: MqttSettings,
    topic_prefix: str,
    scenario: Scenario,
    *,
    machines: int = 10_000,
    duration_s: float = 20.0,
    seed: int = 42,
    batch_samples: int = 1,
    qos: int = 0,
) -> LoadResult:
    """Publish ``machines`` machines' samples back to back for ``duration_s`` seconds and measure the rate.

    Each simulated step samples every machine once; messages carry ``batch_samples`` consecutive steps of one
    machine. The clock stops when the last message has left the client.
    """
    sc = _scaled(scenario, machines)
    fleet = Fleet(sc, seed=seed, start_ms=int(time.time() * 1000))
    topics = [telemetry_topic(topic_prefix, p) for p in fleet.paths]
    types = [t.name for t in fleet.types]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{mqtt.client_id}-load", protocol=paho.MQTTv311)
    if mqtt.username:
        client.username_pw_set(mqtt.username, mqtt.password.get_secret_value() if mqtt.password else None)
    if mqtt.tls:
        client.tls_set_context(mqtt.ssl_context())
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=60)
    except OSError as exc:
        raise LoadError(f"cannot connect to mqtt://{mqtt.host}:{mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(10):
            raise LoadError(f"no CONNACK from mqtt://{mqtt.host}:{mqtt.port} within 10 s")
        messages = samples = size = 0
        sim_s = pub_s = 0.0
        cpu0 = time.process_time()
        start = time.monotonic()
        step = 0
        info = None
        queued: collections.deque[paho.MQTTMessageInfo] = collections.deque()
        pending: list[list[Sample]] = [[] for _ in fleet.paths]
        while time.monotonic() - start < duration_s:
            t0 = time.monotonic()
            elapsed = step * sc.sample_period_s
            ts_ms = fleet.start_ms + round(elapsed * 1000)
            frames = fleet.step(elapsed)
            t1 = time.monotonic()
            for fr in frames:
                names = fr.mtype.sensor_names
                rows: list[list[float]] = fr.values.round(3).tolist()
                for m, row in zip(fr.machines.tolist(), rows, strict=True):
                    values = {n: (None if math.isnan(v) else v) for n, v in zip(names, row, strict=True)}
                    pending[m].append(Sample(ts_ms, values))
                    if len(pending[m]) >= batch_samples:
                        payload = encode_message(pending[m], types[m])
                        info = client.publish(topics[m], payload, qos=qos)
                        # paho queues without bound at QoS 0: wait for old messages to reach the socket, so the
                        # rate is what the broker is sent and memory stays flat.
                        queued.append(info)
                        if len(queued) > _MAX_QUEUED:
                            queued.popleft().wait_for_publish(30)
                        messages += 1
                        samples += len(pending[m])
                        size += len(payload)
                        pending[m] = []
            sim_s += t1 - t0
            pub_s += time.monotonic() - t1
            step += 1
        if info is not None:
            info.wait_for_publish(30)
        seconds = time.monotonic() - start
        cpu = time.process_time() - cpu0
    finally:
        client.loop_stop()
        client.disconnect()
    return LoadResult(
        machines=len(fleet.paths),
        seconds=round(seconds, 3),
        messages=messages,
        samples=samples,
        bytes=size,
        messages_per_s=round(messages / seconds, 1),
        simulate_s=round(sim_s, 3),
        encode_publish_s=round(pub_s, 3),
        cpu_s=round(cpu, 3),
        max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        topic_prefix=topic_prefix,
        qos=qos,
        batch_samples=batch_samples,
    )
