"""Publishing a simulated fleet over MQTT, in real time or faster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiomqtt

from simulators._fleet import FleetSpec, PumpFleet
from wearline.settings import MqttSettings
from wearline.topics import telemetry_topic
from wearline.wire import encode_message

__all__ = ["PublishSummary", "publish_fleet"]

log = logging.getLogger(__name__)


@dataclass
class PublishSummary:
    messages: int = 0
    samples: int = 0
    first_ts_ms: int = 0
    last_ts_ms: int = 0


async def publish_fleet(
    mqtt: MqttSettings,
    topic_prefix: str,
    spec: FleetSpec,
    stop: asyncio.Event,
    *,
    steps: int | None = None,
    time_scale: float = 1.0,
    start_ms: int | None = None,
    qos: int = 1,
    client_id: str | None = None,
) -> PublishSummary:
    """Publish one sample per machine every ``spec.sample_period_s`` simulated seconds.

    The simulated clock starts at ``start_ms`` (default: now) and runs ``time_scale`` times faster than the wall
    clock; ``steps`` bounds the run (default: until ``stop``).
    """
    fleet = PumpFleet(spec)
    summary = PublishSummary()
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    summary.first_ts_ms = start_ms
    period = spec.sample_period_s / time_scale
    async with aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=client_id or f"{mqtt.client_id}-sim",
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
    ) as client:
        t0 = time.monotonic()
        step = 0
        while not stop.is_set() and (steps is None or step < steps):
            elapsed = step * spec.sample_period_s
            ts_ms = start_ms + round(elapsed * 1000)
            publishes = [
                client.publish(
                    telemetry_topic(topic_prefix, path),
                    encode_message([sample], fleet.machine_type),
                    qos=qos,
                )
                for path, sample in fleet.step(elapsed, ts_ms)
            ]
            await asyncio.gather(*publishes)
            summary.messages += len(publishes)
            summary.samples += len(publishes)
            summary.last_ts_ms = ts_ms
            step += 1
            delay = t0 + step * period - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    log.info("published %d messages for %d machines", summary.messages, spec.machines)
    return summary
