"""``wearline bench soak``: the whole chain for many minutes under a rotation of faults, counting every reading.

Ingest, analytics and alerts run as ``python -m wearline <stage>`` processes against a Mosquitto of the soak's own
(the shipped configuration on a free port) and a schema of its own. A publisher process streams QoS 1 telemetry at
a fixed rate, keeps what the broker did not acknowledge and sends it again on a new connection (a gateway's
store-and-forward). Every ``fault_every`` minutes the next fault in :data:`FAULTS` is injected. Every
``sample_every`` minutes the RSS of every process is sampled and a progress line goes to stderr. At the end every
acknowledged sample is looked up in ``readings``: lost is acknowledged but not committed.

A broker kill -9 may lose what the broker acknowledged after its last snapshot and had not yet written to ingest:
at most what it acknowledged within one save period (the shipped configuration saves every few seconds,
:attr:`LocalBroker.save_period_s`) before the kill (docs/ingest.md, "Broker restarts"). The soak counts those
acknowledgements at every kill; such loss is counted apart, and only up to that bound: it is the documented price of
Mosquitto's snapshot persistence, not a Wearline fault.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import typer
from psycopg import sql

from wearline.command import settings_of
from wearline.errors import WearlineError
from wearline.mosquitto import LocalBroker
from wearline.settings import Settings

__all__ = ["DEFAULT_RATE", "FAULTS", "SoakError", "SoakOptions", "SoakReport", "bench", "report_lines", "run_soak"]


FAULTS = ("ingest-kill", "broker-restart", "broker-kill", "analytics-kill", "alerts-kill")
"""The rotation: kill -9 of ingest, broker SIGTERM and start, broker kill -9 and start, kill -9 of analytics, of
alerts. A killed stage is started again ``restart_after_s`` later; the broker at once. A PostgreSQL outage is not in
it: the soak does not own the database server."""

SENSORS = 10
MAX_READINGS_PER_S = 186_000
"""docs/ingest.md, "Benchmark": ``wearline bench ingest --profile 10 --duration 60``, one worker, MQTT 5, committed
185,990 readings/s on this project's 2-core machine (ingest-bound). A documented constant, not measured per run."""
DEFAULT_RATE = MAX_READINGS_PER_S / 2 / SENSORS
"""Messages/s (one sample of 10 readings each): half the measured maximum."""

_WINDOW = 1000  # publisher's unacknowledged QoS 1 messages at most; what a broker loss can make it re-send
_STAGES = ("ingest", "analytics", "alerts")
_JUDGED = ("ingest", "analytics", "alerts", "broker")

# Slots of the publisher's shared counters.
_PUBLISHED, _ACKED, _RESENT, _CONNECTION, _LAG_MS, _START_MS, _NO_SUBSCRIBERS, _REFUSED = range(8)


class SoakError(WearlineError):
    """The soak could not run: no Mosquitto, no database, or a stage that would not start."""


@dataclass(frozen=True)
class SoakOptions:
    """How long, how hard and how often to break things."""

    minutes: float = 30.0
    rate: float = DEFAULT_RATE
    """Messages/s offered, each one sample of 10 readings of one machine."""
    machines: int = 100
    fault_every_min: float = 3.0
    sample_every_min: float = 1.0
    warmup_min: float | None = None
    """RSS growth is measured from the first sample at or after this; by default once every fault has happened
    (a broker keeps the high-water mark of the first backlog it held) or at half the run, whichever is sooner."""
    restart_after_s: float = 10.0
    rss_growth_limit: float = 0.20
    keep: bool = False

    @property
    def step_ms(self) -> int:
        """Milliseconds between two samples of one machine (the rate is rounded to fit whole milliseconds)."""
        return max(1, round(1000 * self.machines / self.rate))

    @property
    def baseline_min(self) -> float:
        if self.warmup_min is not None:
            return self.warmup_min
        return min(self.fault_every_min * len(FAULTS) + self.sample_every_min, self.minutes / 2)

    @property
    def effective_rate(self) -> float:
        return self.machines * 1000 / self.step_ms


@dataclass(frozen=True)
class Fault:
    at_min: float
    name: str
    detail: str


@dataclass(frozen=True)
class RssSample:
    at_min: float
    mb: dict[str, float]
    """Per role; a role whose process is down has no entry."""
    restarted: frozenset[str]
    """Roles whose process is another one than at the previous sample."""


@dataclass
class SoakReport:
    """Everything the soak counted; ``ok`` is its verdict."""

    options: SoakOptions
    schema: str
    published: int = 0
    """Messages (samples) the publisher sent at least once."""
    acknowledged: int = 0
    resent: int = 0
    """Messages sent again on a new connection because the old one dropped before their PUBACK."""
    unacknowledged: int = 0
    """Never acknowledged by the end (the publisher gave up after a minute): not counted as published."""
    committed: int = 0
    """Rows in ``readings``."""
    lost: int = 0
    """Acknowledged, not committed, and not explained by a broker kill -9."""
    lost_to_broker_kill: int = 0
    """Acknowledged on a connection that a broker kill -9 ended, then not committed: the broker's snapshot window."""
    broker_kills: int = 0
    no_subscribers: int = 0
    """PUBACKs saying no subscription matched (reason 0x10)."""
    refused: int = 0
    """PUBACKs with an error reason code (0x80 and up)."""
    broker_saved: bool = True
    """No failed snapshot in the broker's log (one that cannot save keeps nothing across a restart)."""
    save_period_s: float = 0.0
    """The broker's longest time between snapshots."""
    kill_bound: int = 0
    """Acknowledged within ``save_period_s`` before each broker kill -9, summed: what the snapshots may have lacked."""
    off_grid_rows: int = 0
    """Rows at instants the publisher never sent (must be 0)."""
    duplicate_rows: int = 0
    duplicate_anomalies: int = 0
    anomalies: int = 0
    tickets: int = 0
    seconds: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    samples: list[RssSample] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)

    @property
    def loss_explained(self) -> bool:
        return self.lost_to_broker_kill <= self.kill_bound

    def rss_growth(self) -> dict[str, tuple[float, float, float] | None]:
        """Per judged role: (the warm-up's peak MB, MB at the last sample, growth), or None with no sample after it.

        The warm-up's peak, not its last sample: a broker keeps the memory of the largest backlog it held (an ingest
        kill's), and that high-water mark, reached again later, is not a leak. Growth past it is."""
        out: dict[str, tuple[float, float, float] | None] = {}
        cut = self.options.baseline_min
        for role in _JUDGED:
            seen = [(s.at_min, s.mb[role]) for s in self.samples if role in s.mb]
            after = [mb for at, mb in seen if at > cut]
            # The sample at or right after the cut closes the warm-up: a process may still be starting before it.
            first = next((i for i, (at, _) in enumerate(seen) if at >= cut), None)
            if first is None or not after or first == len(seen) - 1:
                out[role] = None
                continue
            peak = max(mb for _, mb in seen[: first + 1])
            out[role] = (peak, seen[-1][1], seen[-1][1] / peak - 1)
        return out

    @property
    def rss_flat(self) -> bool:
        growth = self.rss_growth()
        return all(g is not None and g[2] < self.options.rss_growth_limit for g in growth.values())

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.broker_saved
            and self.loss_explained
            and self.off_grid_rows == 0
            and self.duplicate_rows == 0
            and not self.unexpected_exits
            and self.rss_flat
        )


# --- processes ------------------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB, or None when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _Stage:
    """One ``python -m wearline <stage>`` process, started again after a kill."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_marks = 0

    def start(self) -> None:
        # Ingest says "subscribed to" on every connection; one more than now means this process is receiving.
        self.ready_marks = self.log.read_bytes().count(b"subscribed to") + 1 if self.log.exists() else 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 (this interpreter, our own module)
                [sys.executable, "-m", "wearline", self.name], env=self.env, stdout=out, stderr=out
            )
        self.starts += 1

    def wait_for(self, marker: bytes, count: int, timeout_s: float) -> None:
        """Until ``marker`` appears ``count`` times in the log (a stage says it is ready)."""
        deadline = time.monotonic() + timeout_s
        while self.log.read_bytes().count(marker) < count:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise SoakError(f"{self.name} did not become ready (no {marker.decode()!r} in its log): {tail}")
            time.sleep(0.05)

    def kill(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        return pid

    def terminate(self, timeout_s: float = 60) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.proc = None

    def exited(self) -> int | None:
        """The exit status if the process ended by itself."""
        return None if self.proc is None else self.proc.poll()


# --- publisher (a process of its own) ---------------------------------------------------------------------------
@dataclass
class _Connection:
    """What one publisher connection got acknowledged: a range of new sample numbers, and re-sent ones."""

    lo: int = -1
    hi: int = -1
    resent_acked: list[int] = field(default_factory=list)


def _publish(
    *,
    port: int,
    prefix: str,
    machines: int,
    step_ms: int,
    stop: MpEvent,
    shared: Any,
    out: Any,
) -> None:
    """Publish sample g (machine g % machines, instant start_ms + (g // machines) * step_ms) when its instant comes,
    at QoS 1, with at most ``_WINDOW`` unacknowledged; then hand the bookkeeping to ``out``."""
    import paho.mqtt.client as paho  # noqa: PLC0415 (only the publisher process needs paho)
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415

    topics = [f"{prefix}/soak/site1/line1/m{i:04d}/telemetry" for i in range(machines)]
    rng = random.Random(7)
    # Pre-rendered values around steady levels: rendering JSON per message would cost the publisher more than the
    # soak's rate allows; ingest parses every value all the same.
    pool = [
        orjson.dumps({f"s{j}": round(20.0 + 5 * j + rng.gauss(0, 0.5), 3) for j in range(SENSORS)}) for _ in range(997)
    ]
    # (connection number, mid, PUBACK reason code), appended by paho's network thread
    acks: deque[tuple[int, int, int]] = deque()
    inflight: dict[int, int] = {}  # mid -> sample number, on the current connection
    resending: set[int] = set()  # sample numbers re-sent on the current connection
    conns: list[_Connection] = []
    client: paho.Client | None = None

    def connect() -> paho.Client:
        while True:
            number = len(conns)
            c = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"wlsoak-pub-{uuid.uuid4().hex[:8]}",
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            c.max_inflight_messages_set(_WINDOW)
            c.max_queued_messages_set(0)
            c.on_publish = lambda _c, _u, mid, rc, _p, n=number: acks.append((n, mid, int(rc.value)))
            try:
                c.connect("127.0.0.1", port, keepalive=30)
            except OSError:
                time.sleep(0.2)
                continue
            c.loop_start()
            deadline = time.monotonic() + 5
            while not c.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            if c.is_connected():
                conns.append(_Connection())
                shared[_CONNECTION] = number
                return c
            c.loop_stop()
            with contextlib.suppress(Exception):
                c.disconnect()

    def take_acks() -> None:
        current = len(conns) - 1
        while acks:
            number, mid, code = acks.popleft()
            # 0x10: accepted, but no subscription matched (nobody will receive it); 0x80 and up: refused. Both are
            # counted and printed: either would be a loss the broker told us about.
            if code == 0x10:
                shared[_NO_SUBSCRIBERS] += 1
            elif code >= 0x80:
                shared[_REFUSED] += 1
            if number != current:
                continue  # an old connection's late callback: its in-flight messages were sent again
            g = inflight.pop(mid, None)
            if g is None:
                continue
            conn = conns[current]
            if g in resending:
                resending.discard(g)
                conn.resent_acked.append(g)
            else:
                conn.lo = g if conn.lo < 0 else conn.lo
                conn.hi = max(conn.hi, g)
            shared[_ACKED] += 1

    def payload(g: int) -> tuple[str, bytes]:
        i, k = g % machines, g // machines
        values = pool[(i * 31 + k) % len(pool)]
        return topics[i], b'{"v":1,"type":"pump","samples":[{"ts":%d,"values":%s}]}' % (start_ms + k * step_ms, values)

    def send(g: int) -> None:
        assert client is not None
        topic, body = payload(g)
        info = client.publish(topic, body, qos=1)
        inflight[info.mid] = g

    g = 0
    give_up_at: float | None = None
    client = connect()
    # Instants start when publishing can: a spawned interpreter takes seconds to start, and a late start would
    # begin with a backlog.
    start_ms = int(time.time() * 1000)
    shared[_START_MS] = start_ms
    while True:
        take_acks()
        if not client.is_connected():
            # The broker went away: acknowledged messages are its own; everything else goes again on a new
            # connection, in order, with its original instant (ingest stores a sample once whatever it receives).
            client.loop_stop()
            take_acks()
            pending = sorted(inflight.values())
            client = connect()
            inflight.clear()
            resending.clear()
            resending.update(pending)
            for p in pending:
                send(p)
            shared[_RESENT] += len(pending)
            continue
        if stop.is_set():
            give_up_at = give_up_at or time.monotonic() + 60
            if not inflight or time.monotonic() > give_up_at:
                break
            time.sleep(0.01)
            continue
        if len(inflight) >= _WINDOW:
            time.sleep(0.001)
            continue
        due_ms = start_ms + (g // machines) * step_ms
        now_ms = time.time() * 1000
        if due_ms > now_ms:
            time.sleep(min(0.005, (due_ms - now_ms) / 1000))
            continue
        send(g)
        g += 1
        shared[_PUBLISHED] = g
        shared[_LAG_MS] = int(now_ms - due_ms)
    client.loop_stop()
    with contextlib.suppress(Exception):
        client.disconnect()
    conn_ranges = [(c.lo, c.hi, c.resent_acked) for c in conns]
    out.put(
        {
            "published": g,
            "resent": int(shared[_RESENT]),
            "no_subscribers": int(shared[_NO_SUBSCRIBERS]),
            "refused": int(shared[_REFUSED]),
            "unacked": sorted(inflight.values()),
            "connections": conn_ranges,
        }
    )


# --- the run --------------------------------------------------------------------------------------------------
def _stage_env(settings: Settings, *, port: int, schema: str, prefix: str, client_id: str) -> dict[str, str]:
    """The caller's environment with the soak's broker, schema, prefix and identity (environment wins over a
    settings file, so ``--config`` still supplies everything else)."""
    env = dict(os.environ)
    env.update(
        {
            "WEARLINE_MQTT__HOST": "127.0.0.1",
            "WEARLINE_MQTT__PORT": str(port),
            "WEARLINE_MQTT__TLS": "false",
            "WEARLINE_MQTT__CLIENT_ID": client_id,
            "WEARLINE_DATABASE__DSN": settings.database.dsn,
            "WEARLINE_DATABASE__SCHEMA": schema,
            "WEARLINE_TOPIC_PREFIX": prefix,
            # Ports of their own would collide with a running Wearline; the soak reads the database instead.
            "WEARLINE_INGEST__METRICS_PORT": "0",
            "WEARLINE_ANALYTICS__METRICS_PORT": "0",
            "WEARLINE_ALERTS__METRICS_PORT": "0",
        }
    )
    for key in ("WEARLINE_MQTT__CA_FILE", "WEARLINE_MQTT__USERNAME", "WEARLINE_MQTT__PASSWORD"):
        env.pop(key, None)
    return env


def _connect(settings: Settings, schema: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(
            settings.database.dsn,
            autocommit=True,
            options=f"-c search_path={schema},public -c timezone=UTC",
            connect_timeout=max(1, round(settings.database.connect_timeout_s)),
        )
    except psycopg.Error as exc:
        raise SoakError(f"cannot connect to the database (database.dsn): {exc}") from exc


def _drop_schema(settings: Settings, schema: str) -> None:
    with _connect(settings, "public") as conn:
        # TimescaleDB jobs of the schema go first, one at a time: a DROP that removes several while one runs can
        # fail (timescale/timescaledb#8636).
        view = conn.execute("SELECT to_regclass('timescaledb_information.jobs')").fetchone()
        if view is not None and view[0] is not None:
            jobs = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = %s", [schema]
            ).fetchall()
            for (job,) in jobs:
                conn.execute("SELECT delete_job(%s)", [job])
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _count(conn: psycopg.Connection[tuple[Any, ...]], query: str, params: Sequence[object] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class _Run:
    """The soak's state while it runs: processes, the fault schedule, samples and the report being filled."""

    def __init__(self, settings: Settings, options: SoakOptions, work: Path, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.options = options
        self.work = work
        self.say = say
        run_id = uuid.uuid4().hex[:8]
        self.schema = f"{settings.database.schema_name}_soak_{run_id}"[:63]
        self.prefix = f"{settings.topic_prefix}-soak-{run_id}"
        self.report = SoakReport(options=options, schema=self.schema)
        self.broker = LocalBroker(work)
        self.report.save_period_s = self.broker.save_period_s
        env = _stage_env(
            settings, port=self.broker.port, schema=self.schema, prefix=self.prefix, client_id=f"wlsoak-{run_id}"
        )
        self.stages = {name: _Stage(name, env, work / f"{name}.log") for name in _STAGES}
        self.down_until: dict[str, float] = {}
        self.killed_connections: set[int] = set()
        self.acked_samples: deque[tuple[float, int]] = deque()
        """(monotonic time, acknowledged so far), a few save periods of them: the kill bound's counts."""
        self.started = 0.0
        self.start_ms = 0
        self.last_pids: dict[str, int] = {}

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def note_acked(self, shared: Any) -> None:
        now = time.monotonic()
        self.acked_samples.append((now, int(shared[_ACKED])))
        while len(self.acked_samples) > 1 and self.acked_samples[1][0] <= now - 2 * self.broker.save_period_s:
            self.acked_samples.popleft()

    def acked_within_save_period(self, shared: Any) -> int:
        """Acknowledged since the last sample at least one save period old (or since the start): a count no smaller
        than what the broker acknowledged after its last snapshot."""
        since = time.monotonic() - self.broker.save_period_s
        before = [n for t, n in self.acked_samples if t <= since]
        return int(shared[_ACKED]) - (before[-1] if before else 0)

    def pids(self) -> dict[str, int]:
        found = {n: s.proc.pid for n, s in self.stages.items() if s.proc is not None and s.proc.poll() is None}
        if self.broker.proc is not None and self.broker.proc.poll() is None:
            found["broker"] = self.broker.proc.pid
        return found

    def sample(self, publisher_pid: int | None) -> RssSample:
        pids = self.pids()
        if publisher_pid is not None:
            pids["publisher"] = publisher_pid
        mb = {role: rss for role, pid in pids.items() if (rss := _rss_mb(pid)) is not None}
        restarted = frozenset(r for r, pid in pids.items() if r in self.last_pids and self.last_pids[r] != pid)
        self.last_pids.update(pids)
        s = RssSample(round(self.minutes(), 2), mb, restarted)
        self.report.samples.append(s)
        return s

    def inject(self, name: str, shared: Any) -> None:
        at = round(self.minutes(), 2)
        if name in {"broker-restart", "broker-kill"}:
            sig = signal.SIGTERM if name == "broker-restart" else signal.SIGKILL
            pid = self.broker.proc.pid if self.broker.proc else 0
            t0 = time.monotonic()
            self.broker.stop(sig)
            stopped = time.monotonic() - t0
            if sig == signal.SIGKILL:
                # The publisher's current connection is the one this kill ended (it cannot reconnect before the
                # start below): what it got acknowledged since the broker's last snapshot may be gone. Counted once
                # the broker is dead, so the window ends at the kill.
                self.killed_connections.add(int(shared[_CONNECTION]))
                self.report.broker_kills += 1
                self.report.kill_bound += self.acked_within_save_period(shared)
            self.broker.start()
            assert self.broker.proc is not None
            how = "SIGTERM" if sig == signal.SIGTERM else "kill -9"
            detail = (
                f"mosquitto pid {pid} {how} (stopped in {stopped:.1f} s), started again as pid {self.broker.proc.pid}"
            )
        else:
            stage = self.stages[name.removesuffix("-kill")]
            if stage.proc is None:
                detail = f"{stage.name} was already down: skipped"
            else:
                pid = stage.kill()
                self.down_until[stage.name] = time.monotonic() + self.options.restart_after_s
                detail = f"{stage.name} pid {pid} kill -9; start again in {self.options.restart_after_s:g} s"
        self.report.faults.append(Fault(at, name, detail))
        self.say(f"soak {at:.1f} min: fault {name}: {detail}")

    def restart_due(self, *, all_now: bool = False) -> None:
        for name, when in list(self.down_until.items()):
            if all_now or time.monotonic() >= when:
                self.stages[name].start()
                del self.down_until[name]

    def check_exits(self) -> None:
        for stage in self.stages.values():
            status = stage.exited()
            if status is not None:
                what = f"{stage.name} exited by itself with status {status} at {self.minutes():.1f} min"
                self.report.unexpected_exits.append(what)
                self.say(f"soak: {what} (log: {stage.log}); starting it again")
                stage.start()
        if self.broker.proc is not None and self.broker.proc.poll() is not None:
            what = f"mosquitto exited by itself with status {self.broker.proc.returncode} at {self.minutes():.1f} min"
            self.report.unexpected_exits.append(what)
            self.broker.start()


def run_soak(settings: Settings, options: SoakOptions, *, say: Callable[[str], None]) -> SoakReport:
    """Run the soak; ``say`` gets the progress lines (one per sample, one per fault). Raises :class:`SoakError`
    when it cannot start."""
    work = Path(tempfile.mkdtemp(prefix="wearline-soak-"))
    try:
        return _run(settings, options, work, say)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _schema(settings: Settings, run: _Run) -> Iterator[None]:
    import asyncio  # noqa: PLC0415

    from wearline.db import migrate  # noqa: PLC0415

    db = settings.database.model_copy(update={"schema_name": run.schema})
    try:
        asyncio.run(migrate(db))
    except WearlineError as exc:
        raise SoakError(f"cannot create the soak's schema {run.schema}: {exc}") from exc
    try:
        yield
    finally:
        if not run.options.keep:
            _drop_schema(settings, run.schema)


def _run(settings: Settings, options: SoakOptions, work: Path, say: Callable[[str], None]) -> SoakReport:
    run = _Run(settings, options, work, say)
    report = run.report
    with _schema(settings, run):
        run.broker.start()
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        # Plain shared integers, no lock: one writer (the publisher), and the soak only prints what it reads.
        shared: Any = ctx.RawArray("q", 8)
        out: Any = ctx.Queue()
        publisher = None
        try:
            ingest = run.stages["ingest"]
            ingest.start()
            # Ingest's first session must exist before anything is published, or the broker has nobody to keep
            # messages for.
            ingest.wait_for(b"subscribed to", 1, 60)
            run.stages["analytics"].start()
            run.stages["alerts"].start()
            publisher = ctx.Process(
                target=_publish,
                kwargs={
                    "port": run.broker.port,
                    "prefix": run.prefix,
                    "machines": options.machines,
                    "step_ms": options.step_ms,
                    "stop": stop,
                    "shared": shared,
                    "out": out,
                },
                daemon=True,
            )
            publisher.start()
            # The clock starts with the first publish: a spawned interpreter takes seconds to import paho.
            deadline = time.monotonic() + 60
            while shared[_PUBLISHED] == 0:
                if not publisher.is_alive() or time.monotonic() > deadline:
                    raise SoakError("the publisher did not start publishing within 60 s")
                time.sleep(0.05)
            run.started = time.monotonic()
            run.start_ms = int(shared[_START_MS])
            _loop(run, shared, publisher.pid)
            # The last faults' stages come back before the count: their backlog is part of what must be committed.
            run.restart_due(all_now=True)
            stop.set()
            try:
                result = out.get(timeout=120)
            except Exception as exc:
                raise SoakError("the publisher did not report within 120 s of the end") from exc
            publisher.join(30)
            report.seconds = time.monotonic() - run.started
            _settle(run, shared)
            run.sample(None)
            _tally(run, result)
        finally:
            stop.set()
            if publisher is not None and publisher.is_alive():
                publisher.kill()
            for stage in run.stages.values():
                stage.terminate()
            run.broker.stop(signal.SIGTERM)
            report.broker_saved = run.broker.saved_ok()
            report.restarts = {name: s.starts - 1 for name, s in run.stages.items()}
    return report


def _loop(run: _Run, shared: Any, publisher_pid: int | None) -> None:
    o = run.options
    next_fault = o.fault_every_min
    next_sample = 0.0
    rotation = 0
    with _connect(run.settings, run.schema) as conn:
        while (now := run.minutes()) < o.minutes:
            run.note_acked(shared)
            run.restart_due()
            run.check_exits()
            if now >= next_fault:
                run.inject(FAULTS[rotation % len(FAULTS)], shared)
                rotation += 1
                next_fault += o.fault_every_min
            if now >= next_sample:
                s = run.sample(publisher_pid)
                committed = _count(conn, "SELECT count(*) FROM readings")
                rss = "  ".join(f"{r} {mb:.0f}" for r, mb in s.mb.items())
                run.say(
                    f"soak {s.at_min:.1f}/{o.minutes:g} min: published {shared[_PUBLISHED]:,} acked "
                    f"{shared[_ACKED]:,} committed {committed:,} re-sent {shared[_RESENT]:,} publisher lag "
                    f"{shared[_LAG_MS] / 1000:.1f} s; faults {len(run.report.faults)}; RSS MB: {rss}"
                )
                next_sample += o.sample_every_min
            time.sleep(0.1)


def _settle(run: _Run, shared: Any) -> None:
    """Once ingest receives again, until ``readings`` holds as many rows as were acknowledged, or the count stops
    moving for 5 s."""
    ingest = run.stages["ingest"]
    ingest.wait_for(b"subscribed to", ingest.ready_marks, 120)
    deadline = time.monotonic() + 300
    last, since = -1, time.monotonic()
    with _connect(run.settings, run.schema) as conn:
        while time.monotonic() < deadline:
            n = _count(conn, "SELECT count(*) FROM readings")
            if n >= shared[_ACKED]:
                return
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 5:
                return
            time.sleep(1)


def _tally(run: _Run, result: dict[str, Any]) -> None:
    r = run.report
    o = run.options
    m = o.machines
    published: int = result["published"]
    unacked = set(result["unacked"])
    conns: list[tuple[int, int, list[int]]] = result["connections"]
    r.published = published
    r.resent = result["resent"]
    r.no_subscribers = result["no_subscribers"]
    r.refused = result["refused"]
    r.unacknowledged = len(unacked)
    r.acknowledged = published - len(unacked)
    missing: list[int] = []
    with _connect(run.settings, run.schema) as conn:
        r.committed = _count(conn, "SELECT count(*) FROM readings")
        r.duplicate_rows = _count(conn, "SELECT count(*) - count(DISTINCT (machine_id, time)) FROM readings")
        r.anomalies = _count(conn, "SELECT count(*) FROM anomalies")
        r.duplicate_anomalies = _count(
            conn, "SELECT count(*) - count(DISTINCT (machine_id, detector, time)) FROM anomalies"
        )
        r.tickets = _count(conn, "SELECT count(*) FROM tickets")
        ids = dict(conn.execute("SELECT name, machine_id FROM machines").fetchall())
        for i in range(m):
            per_machine = published // m + (1 if i < published % m else 0)
            machine_id = ids.get(f"m{i:04d}")
            if machine_id is None:
                missing.extend(k * m + i for k in range(per_machine))
                continue
            k = f"((extract(epoch FROM time) * 1000)::bigint - {run.start_ms})"
            r.off_grid_rows += _count(
                conn,
                f"SELECT count(*) FROM readings WHERE machine_id = %s AND (mod({k}, {o.step_ms}) <> 0 OR {k} < 0 "
                f"OR {k} / {o.step_ms} >= %s)",
                [machine_id, per_machine],
            )
            rows = conn.execute(
                f"""SELECT k FROM generate_series(0, %s - 1) AS k EXCEPT
                    SELECT {k} / {o.step_ms} FROM readings WHERE machine_id = %s""",
                [per_machine, machine_id],
            ).fetchall()
            missing.extend(int(k) * m + i for (k,) in rows)
    # Which connection acknowledged each lost sample: a re-sent one where it was re-sent, else the range of new ones.
    resent_on = {g: n for n, (_, _, again) in enumerate(conns) for g in again}
    for g in missing:
        if g in unacked:
            continue
        n = resent_on.get(g)
        if n is None:
            n = next((j for j, (lo, hi, _) in enumerate(conns) if lo <= g <= hi), -1)
        if n in run.killed_connections:
            r.lost_to_broker_kill += 1
        else:
            r.lost += 1


# --- what it prints -------------------------------------------------------------------------------------------
def report_lines(r: SoakReport) -> list[str]:
    """The printed report: counts, the fault list, the RSS table over time, first vs last RSS and the verdicts."""
    o = r.options
    lines = [
        f"soak: {r.seconds / 60:.1f} min at {o.effective_rate:,.0f} messages/s ({o.effective_rate * SENSORS:,.0f} "
        f"readings/s, {o.machines} machines every {o.step_ms} ms); schema {r.schema}",
        f"published {r.published:,}  acknowledged {r.acknowledged:,}  committed {r.committed:,}  "
        f"re-sent {r.resent:,}  unacknowledged at the end {r.unacknowledged:,}  PUBACKs 'no subscribers' "
        f"{r.no_subscribers:,}, refused {r.refused:,}",
        f"lost {r.lost}  lost to broker kill -9 {r.lost_to_broker_kill} (at most {r.kill_bound:,}: acknowledged "
        f"within the broker's save period of {r.save_period_s:g} s before each of {r.broker_kills} kill(s))  "
        f"duplicate rows {r.duplicate_rows}  off-grid rows {r.off_grid_rows}  "
        f"anomalies {r.anomalies:,} (duplicates {r.duplicate_anomalies})  tickets {r.tickets}",
        "faults:",
        *(f"  {f.at_min:6.2f} min  {f.name:<15} {f.detail}" for f in r.faults),
    ]
    if not r.broker_saved:
        lines.append("the broker failed to save its snapshot (see its log): a restart kept nothing")
    if r.unexpected_exits:
        lines += ["unexpected exits:", *(f"  {e}" for e in r.unexpected_exits)]
    roles = [*_JUDGED, "publisher"]
    lines.append("RSS MB (* a new process since the sample before):")
    lines.append("  " + f"{'min':>6}" + "".join(f"{role:>11}" for role in roles))
    for s in r.samples:
        cells = "".join(
            f"{(f'{s.mb[role]:.0f}' + ('*' if role in s.restarted else '')) if role in s.mb else '-':>11}"
            for role in roles
        )
        lines.append(f"  {s.at_min:>6.1f}{cells}")
    lines.append(
        f"RSS peak of the warm-up (first {o.baseline_min:g} min) vs last, flat below {o.rss_growth_limit:.0%} growth:"
    )
    for role, g in r.rss_growth().items():
        if g is None:
            lines.append(f"  {role:<10} too few samples after the warm-up: not flat")
        else:
            restarts = r.restarts.get(role, 0)
            again = f" (restarted {restarts} time(s): the last process is younger)" if restarts else ""
            lines.append(
                f"  {role:<10} {g[0]:6.1f} -> {g[1]:6.1f} MB  {g[2]:+.1%}  "
                f"{'flat' if g[2] < o.rss_growth_limit else 'GROWING'}{again}"
            )
    lines.append(
        f"verdict: lost {'0' if r.lost == 0 else r.lost} ({'ok' if r.lost == 0 else 'FAIL'}); "
        f"broker kill loss {'within' if r.loss_explained else 'BEYOND'} its bound; "
        f"RSS {'flat' if r.rss_flat else 'NOT FLAT'}; {'PASS' if r.ok else 'FAIL'}"
    )
    return lines


# --- the command ----------------------------------------------------------------------------------------------
bench = typer.Typer()


@bench.command("soak")
def soak_command(  # noqa: PLR0917 (a Typer command: one parameter per option)
    ctx: typer.Context,
    minutes: Annotated[float, typer.Option(min=0.1, help="How long to publish.")] = 30.0,
    rate: Annotated[
        float,
        typer.Option(
            min=1, help="Messages/s of one 10-reading sample each (default: half of docs/ingest.md's measured maximum)."
        ),
    ] = DEFAULT_RATE,
    machines: Annotated[int, typer.Option(min=1, max=10_000, help="Machines the rate is spread over.")] = 100,
    fault_every: Annotated[
        float, typer.Option(min=0.01, help="Minutes between two faults (a rotation of five).")
    ] = 3.0,
    sample_every: Annotated[float, typer.Option(min=0.01, help="Minutes between two RSS samples.")] = 1.0,
    warmup: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Minutes before the RSS baseline sample (default: one rotation of faults, at most half the run).",
        ),
    ] = None,
    restart_after: Annotated[float, typer.Option(min=0, help="Seconds a killed stage stays down.")] = 10.0,
    keep: Annotated[bool, typer.Option(help="Keep the soak's schema and its work directory (logs).")] = False,
) -> None:
    """Run ingest, analytics and alerts as processes for MINUTES under a fault every FAULT_EVERY minutes.

    Own Mosquitto (shipped configuration) and schema; prints published, acknowledged, committed, lost and RSS of
    every process over time; exits 1 if a reading was lost or RSS grew past 20 % after the warm-up.
    """
    settings = settings_of(ctx)
    if rate > 1000 * machines:
        raise SoakError(
            f"--rate {rate:g} is above one sample per millisecond per machine (timestamps are in ms): "
            f"raise --machines above {machines}"
        )
    options = SoakOptions(
        minutes=minutes,
        rate=rate,
        machines=machines,
        fault_every_min=fault_every,
        sample_every_min=sample_every,
        warmup_min=warmup,
        restart_after_s=restart_after,
        keep=keep,
    )
    typer.echo(
        f"settings: minutes={minutes:g} rate={options.effective_rate:,.0f} msg/s (asked {rate:,.0f}; default is half "
        f"of {MAX_READINGS_PER_S:,} readings/s, docs/ingest.md) machines={machines} step={options.step_ms} ms "
        f"fault_every={fault_every:g} min faults={','.join(FAULTS)} restart_after={restart_after:g} s "
        f"sample_every={sample_every:g} min warmup={options.baseline_min:g} min database={settings.database.dsn.split('@')[-1]} "
        f"(own schema) broker=own mosquitto, shipped config"
    )
    report = run_soak(settings, options, say=lambda line: typer.echo(line, err=True))
    for line in report_lines(report):
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)
