"""Publishing a simulated fleet over MQTT through its gateways, in real time or faster, with its ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import aiomqtt

from simulators._backlog import BacklogStats, PublishBacklog
from simulators._clock import plan_live
from simulators._fleet import Fleet, Frame
from simulators._gateway import GatewayStats, make_gateways
from simulators._scenario import FleetSpec, Scenario
from simulators._sparkplug import SparkplugEdge
from simulators._truth import TruthSink
from wearline.errors import WearlineError
from wearline.settings import MqttSettings
from wearline.topics import telemetry_topic
from wearline.wire import Sample, encode_message

__all__ = ["PublishError", "PublishSummary", "frame_samples", "publish_fleet"]

log = logging.getLogger(__name__)


class PublishError(WearlineError):
    """The simulator could not reach the MQTT broker, or lost it while publishing."""


@dataclass
class PublishSummary:
    """What a live run sent; ``gateways`` counts batching, outages, replays, losses and duplicates."""

    messages: int = 0
    samples: int = 0
    steps: int = 0
    first_ts_ms: int = 0
    last_ts_ms: int = 0
    gateways: GatewayStats = field(default_factory=GatewayStats)
    backlog: BacklogStats = field(default_factory=BacklogStats)
    """Episodes of back-pressure from the broker (see :class:`PublishBacklog`)."""


def frame_samples(frame: Frame, ts_ms: int) -> list[tuple[int, Sample]]:
    """Each machine's sample in a frame; a sensor in dropout is sent as null."""
    names = frame.mtype.sensor_names
    out = []
    for machine, row in zip(frame.machines.tolist(), frame.values.round(4).tolist(), strict=True):
        values = {n: (None if math.isnan(v) else v) for n, v in zip(names, row, strict=True)}
        out.append((machine, Sample(ts_ms, values)))
    return out


def _unreachable(mqtt: MqttSettings, why: str) -> PublishError:
    return PublishError(
        f"the MQTT broker at {mqtt.host}:{mqtt.port} is unreachable: {why} "
        "(start it, or set WEARLINE_MQTT__HOST / WEARLINE_MQTT__PORT)"
    )


async def _connect(stack: contextlib.AsyncExitStack, mqtt: MqttSettings, identifier: str) -> aiomqtt.Client:
    """A connected client, or :class:`PublishError` within ``mqtt.connect_timeout_s``."""
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=identifier,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        tls_context=mqtt.ssl_context(),
        # Also bounds the wait for a PUBACK: a broker silent that long is gone, and the run says so.
        timeout=mqtt.connect_timeout_s,
    )
    # Waiting messages are counted and logged per episode by PublishBacklog; aiomqtt would warn once per publish.
    client.pending_calls_threshold = sys.maxsize
    try:
        async with asyncio.timeout(mqtt.connect_timeout_s):
            # paho connects in a worker thread that a timeout cannot stop (it gives up after its own 5 s): a
            # non-blocking TCP connection first lets an unreachable broker fail within the connect timeout.
            _, writer = await asyncio.open_connection(mqtt.host, mqtt.port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return await stack.enter_async_context(client)
    except TimeoutError as exc:
        raise _unreachable(mqtt, f"no answer within {mqtt.connect_timeout_s:g} s") from exc
    except aiomqtt.MqttError as exc:
        raise _unreachable(mqtt, str(exc)) from exc
    except ConnectionRefusedError as exc:
        raise _unreachable(mqtt, "connection refused") from exc
    except OSError as exc:
        raise _unreachable(mqtt, exc.strerror or str(exc)) from exc


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
    backlog_threshold: int | None = None,
    sparkplug_group: str | None = None,
) -> PublishSummary:
    """Publish every machine's samples every ``scenario.sample_period_s`` simulated seconds, through its gateway.

    The simulated clock starts at ``start_ms`` (default: :func:`plan_live`'s start, in the past far enough that
    it reaches now as the accelerated stretch ends) and runs ``time_scale`` times faster than the wall clock, but
    never ahead of it: a step is published no earlier than the wall clock reaches its timestamp (plus the
    gateways' largest clock skew), so a run that catches up with now goes on at real time. ``steps`` bounds the
    run (default: until ``stop``). ``truth`` receives the ground truth of every step. More than
    ``backlog_threshold`` messages waiting for the broker (default: four per machine, at least 100) is logged as
    back-pressure, once per episode. With ``sparkplug_group`` every gateway is a Sparkplug B edge node of that group
    (``simulators/_sparkplug.py``) instead of publishing JSON. Raises :class:`PublishError` when the broker is out of
    reach or lost.
    """
    if isinstance(scenario, FleetSpec):
        scenario = scenario.scenario()
    if start_ms is None:
        start_ms = plan_live(scenario, time_scale=time_scale, steps=steps).start_ms
    fleet = Fleet(scenario, seed=seed, start_ms=start_ms)
    gateways, owner = make_gateways(len(fleet.paths), scenario.gateways, fleet.seed)
    backlog = PublishBacklog(backlog_threshold or max(100, 4 * len(fleet.paths)))
    summary = PublishSummary(
        first_ts_ms=start_ms, gateways=gateways[0].stats if gateways else GatewayStats(), backlog=backlog.stats
    )
    topics = [telemetry_topic(topic_prefix, p) for p in fleet.paths]
    edges = None
    if sparkplug_group is not None:
        edges = [
            SparkplugEdge(
                sparkplug_group,
                gw.name,
                {m: (fleet.paths[m].machine, fleet.types[m].sensor_names) for m in gw.machines},
            )
            for gw in gateways
        ]
    types = [t.name for t in fleet.types]
    period = scenario.sample_period_s / time_scale
    dt = scenario.sample_period_s
    # A gateway whose clock runs ahead stamps its samples ahead: wait for the wall clock to pass that too.
    ahead_ms = max(0, *(gw.skew_ms for gw in gateways))

    async with contextlib.AsyncExitStack() as stack:
        client = await _connect(stack, mqtt, client_id or f"{mqtt.client_id}-sim")

        async def publish(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=qos)
            finally:
                backlog.done()

        async def send_raw(messages: list[tuple[str, bytes]]) -> None:
            backlog.queued(len(messages))
            await asyncio.gather(*(publish(topic, payload) for topic, payload in messages))
            summary.messages += len(messages)

        async def send(messages: list[tuple[int, list[Sample]]]) -> None:
            if edges is not None:
                summary.samples += sum(len(s) for _, s in messages)
                return
            backlog.queued(len(messages))
            await asyncio.gather(*(publish(topics[m], encode_message(s, types[m])) for m, s in messages))
            summary.messages += len(messages)
            summary.samples += sum(len(s) for _, s in messages)

        t0 = time.monotonic()
        step = 0
        try:
            while not stop.is_set() and (steps is None or step < steps):
                elapsed = step * dt
                ts_ms = start_ms + round(elapsed * 1000)
                # Due at t0 + elapsed / time_scale, and never before the wall clock shows ts_ms (plus skew).
                delay = max(t0 + step * period - time.monotonic(), (ts_ms + ahead_ms) / 1000 - time.time())
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                frames = fleet.step(elapsed)
                for frame in frames:
                    for machine, sample in frame_samples(frame, ts_ms):
                        gateways[owner[machine]].offer(machine, sample)
                if truth is not None:
                    await truth.add(fleet, frames, ts_ms)
                for g, gw in enumerate(gateways):
                    was_out = gw.outage_until > -math.inf
                    messages = gw.drain(elapsed, dt)
                    if edges is not None:
                        if not was_out and gw.outage_until > -math.inf:
                            await send_raw(edges[g].death())
                        # Drained as the uplink returns: the store-and-forward replay, sent as historical metrics.
                        await send_raw(edges[g].encode(messages, historical=was_out))
                    if messages:
                        await send(messages)
                summary.last_ts_ms = ts_ms
                step += 1
            for g, gw in enumerate(gateways):
                flushed = gw.flush()
                if edges is not None:
                    await send_raw(edges[g].encode(flushed))
                await send(flushed)
        except aiomqtt.MqttError as exc:
            raise PublishError(
                f"lost the MQTT broker at {mqtt.host}:{mqtt.port} after {summary.messages} messages: {exc}"
            ) from exc
        finally:
            backlog.close()
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
