"""Helpers for the fault suite: a Mosquitto with the shipped configuration that can be restarted or killed on its
own port and persistence directory, a publisher that counts what the broker acknowledged and re-sends what it did
not across broker restarts, ingest worker processes with extra settings, a PostgreSQL cluster of the test's own
that can be stopped and started, and the published/committed/duplicates tally every fault test prints."""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.conftest import TEST_DSN, unique
from tests.ingest._support import Fleet, Key, ingest_env
from wearline.mosquitto import LocalBroker, free_port
from wearline.settings import Settings

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Broker(LocalBroker):
    """A :class:`~wearline.mosquitto.LocalBroker` in a temporary folder of its own, removed on :meth:`close`. Not
    under pytest's tmp_path: the broker's own user cannot enter its 0700 folders and would silently fail every save."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="wlt-fault-mosquitto-"))
        super().__init__(self.work)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.work, ignore_errors=True)


@contextlib.contextmanager
def broker() -> Iterator[Broker]:
    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.close()


class PgCluster:
    """A PostgreSQL 15 cluster of the test's own (Debian's binaries), on a free port with trust authentication on
    127.0.0.1, that a test can stop and start again; its data directory lasts until :meth:`close`.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (``runuser``) and
    lives in a directory that user owns, outside pytest's 0700 ``tmp_path``.
    """

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"PostgreSQL's server binaries are not in {PG_BIN} (Debian's postgresql-15 package)")
        self._as: list[str] = []
        self.work = Path(tempfile.mkdtemp(prefix="wlt-fault-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start PostgreSQL as its own user")
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.work, "postgres", "postgres")
        self.data = self.work / "data"
        self.log = self.work / "postgres.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.work}'\n"
                "fsync = off\nmax_connections = 50\n"
            )

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{Path(argv[0]).name} failed: {done.stderr.decode(errors='replace')} {log}")

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: fast disconnects every client and rolls back open transactions."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.work, ignore_errors=True)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started :class:`PgCluster`, removed afterwards."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _acked(info: paho.MQTTMessageInfo) -> bool:
    # paho raises instead of answering False for a publish made while the connection was down.
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def _wait_acked(client: paho.Client, infos: list[paho.MQTTMessageInfo], timeout_s: float = 5.0) -> None:
    """Until every publish is acknowledged, the connection drops (a gateway notices at once and reconnects), or
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for info in infos:
        while not _acked(info) and client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.002)


@dataclass
class Publisher:
    """QoS 1 publisher over MQTT 5 that survives broker restarts: a message counts as published once the broker
    acknowledged it; what was not acknowledged when the connection dropped is sent again on a new connection
    (a gateway's store-and-forward). ``acked`` holds the keys of every acknowledged message, ``acked_at`` when each
    acknowledgement was seen (no earlier than the broker sent it)."""

    port: int
    messages: Sequence[tuple[str, bytes, list[Key]]]
    rate: float
    acked: set[Key] = field(default_factory=set)
    acked_messages: int = 0
    acked_at: list[float] = field(default_factory=list)
    resent: int = 0
    reconnects: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def _connect(self) -> paho.Client:
        while True:
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=unique("wlt-fpub-"), protocol=MQTTProtocolVersion.MQTTv5
            )
            client.max_inflight_messages_set(200)
            try:
                client.connect("127.0.0.1", self.port)
            except OSError:
                time.sleep(0.1)
                continue
            client.loop_start()
            return client

    def _record(self, keys: list[Key]) -> None:
        self.acked.update(keys)
        self.acked_messages += 1
        self.acked_at.append(time.monotonic())

    def acked_since(self, t: float) -> int:
        """Messages whose acknowledgement was seen at or after monotonic time ``t``."""
        return len(self.acked_at) - bisect.bisect_left(self.acked_at, t)

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 (handed to the test, which asserts there was none)
            self.error.append(exc)
        finally:
            self.done.set()

    def _run(self) -> None:
        client = self._connect()
        started = time.monotonic()
        i = 0
        chunk = 100
        while i < len(self.messages):
            part = self.messages[i : i + chunk]
            infos = [client.publish(t, p, qos=1) for t, p, _ in part]
            _wait_acked(client, infos)
            pending = [(m, info) for m, info in zip(part, infos, strict=True) if not _acked(info)]
            for (_, _, keys), info in zip(part, infos, strict=True):
                if _acked(info):
                    self._record(keys)
            while pending:
                # The connection dropped (a broker restart): acknowledged messages are the broker's; send the rest
                # again on a new connection until the broker acknowledges them.
                client.loop_stop()
                with contextlib.suppress(Exception):
                    client.disconnect()
                self.reconnects += 1
                client = self._connect()
                self.resent += len(pending)
                infos = [client.publish(t, p, qos=1) for (t, p, _), _ in pending]
                _wait_acked(client, infos)
                still = []
                for (m, _), info in zip(pending, infos, strict=True):
                    if _acked(info):
                        self._record(m[2])
                    else:
                        still.append((m, info))
                pending = still
            i += len(part)
            ahead = i / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        client.loop_stop()
        client.disconnect()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        return t


def worker_env(settings: Settings, **ingest: object) -> dict[str, str]:
    """``ingest_env`` plus the ``WEARLINE_INGEST__*`` settings the fault tests vary."""
    env = ingest_env(settings)
    env["WEARLINE_MQTT__KEEPALIVE_S"] = str(settings.mqtt.keepalive_s)
    for key, value in ingest.items():
        env[f"WEARLINE_INGEST__{key.upper()}"] = str(value)
    return env


def wait_until(check: object, timeout_s: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def settled_rows(schema: str, want: int, timeout_s: float, quiet_s: float = 3.0) -> int:
    """Wait until ``want`` rows are stored, or until the count has not moved for ``quiet_s``; return the count."""
    from tests.ingest._support import count_rows  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count_rows(schema)
        if n >= want:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return n
        time.sleep(0.2)
    return count_rows(schema)


def ingested_messages(log: Path) -> int:
    """Messages written by every ingest run that stopped cleanly (from their summary lines)."""
    total = 0
    for line in log.read_text().splitlines():
        if "ingest stopped after" in line:
            total += int(line.split(" s: ", 1)[1].split(" messages", 1)[0])
    return total


@dataclass(frozen=True)
class Tally:
    """What a fault test prints, in samples (rows of one machine at one instant, 10 readings each): published
    (acknowledged by the broker), committed, lost, stored with a wrong value, duplicate rows."""

    published: int
    committed: int
    lost: int
    wrong: int
    duplicates: int

    def line(self, name: str) -> str:
        return (
            f"{name}: published {self.published} samples, committed {self.committed}, lost {self.lost}, "
            f"wrong values {self.wrong}, duplicate rows {self.duplicates}"
        )


def tally(schema: str, fleet: Fleet, published: set[Key], *, dsn: str = TEST_DSN) -> Tally:
    """Compare the table with what the broker acknowledged (published) and what the fleet would hold; ``dsn`` for
    a test with a database server of its own."""
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema} -c timezone=UTC") as conn:
        row = conn.execute("SELECT count(*) - count(DISTINCT (machine_id, time)) FROM readings").fetchone()
        duplicates = int(str(row[0])) if row else 0
        cur = conn.execute(
            """SELECT m.name, (extract(epoch FROM r.time) * 1000)::bigint, r.vals
               FROM readings r JOIN machines m USING (machine_id)"""
        )
        stored = {(str(name), int(ms)): list(vals) for name, ms, vals in cur}
    expected = fleet.expected()
    committed = sum(k in stored for k in published)
    wrong = sum(stored[k] != expected.get(k) for k in stored)
    return Tally(len(published), committed, len(published) - committed, wrong, duplicates)


def count_rows_at(dsn: str, schema: str) -> int:
    """Rows in ``schema``'s readings on the server at ``dsn``; -1 while that server is down."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2, options=f"-c search_path={schema}") as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
            return int(str(row[0])) if row else 0
    except psycopg.OperationalError:
        return -1


def keyed(fleet: Fleet) -> list[tuple[str, bytes, list[Key]]]:
    """The fleet's messages, each with the (machine, timestamp) keys it carries, in publishing order."""
    keys = [
        [
            (fleet.machine(i).machine, fleet.start_ms + k * fleet.step_ms)
            for k in range(k0, min(k0 + fleet.per_message, fleet.samples))
        ]
        for k0 in range(0, fleet.samples, fleet.per_message)
        for i in range(fleet.machines)
    ]
    return [(t, p, k) for (t, p), k in zip(fleet.messages(), keys, strict=True)]
