"""Publishing a simulated fleet over MQTT through its gateways, in real time or faster, with its ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

import aiomqtt

from simulators._fleet import Fleet, Frame
from simulators._gateway import GatewayStats, make_gateways
from simulators._scenario import FleetSpec, Scenario
from simulators._truth import TruthSink
from wearline.settings import MqttSettings
from wearline.topics import telemetry_topic
from wearline.wire import Sample, encode_message

__all__ = ["PublishSummary", "frame_samples", "publish_fleet"]

log = logging.getLogger(__name__)


@dataclass
class PublishSummary:
    """What a live run sent; ``gateways`` counts batching, outages, replays, losses and duplicates."""

    messages: int = 0
    samples: int = 0
    steps: int = 0
    first_ts_ms: int = 0
    last_ts_ms: int = 0
    gateways: GatewayStats = field(default_factory=GatewayStats)


def frame_samples(frame: Frame, ts_ms: int) -> list[tuple[int, Sample]]:
    """Each machine's sample in a frame; a sensor in dropout is sent as null."""
    names = frame.mtype.sensor_names
    out = []
    for machine, row in zip(frame.machines.tolist(), frame.values.round(4).tolist(), strict=True):
        values = {n: (None if math.isnan(v) else v) for n, v in zip(names, row, strict=True)}
        out.append((machine, Sample(ts_ms, values)))
    return out


async def publish_fleet(
    mqtt: MqttSettings,
    topic_prefix: str,
    scenario: Scenario | FleetSpec,
    stop: asyncio.Event,
    *,
    steps: int | None = None,
    time_scale: float = 1.0,
    start_ms: int | None = None,
    qos: int = 1,
    client_id: str | None = None,
    seed: int | None = None,
    truth: TruthSink | None = None,
) -> PublishSummary:
    """Publish every machine's samples every ``scenario.sample_period_s`` simulated seconds, through its gateway.

    The simulated clock starts at ``start_ms`` (default: now) and runs ``time_scale`` times faster than the wall
    clock; ``steps`` bounds the run (default: until ``stop``). ``truth`` receives the ground truth of every step.
    """
    if isinstance(scenario, FleetSpec):
        scenario = scenario.scenario()
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    fleet = Fleet(scenario, seed=seed, start_ms=start_ms)
    gateways, owner = make_gateways(len(fleet.paths), scenario.gateways, fleet.seed)
    summary = PublishSummary(first_ts_ms=start_ms, gateways=gateways[0].stats if gateways else GatewayStats())
    topics = [telemetry_topic(topic_prefix, p) for p in fleet.paths]
    types = [t.name for t in fleet.types]
    period = scenario.sample_period_s / time_scale
    dt = scenario.sample_period_s
    async with aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=client_id or f"{mqtt.client_id}-sim",
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
    ) as client:
        # A step publishes up to one message per machine at once; that is by design, not a backlog worth a warning.
        client.pending_calls_threshold = max(10, 4 * len(fleet.paths))

        async def send(messages: list[tuple[int, list[Sample]]]) -> None:
            await asyncio.gather(
                *(client.publish(topics[m], encode_message(s, types[m]), qos=qos) for m, s in messages)
            )
            summary.messages += len(messages)
            summary.samples += sum(len(s) for _, s in messages)

        t0 = time.monotonic()
        step = 0
        while not stop.is_set() and (steps is None or step < steps):
            elapsed = step * dt
            ts_ms = start_ms + round(elapsed * 1000)
            frames = fleet.step(elapsed)
            for frame in frames:
                for machine, sample in frame_samples(frame, ts_ms):
                    gateways[owner[machine]].offer(machine, sample)
            if truth is not None:
                await truth.add(fleet, frames, ts_ms)
            for gw in gateways:
                messages = gw.drain(elapsed, dt)
                if messages:
                    await send(messages)
            summary.last_ts_ms = ts_ms
            step += 1
            delay = t0 + step * period - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        for gw in gateways:
            await send(gw.flush())
        summary.steps = step
    if truth is not None:
        await truth.events(fleet)
    log.info(
        "published %d messages (%d samples) for %d machines over %d steps",
        summary.messages,
        summary.samples,
        len(fleet.paths),
        summary.steps,
    )
    return summary
