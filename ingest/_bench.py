"""``wearline bench ingest``: N ingest worker processes, a publisher process, our own Mosquitto and schema.

Every figure comes from the processes themselves: workers report readings committed and the publish-to-commit
latency of each sample (commit time minus the sample's own timestamp), their CPU time and peak RSS; the publisher
reports what it offered. Loss is what was published and acknowledged by the broker minus what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import random
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import orjson
import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from wearline.db import connection_kwargs, migrate
from wearline.settings import Settings

__all__ = ["BenchResult", "run_bench"]

log = logging.getLogger(__name__)

SHIPPED_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "wearline.conf"
_MAX_IN_FLIGHT = 2000  # publisher's own back-pressure: paho stalls at 65,535 unacknowledged QoS 1 publishes


@dataclass
class ProcessUse:
    cpu_s: float
    peak_rss_mb: float
    readings_per_batch: float = 0.0


@dataclass
class BenchResult:
    profile_readings_per_message: int
    workers: int
    protocol: str
    machines: int
    sensors: int
    duration_s: float
    offered_readings_per_s: float
    committed_readings_per_s: float
    published_readings: int
    committed_readings: int
    lost_readings: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    publisher: ProcessUse
    workers_use: list[ProcessUse] = field(default_factory=list)
    broker_cpu_s: float = 0.0


# --- broker ---------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def own_broker() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Mosquitto with the shipped configuration on a free port, its persistence in a temporary directory."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not SHIPPED_CONF.is_file():
        raise FileNotFoundError(f"the shipped Mosquitto configuration is not at {SHIPPED_CONF} (run from a checkout)")
    with tempfile.TemporaryDirectory(prefix="wearline-bench-mosquitto-") as work:
        # Mosquitto started as root drops to the mosquitto user, which must be able to write here.
        os.chmod(work, 0o777)  # noqa: S103
        port = _free_port()
        lines = []
        for line in SHIPPED_CONF.read_text().splitlines():
            if line.startswith("listener "):
                lines.append(f"listener {port} 127.0.0.1")
            elif line.startswith("persistence_location "):
                lines.append(f"persistence_location {work}/")
            else:
                lines.append(line)
        conf = Path(work) / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(  # noqa: S603 (our own broker binary and config)
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the benchmark's own mosquitto did not start") from None
                    time.sleep(0.05)
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(10)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_use() -> ProcessUse:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessUse(ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


# --- worker process -------------------------------------------------------------------------------------------
def _worker(
    *,
    settings: Settings,
    client_id: str,
    ready: MpEvent,
    measuring: MpEvent,
    stop: MpEvent,
    committed: Any,
    out: Any,
    keep: int,
    cprofile_to: str | None,
) -> None:
    from ingest._service import run_ingest  # noqa: PLC0415 (the child imports what it runs)

    latencies: list[float] = []
    seen = 0
    batches = 0
    batched = 0
    rng = random.Random(client_id)

    def on_commit(readings: int, stamps: list[int]) -> None:
        nonlocal seen
        now_ms = time.time() * 1000
        with committed.get_lock():
            committed.value += readings
        if not measuring.is_set():  # the warm-up round registers the fleet; its latency is not ingest's steady state
            return
        nonlocal batches, batched
        batches += 1
        batched += readings
        # Reservoir sample of per-sample latency: bounded memory whatever the run's length.
        for ms in stamps:
            seen += 1
            if len(latencies) < keep:
                latencies.append(now_ms - ms)
            else:
                j = rng.randrange(seen)
                if j < keep:
                    latencies[j] = now_ms - ms

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
        subscribed = asyncio.Event()

        async def tell_ready() -> None:
            await subscribed.wait()
            ready.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(tell_ready())
            tg.create_task(
                run_ingest(
                    settings,
                    done,
                    registry=CollectorRegistry(),
                    client_id=client_id,
                    subscribed=subscribed,
                    on_commit=on_commit,
                )
            )

    if cprofile_to is None:
        asyncio.run(main())
    else:
        import cProfile  # noqa: PLC0415

        with cProfile.Profile() as prof:
            asyncio.run(main())
        prof.dump_stats(f"{cprofile_to}/{client_id}.pstats")
    use = _own_use()
    use.readings_per_batch = round(batched / batches, 1) if batches else 0.0
    out.put((client_id, latencies, asdict(use)))


# --- publisher process ----------------------------------------------------------------------------------------
def _publisher(
    *,
    port: int,
    prefix: str,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    go: MpEvent,
    out: Any,
) -> None:
    import paho.mqtt.client as paho  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415

    lock = threading.Condition()
    in_flight = 0

    def on_publish(*_: object) -> None:
        nonlocal in_flight
        with lock:
            in_flight -= 1
            if in_flight <= _MAX_IN_FLIGHT // 2:
                lock.notify()

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"wlbench-pub-{uuid.uuid4().hex[:8]}",
        # Gateways' protocol is not what is measured; over 3.1.1 this publisher stalled now and then mid-burst.
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(_MAX_IN_FLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    # paho loses track of QoS 1 publishes made before CONNACK over MQTT 3.1.1 (seen here: the run stalled).
    if not connected.wait(30):
        raise RuntimeError("the publisher could not connect to the benchmark's broker")
    topics = [f"{prefix}/bench/site/line{i // 100}/m{i:05d}/telemetry" for i in range(machines)]
    names = [f"s{j}" for j in range(sensors)]
    last = [0] * machines
    rng = random.Random(1)
    # Warm-up: one sample per machine, so that registering the fleet is not part of the measurement.
    names_vals = dict.fromkeys(names, 0.0)
    for i in range(machines):
        last[i] = int(time.time() * 1000)
        with lock:
            in_flight += 1
        client.publish(topics[i], orjson.dumps({"v": 1, "ts": last[i], "values": names_vals}), qos=1)
    out.put(("warm", machines))
    go.wait()
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < duration_s:
        if rate and sent > rate * elapsed:
            time.sleep(min(0.01, sent / rate - elapsed))
            continue
        i = sent % machines
        now_ms = int(time.time() * 1000)
        base = max(now_ms - samples_per_message + 1, last[i] + 1)
        last[i] = base + samples_per_message - 1
        vals = [round(rng.random() * 100, 3) for _ in range(sensors)]
        body = {
            "v": 1,
            "samples": [
                {"ts": base + k, "values": dict(zip(names, vals, strict=True))} for k in range(samples_per_message)
            ],
        }
        with lock:
            while in_flight >= _MAX_IN_FLIGHT:
                lock.wait(1)
            in_flight += 1
        client.publish(topics[i], orjson.dumps(body), qos=1)
        sent += 1
    publish_s = time.monotonic() - started
    with lock:
        while in_flight > 0:
            lock.wait(1)
    client.disconnect()
    client.loop_stop()
    out.put(("publisher", sent, publish_s, asdict(_own_use())))


# --- the run --------------------------------------------------------------------------------------------------
def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_bench(
    settings: Settings,
    *,
    workers: int,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    drain_timeout_s: float = 120.0,
    cprofile_to: Path | None = None,
) -> BenchResult:
    """One profile: start broker, schema and workers, publish for ``duration_s``, wait for the commits, measure.

    ``rate`` is messages per second offered (0: as fast as the publisher and the broker's acknowledgements allow).
    ``cprofile_to``: a directory where each worker writes its cProfile statistics (slows the workers down).
    """
    ctx = mp.get_context("spawn")
    schema = f"wlbench_{uuid.uuid4().hex[:8]}"
    prefix = f"wlbench/{uuid.uuid4().hex[:6]}"
    with own_broker() as (port, broker):
        run_settings = settings.model_copy(
            update={
                "topic_prefix": prefix,
                "mqtt": settings.mqtt.model_copy(update={"host": "127.0.0.1", "port": port, "tls": False}),
                "database": settings.database.model_copy(update={"schema_name": schema}),
            }
        )
        asyncio.run(migrate(run_settings.database))
        stop = ctx.Event()
        go = ctx.Event()
        out = ctx.Queue()
        counters = [ctx.Value("q", 0) for _ in range(workers)]
        ready = [ctx.Event() for _ in range(workers)]
        measuring = ctx.Event()
        procs = [
            ctx.Process(
                target=_worker,
                kwargs={
                    "settings": run_settings,
                    "client_id": f"wlbench-{i}-{uuid.uuid4().hex[:6]}",
                    "ready": ready[i],
                    "measuring": measuring,
                    "stop": stop,
                    "committed": counters[i],
                    "out": out,
                    "keep": 200_000,
                    "cprofile_to": str(cprofile_to) if cprofile_to else None,
                },
                name=f"ingest-{i}",
            )
            for i in range(workers)
        ]
        pub = ctx.Process(
            target=_publisher,
            kwargs={
                "port": port,
                "prefix": prefix,
                "machines": machines,
                "sensors": sensors,
                "samples_per_message": samples_per_message,
                "duration_s": duration_s,
                "rate": rate,
                "go": go,
                "out": out,
            },
            name="publisher",
        )  # fmt: skip
        try:
            for p in procs:
                p.start()
            # The publisher starts only once every worker holds its subscription: the broker keeps nothing for a
            # subscription it has not seen yet, and messages published before it would be missing from the count.
            _wait_subscribed(ready, procs)
            pub.start()
            assert out.get(timeout=60) == ("warm", machines)
            # Wait for the warm-up (registering the fleet) to commit, but not forever; warm-up readings still count
            # towards loss.
            warm_expected = machines * sensors
            deadline = time.monotonic() + 20
            while sum(c.value for c in counters) < warm_expected and time.monotonic() < deadline:
                time.sleep(0.05)
            warm_committed = sum(c.value for c in counters)
            if warm_committed < warm_expected:
                log.warning(
                    "warm-up: %d of %d readings committed before the clock started", warm_committed, warm_expected
                )
            measuring.set()
            broker_cpu0 = _proc_cpu_s(broker.pid)
            t0 = time.monotonic()
            go.set()
            published_msgs, publish_s, pub_use = None, 0.0, ProcessUse(0, 0)
            results: list[tuple[str, list[float], dict[str, float]]] = []
            item = out.get(timeout=duration_s + 600)
            _, published_msgs, publish_s, pub_dict = item
            pub_use = ProcessUse(**pub_dict)
            expected = warm_expected + published_msgs * samples_per_message * sensors
            deadline = time.monotonic() + drain_timeout_s
            while sum(c.value for c in counters) < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            all_committed_s = time.monotonic() - t0
            broker_cpu = _proc_cpu_s(broker.pid) - broker_cpu0
            stop.set()
            for _ in procs:
                results.append(out.get(timeout=60))
            for p in [*procs, pub]:
                p.join(30)
        finally:
            stop.set()
            go.set()
            for p in [*procs, pub]:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            _drop_schema(settings, schema)
    committed = sum(c.value for c in counters)
    latencies = sorted(x for _, lat, _ in results for x in lat)
    offered = published_msgs * samples_per_message * sensors / publish_s if publish_s else 0.0
    return BenchResult(
        profile_readings_per_message=samples_per_message * sensors,
        workers=workers,
        protocol=settings.mqtt.protocol,
        machines=machines,
        sensors=sensors,
        duration_s=round(publish_s, 2),
        offered_readings_per_s=round(offered),
        committed_readings_per_s=round((committed - warm_committed) / all_committed_s),
        published_readings=expected,
        committed_readings=committed,
        lost_readings=expected - committed,
        latency_p50_ms=round(_percentile(latencies, 0.50), 1),
        latency_p95_ms=round(_percentile(latencies, 0.95), 1),
        latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        publisher=pub_use,
        workers_use=[ProcessUse(**use) for _, _, use in results],
        broker_cpu_s=round(broker_cpu, 2),
    )


def _wait_subscribed(ready: list[MpEvent], procs: list[Any]) -> None:
    # Publish only once every worker holds its subscription: the broker keeps nothing for one it has not seen.
    deadline = time.monotonic() + 60
    while not all(r.is_set() for r in ready):
        if any(not p.is_alive() for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("an ingest worker did not subscribe (see its log above)")
        time.sleep(0.05)


def _drop_schema(settings: Settings, schema: str) -> None:
    kwargs = connection_kwargs(settings.database)
    with psycopg.connect(settings.database.dsn, autocommit=True, connect_timeout=kwargs["connect_timeout"]) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
