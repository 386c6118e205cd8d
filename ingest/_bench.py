"""``wearline bench ingest``: N ingest worker processes, a publisher process, our own Mosquitto and schema.

Every figure comes from the processes themselves: workers report readings committed and the publish-to-commit
latency of each sample (commit time minus the sample's own timestamp), their CPU time and peak RSS; the publisher
reports what it offered. Loss is what was published and acknowledged by the broker minus what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import queue
import random
import resource
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import orjson
import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from ingest._bench_cpu import BackendCpu, proc_cpu_s
from ingest._bench_peer import BenchExternal, PeerCount, check_bench_external
from wearline.db import connection_kwargs, migrate
from wearline.errors import WearlineError
from wearline.mosquitto import LocalBroker
from wearline.progress import Bar, progress
from wearline.settings import Settings

__all__ = ["BenchOptionError", "BenchResult", "run_bench"]

log = logging.getLogger(__name__)

_MAX_IN_FLIGHT = 2000  # publisher's own back-pressure: at most this many QoS 1 publishes unacknowledged
_BATCH = 200  # publishes per socket write


class BenchOptionError(WearlineError):
    """A benchmark option that cannot describe a run (no machines, no readings, an endless duration)."""


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
    payload: str = "json"
    """``json`` (the wire contract) or ``sparkplug`` (Sparkplug B, ingest as a host application)."""
    messages: int = 0
    """Messages published in the measured window (after the warm-up)."""
    cpu_window_s: float = 0.0
    """From the first measured publish until everything was committed (or the drain timed out)."""
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    """CPU seconds over the window: ``ingest`` (all workers), ``peer`` (another service's processes),
    ``broker``, ``database`` (see ``database_cpu``) and ``publisher``; None where not measured."""
    cpu_us_per_message: dict[str, float | None] = field(default_factory=dict)
    cpu_us_per_reading: dict[str, float | None] = field(default_factory=dict)
    database_cpu: str = ""
    """What ``cpu_s["database"]`` covers, or why it is None."""
    broker: str = "own"
    """``own`` (our Mosquitto, shipped configuration) or the external broker's HOST:PORT."""
    committed_by: str = "wearline"
    """``wearline`` (the workers' own count) or ``peer`` (the --count-sql query on another service's table)."""
    backlog_messages: int = 0
    """A drain (``--backlog``): messages queued while the workers were down. The committed rate and the CPU
    window then run from the restarted workers' start to the last commit; ``duration_s`` and the offered rate are
    the queueing's; latency is not measured (a backlog's readings wait by design)."""
    first_commit_s: float | None = None
    """A drain: seconds from starting the new workers to their first commit (process start, connections, session
    resumption), to within 0.05 s."""


# --- broker ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def own_broker() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Mosquitto with the shipped configuration on a free port, its persistence in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="wearline-bench-mosquitto-") as work:
        broker = LocalBroker(Path(work))
        broker.start()
        try:
            assert broker.proc is not None
            yield broker.port, broker.proc
        finally:
            broker.stop()


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
    from ingest._service import freeze_start_up, run_ingest  # noqa: PLC0415 (the child imports what it runs)

    freeze_start_up()  # as `wearline ingest` does

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
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


# Sizes of the fixed-size MQTT 5 properties a CONNACK may carry; the rest are strings or binary (2-byte length).
_PROPERTY_SIZES = {0x11: 4, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}


def _properties(data: bytes) -> dict[int, bytes]:
    """Parse an MQTT 5 property block (varint length, then identifier/value pairs); user properties are skipped."""
    length, mult, i = 0, 1, 0
    while True:
        b = data[i]
        length += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            break
    end = i + length
    found: dict[int, bytes] = {}
    while i < end:
        ident = data[i]
        i += 1
        if ident in _PROPERTY_SIZES:
            size = _PROPERTY_SIZES[ident]
        elif ident == 0x26:  # user property: a string pair
            i += 2 + int.from_bytes(data[i : i + 2], "big")
            size = 2 + int.from_bytes(data[i : i + 2], "big")
        else:
            size = 2 + int.from_bytes(data[i : i + 2], "big")
        found[ident] = data[i : i + size]
        i += size
    return found


class _RawPublisher:
    """A minimal MQTT 5 QoS 1 publisher on a blocking socket: the benchmark's load generator, nothing more.

    paho spends about 100 us of Python per QoS 1 publish; a 10-reading profile needs 15,000+ messages/s, which a
    single paho publisher cannot offer on the benchmark's two cores. Here a whole batch of PUBLISH packets goes out
    in one ``sendall`` and PUBACKs are counted in bulk, never more than ``window`` of them outstanding.
    """

    def __init__(self, port: int, client_id: str, window: int, *, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # Protocol name, level 5, clean start, keepalive 0 (no PINGREQ needed), no properties; client id.
        body = b"\x00\x04MQTT\x05\x02\x00\x00\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        self.buf = b""
        self.in_flight = 0
        self.next_id = 1
        self.window = window
        ptype, packet = self._read_packet(block=True)
        if ptype != 2 or len(packet) < 2 or packet[1] != 0:
            raise RuntimeError(f"the benchmark's broker refused the publisher (packet type {ptype}: {packet!r})")
        # Honour the broker's Receive Maximum (property 0x21) if it announces one below our own window.
        props = _properties(packet[2:])
        if 0x21 in props:
            self.window = min(self.window, int.from_bytes(props[0x21], "big"))
        self.sock.settimeout(None)

    def _read_packet(self, *, block: bool) -> tuple[int, bytes]:
        """One whole control packet (type, variable header + payload); (-1, b"") when none is complete."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if not block:
                return -1, b""
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the benchmark's broker closed the publisher's connection")
            self.buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + n:
            return None
        self.buf = buf[i + n :]
        return buf[0] >> 4, buf[i : i + n]

    def _take_acks(self, *, block: bool) -> None:
        """Count every complete PUBACK received; block for at least one when ``block``."""
        if not block:
            try:
                chunk = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not chunk:
                raise ConnectionError("the benchmark's broker closed the publisher's connection")
            self.buf += chunk
        while True:
            ptype, packet = self._read_packet(block=block)
            if ptype == -1:
                return
            if ptype != 4:
                raise RuntimeError(f"unexpected packet type {ptype} from the broker: {packet[:64]!r}")
            # Reason code absent (remaining length 2) means success; 0x10 "no matching subscribers" is fine too.
            if len(packet) > 2 and packet[2] not in (0x00, 0x10):
                raise RuntimeError(f"the broker refused a publish: reason code {packet[2]:#x}")
            self.in_flight -= 1
            block = False

    def wait_acks(self) -> None:
        """Block until at least one acknowledgement arrives."""
        self._take_acks(block=True)

    def room(self) -> int:
        """How many more publishes the window allows now; waits for acknowledgements when it is full."""
        self._take_acks(block=False)
        while self.in_flight >= self.window:
            self._take_acks(block=True)
        return self.window - self.in_flight

    def send(self, packets: list[tuple[bytes, bytes]]) -> None:
        """Publish (topic field, payload) pairs at QoS 1 in one write; the caller keeps within ``room()``."""
        parts = []
        pid = self.next_id
        for topic_field, payload in packets:
            parts.append(b"\x32")
            parts.append(_varint(len(topic_field) + 3 + len(payload)))
            parts.append(topic_field)
            parts.append(pid.to_bytes(2, "big"))
            parts.append(b"\x00")  # no properties
            parts.append(payload)
            pid = pid + 1 if pid < 65535 else 1
        self.next_id = pid
        self.in_flight += len(packets)
        self.sock.sendall(b"".join(parts))

    def drain(self) -> None:
        while self.in_flight > 0:
            self._take_acks(block=True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        self.sock.close()


def _publisher(
    *,
    host: str = "127.0.0.1",
    port: int,
    prefix: str,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    go: MpEvent,
    out: Any,
    count: int = 0,
) -> None:
    client = _RawPublisher(port, f"wlbench-pub-{uuid.uuid4().hex[:8]}", _MAX_IN_FLIGHT, host=host)
    topic_fields = []
    for i in range(machines):
        t = f"{prefix}/bench/site/line{i // 100}/m{i:05d}/telemetry".encode()
        topic_fields.append(len(t).to_bytes(2, "big") + t)
    names = [f"s{j}" for j in range(sensors)]
    last = [0] * machines
    rng = random.Random(1)
    # Warm-up: one sample per machine, so that registering the fleet is not part of the measurement.
    zeros = orjson.dumps(dict.fromkeys(names, 0.0))
    # A broker's Receive Maximum may be below a batch (Debian's Mosquitto announces 20): a batch never fits then.
    step = min(_BATCH, client.window)
    for start in range(0, machines, step):
        batch = []
        for i in range(start, min(machines, start + step)):
            last[i] = int(time.time() * 1000)
            batch.append((topic_fields[i], b'{"v":1,"ts":%d,"values":%s}' % (last[i], zeros)))
        while client.room() < len(batch):
            client.wait_acks()
        client.send(batch)
    out.put(("warm", machines))
    # Values come from a pool of pre-rendered objects: rendering JSON per message would make the publisher, not
    # ingest, the bottleneck. Ingest parses every value all the same.
    pool = [
        orjson.dumps(dict(zip(names, (round(rng.random() * 100, 3) for _ in names), strict=True))) for _ in range(1021)
    ]
    n_pool = len(pool)
    spm = samples_per_message
    k = 0

    def message(i: int, base: int, now_ms: int) -> tuple[bytes, bytes]:
        nonlocal k
        if spm == 1:
            payload = b'{"v":1,"samples":[{"ts":%d,"values":%s}]}' % (base, pool[k])
            k = k + 1 if k + 1 < n_pool else 0
        else:
            samples = []
            for s in range(spm):
                samples.append(b'{"ts":%d,"values":%s}' % (base + s, pool[k]))
                k = k + 1 if k + 1 < n_pool else 0
            payload = b'{"v":1,"samples":[' + b",".join(samples) + b"]}"
        return topic_fields[i], payload

    go.wait()
    publish_paced(client, out, message, last=last, spm=spm, duration_s=duration_s, rate=rate, count=count)


def publish_paced(
    client: _RawPublisher,
    out: Any,
    message: Callable[[int, int, int], tuple[bytes, bytes]],
    *,
    last: list[int],
    spm: int,
    duration_s: float,
    rate: float,
    count: int = 0,
) -> None:
    """The measured part of a publisher child: machine after machine, ``rate`` messages/s (0: as fast as the broker
    acknowledges) for ``duration_s``, or ``count`` messages whatever the time when ``count`` is set;
    ``message(i, first_ts, now_ms)`` renders machine ``i``'s message of ``spm`` samples from ``first_ts`` on (after
    its last one, and never ahead of the clock). Reports to ``out`` when the broker has acknowledged everything."""
    machines = len(last)
    started = time.monotonic()
    sent = 0
    while sent < count if count else time.monotonic() - started < duration_s:
        elapsed = time.monotonic() - started
        n = min(_BATCH, client.room(), count - sent if count else _BATCH)
        if rate:
            n = min(n, int(rate * elapsed) + 1 - sent)
            if n <= 0:
                time.sleep(min(0.01, (sent + 1) / rate - elapsed))
                continue
        now_ms = int(time.time() * 1000)
        batch = []
        for _ in range(n):
            i = sent % machines
            base = max(now_ms - spm + 1, last[i] + 1)
            last[i] = base + spm - 1
            batch.append(message(i, base, now_ms))
            sent += 1
        client.send(batch)
    if not count:
        publish_s = time.monotonic() - started
    client.drain()
    if count:  # a backlog is queued once the broker has acknowledged all of it
        publish_s = time.monotonic() - started
    client.close()
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
    sparkplug: bool = False,
    external: BenchExternal | None = None,
    backlog: int = 0,
) -> BenchResult:
    """One profile: start broker, schema and workers, publish for ``duration_s``, wait for the commits, measure.

    ``rate`` is messages per second offered (0: as fast as the publisher and the broker's acknowledgements allow).
    ``cprofile_to``: a directory where each worker writes its cProfile statistics (slows the workers down).
    ``sparkplug``: publish the fleet as Sparkplug B edge nodes instead of JSON (``ingest/_bench_sparkplug.py``).
    ``external``: publish to a broker we did not start and, with a count query, count another service's rows
    instead of running Wearline's workers (``ingest/_bench_peer.py``).
    ``backlog``: a drain instead: once the fleet is registered the workers are killed (kill -9), ``backlog``
    messages are queued for their sessions as fast as the broker takes them, and new workers with the same client
    ids are started and timed until the last reading is committed.
    Impossible options raise :class:`BenchOptionError` naming the command-line option, before anything starts.
    """
    ext = external or BenchExternal()
    _check_options(
        workers=workers,
        machines=machines,
        sensors=sensors,
        samples_per_message=samples_per_message,
        duration_s=duration_s,
        rate=rate,
        backlog=backlog,
    )
    try:
        check_bench_external(ext, sparkplug=sparkplug, cprofile=cprofile_to is not None, backlog=backlog)
    except WearlineError as exc:
        raise BenchOptionError(str(exc)) from exc
    if cprofile_to is not None:
        # Each worker writes its statistics there when it stops; a missing folder lost them after the whole run.
        try:
            cprofile_to.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchOptionError(f"--cprofile {cprofile_to}: cannot create the folder: {exc.strerror}") from exc
    with progress(f"profile {samples_per_message * sensors} readings/msg: starting") as bar:
        return _run(
            settings,
            workers=workers,
            machines=machines,
            sensors=sensors,
            samples_per_message=samples_per_message,
            duration_s=duration_s,
            rate=rate,
            drain_timeout_s=drain_timeout_s,
            cprofile_to=cprofile_to,
            bar=bar,
            sparkplug=sparkplug,
            ext=ext,
            backlog=backlog,
        )


def _check_options(
    *,
    workers: int,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    backlog: int = 0,
) -> None:
    # The command line bounds most of these already; a profile of 0 or fewer readings passes its multiple-of-sensors
    # check, and an infinite rate or duration passes a lower bound (before: a run of bad_schema dead letters
    # reported as negative throughput, or an OverflowError in the publisher).
    for option, value in (("--workers", workers), ("--machines", machines), ("--sensors", sensors)):
        if value < 1:
            raise BenchOptionError(f"{option} {value}: must be at least 1")
    if samples_per_message < 1:
        raise BenchOptionError(
            f"--profile {samples_per_message * sensors}: readings per message must be a positive multiple of "
            f"--sensors {sensors}"
        )
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise BenchOptionError(f"--duration {duration_s:g}: must be a finite number of seconds above 0")
    if not (math.isfinite(rate) and rate >= 0):
        raise BenchOptionError(f"--rate {rate:g}: must be a finite number of messages/s, or 0 for as fast as it can")
    if backlog < 0:
        raise BenchOptionError(f"--backlog {backlog}: must be a number of messages, or 0 for a paced run")


@contextlib.contextmanager
def _broker_for(ext: BenchExternal) -> Iterator[tuple[str, int, int | None]]:
    """(host, port, pid whose CPU is the broker's, if known): our own Mosquitto, or the external one."""
    if ext.broker is None:
        with own_broker() as (port, proc):
            yield "127.0.0.1", port, proc.pid
    else:
        yield ext.broker[0], ext.broker[1], ext.broker_pid


class _Cpu:
    """CPU seconds of named groups of processes between :meth:`start` and :meth:`stop` (``/proc``); None for a group
    with no process (not running, or a pid not given) or one whose process ended meanwhile."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = groups
        self._start: dict[int, float | None] = {}

    def start(self) -> None:
        self._start = {pid: proc_cpu_s(pid) for pids in self._groups.values() for pid in pids}

    def stop(self) -> dict[str, float | None]:
        used: dict[str, float | None] = {}
        for name, pids in self._groups.items():
            total = 0.0
            for pid in pids:
                before, after = self._start.get(pid), proc_cpu_s(pid)
                if before is None or after is None:
                    total = math.nan
                    break
                total += after - before
            used[name] = None if math.isnan(total) or not pids else round(total, 2)
        return used


def _run(
    settings: Settings,
    *,
    workers: int,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    drain_timeout_s: float,
    cprofile_to: Path | None,
    bar: Bar,
    sparkplug: bool = False,
    ext: BenchExternal,
    backlog: int = 0,
) -> BenchResult:
    profile = f"{'sparkplug ' if sparkplug else ''}profile {samples_per_message * sensors} readings/msg"
    ctx = mp.get_context("spawn")
    schema = f"wlbench_{uuid.uuid4().hex[:8]}"
    # Another service subscribes to a prefix it was configured with: the settings' own (WEARLINE_TOPIC_PREFIX).
    prefix = settings.topic_prefix if ext.broker is not None else f"wlbench/{uuid.uuid4().hex[:6]}"
    n_workers = 0 if ext.peer else workers
    with _broker_for(ext) as (host, port, broker_pid), contextlib.ExitStack() as stack:
        run_settings = settings.model_copy(
            update={
                "topic_prefix": prefix,
                "mqtt": settings.mqtt.model_copy(
                    update={"host": host, "port": port, "tls": settings.mqtt.tls if ext.broker else False}
                ),
                "database": settings.database.model_copy(update={"schema_name": schema}),
                # The workers split one shared subscription, the scheme these figures were measured with.
                "ingest": settings.ingest.model_copy(update={"subscription": "shared"}),
            }
        )
        if n_workers:
            asyncio.run(migrate(run_settings.database))
        peer_count = stack.enter_context(PeerCount(ext)) if ext.peer else None
        peer_base = peer_count.value() if peer_count is not None else 0
        stop = ctx.Event()
        go = ctx.Event()
        out = ctx.Queue()
        counters = [ctx.Value("q", 0) for _ in range(n_workers)]
        ready = [ctx.Event() for _ in range(n_workers)]
        measuring = ctx.Event()
        client_ids = [f"wlbench-{i}-{uuid.uuid4().hex[:6]}" for i in range(n_workers)]

        def worker_settings(i: int) -> Settings:
            if sparkplug:
                return _sparkplug_settings(run_settings, i, workers)
            if backlog:
                # Mosquitto queues nothing for a shared subscription's member while it is down: a drain needs the
                # partitioned scheme's plain persistent subscriptions (ingest.subscription's default).
                ing = run_settings.ingest.model_copy(
                    update={"subscription": "partitioned", "workers": workers, "worker": i}
                )
                return run_settings.model_copy(update={"ingest": ing})
            return run_settings

        def spawn_workers() -> list[Any]:
            # A drain's second generation takes over the first's client ids, and with them its sessions.
            return [
                ctx.Process(
                    target=_worker,
                    kwargs={
                        "settings": worker_settings(i),
                        "client_id": client_ids[i],
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
                for i in range(n_workers)
            ]

        procs = spawn_workers()
        publisher_kwargs: dict[str, object] = {"host": host} if not sparkplug else {}
        pub = ctx.Process(
            target=_sparkplug_publisher() if sparkplug else _publisher,
            kwargs={
                **publisher_kwargs,
                "port": port,
                "prefix": prefix,
                "machines": machines,
                "sensors": sensors,
                "samples_per_message": samples_per_message,
                "duration_s": duration_s,
                "rate": rate,
                "go": go,
                "out": out,
                "count": backlog,
            },
            name="publisher",
        )  # fmt: skip
        peer_seen, peer_at = [peer_base], [0.0]

        def committed() -> int:
            if peer_count is None:
                return sum(c.value for c in counters)
            # A count over another service's table is a query: at most every 0.5 s.
            if time.monotonic() - peer_at[0] >= 0.5:
                peer_seen[0] = peer_count.value()
                peer_at[0] = time.monotonic()
            return peer_seen[0] - peer_base

        try:
            for p in procs:
                p.start()
            # The publisher starts only once every worker holds its subscription: the broker keeps nothing for a
            # subscription it has not seen yet, and messages published before it would be missing from the count.
            _wait_subscribed(ready, procs)
            pub.start()
            bar.phase(f"{profile}: warm-up, registering {machines:,} machines")
            assert out.get(timeout=60) == ("warm", machines)
            # Wait for the warm-up (registering the fleet) to commit, but not forever; warm-up readings still count
            # towards loss.
            warm_expected = machines * sensors
            deadline = time.monotonic() + 20
            while committed() < warm_expected and time.monotonic() < deadline:
                time.sleep(0.05)
            warm_committed = committed()
            if warm_committed < warm_expected:
                log.warning(
                    "warm-up: %d of %d readings committed before the clock started", warm_committed, warm_expected
                )
            published_msgs, publish_s, pub_use = None, 0.0, ProcessUse(0, 0)
            drain_t0 = 0.0
            if backlog:
                # kill -9, as a crash or a node loss would: the sessions stay with the broker, which queues the
                # backlog for them; then a second generation of workers resumes those sessions and drains it.
                for p in procs:
                    p.kill()
                    p.join()
                # New events and counters (the counts carried over) at once: a worker killed while it waited on an
                # event leaves it counting a sleeper that never wakes, and setting it (the stop in `finally`, too)
                # then blocks for ever.
                counters[:] = [ctx.Value("q", c.value) for c in counters]
                ready[:] = [ctx.Event() for _ in range(n_workers)]
                stop, measuring = ctx.Event(), ctx.Event()
                go.set()
                _, published_msgs, publish_s, pub_dict = _publisher_report(
                    out,
                    bar,
                    f"{profile}: queueing a backlog of {backlog:,} messages",
                    None,
                    lambda: None,
                    # Mosquitto took 30-34 s to queue 300,000 messages for an absent session.
                    timeout_s=600 + backlog / 1000,
                )
                pub_use = ProcessUse(**pub_dict)
                procs = spawn_workers()
                drain_t0 = time.monotonic()
                for p in procs:
                    p.start()
            measuring.set()
            cpu = _Cpu(
                {
                    "ingest": [p.pid for p in procs if p.pid is not None],
                    "peer": list(ext.peer_pids),
                    "broker": [broker_pid] if broker_pid is not None else [],
                    "publisher": [pub.pid] if pub.pid is not None else [],
                }
            )
            backends = BackendCpu(
                settings.database.dsn if peer_count is None else str(ext.count_dsn),
                [p.pid for p in procs if p.pid is not None] or list(ext.peer_pids),
            )
            cpu.start()
            if procs or ext.peer_pids:
                backends.start()
            # A drain's clock starts with its workers' processes, start-up and session resumption included.
            t0 = time.monotonic() if not backlog else drain_t0
            results: list[tuple[str, list[float], dict[str, float]]] = []
            if not backlog:
                go.set()
                item = _publisher_report(
                    out, bar, f"{profile}: publishing", duration_s, backends.poll, timeout_s=duration_s + 600
                )
                _, published_msgs, publish_s, pub_dict = item
                pub_use = ProcessUse(**pub_dict)
            assert published_msgs is not None
            expected = warm_expected + published_msgs * samples_per_message * sensors
            # A backlog is all waiting at once: allow for committing it at a slow 20,000 readings/s on top.
            deadline = time.monotonic() + drain_timeout_s + (expected / 20_000 if backlog else 0.0)
            shown = committed()
            bar.phase(f"{profile}: waiting for the last commits", total=expected - shown)
            first_commit_s = None
            while (now := committed()) < expected and time.monotonic() < deadline:
                if first_commit_s is None and now > warm_committed:
                    first_commit_s = time.monotonic() - t0
                bar.advance(now - shown)
                shown = now
                backends.poll()
                time.sleep(0.05)
            all_committed_s = time.monotonic() - t0
            if first_commit_s is None and committed() > warm_committed:
                first_commit_s = all_committed_s  # all of it committed between two looks
            if peer_count is not None:
                peer_seen[0] = peer_count.value()
            used = cpu.stop()
            db_cpu = backends.stop()
            used["database"] = None if db_cpu is None else round(db_cpu, 2)
            stop.set()
            for _ in procs:
                try:
                    results.append(out.get(timeout=60))
                except queue.Empty as exc:
                    codes = [p.exitcode for p in procs]
                    raise WearlineError(
                        f"an ingest worker sent no report within 60 s of its stop (exit codes {codes})"
                    ) from exc
            for p in [*procs, pub]:
                p.join(30)
        finally:
            stop.set()
            go.set()
            for p in [*procs, pub]:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            if n_workers:
                _drop_schema(settings, schema)
    committed_total = committed() if peer_count is None else peer_seen[0] - peer_base
    latencies = [] if backlog else sorted(x for _, lat, _ in results for x in lat)
    offered = published_msgs * samples_per_message * sensors / publish_s if publish_s else 0.0
    readings = published_msgs * samples_per_message * sensors
    if backends.why_not is None and used["database"] is not None:
        n = backends.backends
        whose = "peer's" if peer_count else "workers'"
        database_cpu = (
            f"{n} PostgreSQL backend{'s' if n != 1 else ''} serving the {whose} "
            "connections (pg_stat_activity client ports); WAL writer, checkpointer and autovacuum not included"
        )
    else:
        database_cpu = f"not measured: {backends.why_not or 'no process given to find its connections'}"
    return BenchResult(
        profile_readings_per_message=samples_per_message * sensors,
        workers=n_workers,
        protocol=settings.mqtt.protocol,
        machines=machines,
        sensors=sensors,
        duration_s=round(publish_s, 2),
        offered_readings_per_s=round(offered),
        committed_readings_per_s=round((committed_total - warm_committed) / all_committed_s),
        published_readings=expected,
        committed_readings=committed_total,
        lost_readings=expected - committed_total,
        latency_p50_ms=round(_percentile(latencies, 0.50), 1),
        latency_p95_ms=round(_percentile(latencies, 0.95), 1),
        latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        publisher=pub_use,
        workers_use=[ProcessUse(**use) for _, _, use in results],
        broker_cpu_s=round(used.get("broker") or 0.0, 2),
        payload="sparkplug" if sparkplug else "json",
        messages=published_msgs,
        cpu_window_s=round(all_committed_s, 2),
        cpu_s=used,
        cpu_us_per_message=_per(used, published_msgs),
        cpu_us_per_reading=_per(used, readings),
        database_cpu=database_cpu,
        broker=ext.broker_label(),
        committed_by="peer" if peer_count is not None else "wearline",
        backlog_messages=backlog,
        first_commit_s=round(first_commit_s, 2) if backlog and first_commit_s is not None else None,
    )


def _per(used: dict[str, float | None], n: int) -> dict[str, float | None]:
    """Microseconds of CPU per unit, for each process group measured."""
    return {k: (round(v / n * 1e6, 2) if v is not None and n else None) for k, v in used.items()}


def _sparkplug_publisher() -> Any:
    from ingest._bench_sparkplug import sparkplug_publisher  # noqa: PLC0415 (it imports this module)

    return sparkplug_publisher


def _sparkplug_settings(settings: Settings, worker: int, workers: int) -> Settings:
    from ingest._bench_sparkplug import sparkplug_worker_settings  # noqa: PLC0415 (it imports this module)

    return sparkplug_worker_settings(settings, worker, workers)


def _publisher_report(
    out: Any, bar: Bar, what: str, duration_s: float | None, tick: Callable[[], None], *, timeout_s: float
) -> Any:
    """The publisher's closing report; meanwhile the bar follows the publishing time (activity only when it
    publishes a count, ``duration_s`` None), and ``tick`` runs."""
    bar.phase(what, total=duration_s)
    started = time.monotonic()
    shown = 0.0
    while True:
        try:
            return out.get(timeout=0.25)
        except queue.Empty:
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                raise RuntimeError(f"the publisher did not report within {timeout_s:.0f} s") from None
            tick()
            if duration_s is not None:
                now = min(elapsed, duration_s)
                bar.advance(now - shown)
                shown = now


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
