"""Helpers for ingest's tests: a QoS 1 publisher, expected rows, database counts, a cuttable TCP proxy and an
ingest process of its own. Real broker and database throughout; the proxy only cuts the wire, like an outage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import TEST_DSN, unique
from wearline.settings import Settings
from wearline.topics import MachinePath, telemetry_topic
from wearline.wire import Sample, encode_message

SENSORS = [f"s{i}" for i in range(10)]

Key = tuple[str, int]  # (machine name, epoch ms)


@dataclass(frozen=True)
class Fleet:
    """Messages for ``machines`` machines, ``samples`` instants each, ``per_message`` instants per message."""

    prefix: str
    machines: int
    samples: int
    start_ms: int
    step_ms: int = 1000
    per_message: int = 1
    tenant: str = "acme"

    def machine(self, i: int) -> MachinePath:
        return MachinePath(self.tenant, "site1", "line1", f"m{i:04d}")

    def value(self, i: int, k: int, s: int) -> float:
        return i * 1000.0 + k + s / 16

    def messages(self) -> Iterator[tuple[str, bytes]]:
        """Interleaved by instant across machines, as a fleet of gateways would publish."""
        for k0 in range(0, self.samples, self.per_message):
            for i in range(self.machines):
                samples = [
                    Sample(self.start_ms + k * self.step_ms, {n: self.value(i, k, s) for s, n in enumerate(SENSORS)})
                    for k in range(k0, min(k0 + self.per_message, self.samples))
                ]
                yield telemetry_topic(self.prefix, self.machine(i)), encode_message(samples, "pump")

    def expected(self) -> dict[Key, list[float]]:
        return {
            (self.machine(i).machine, self.start_ms + k * self.step_ms): [
                self.value(i, k, s) for s in range(len(SENSORS))
            ]
            for i in range(self.machines)
            for k in range(self.samples)
        }

    @property
    def rows(self) -> int:
        return self.machines * self.samples


def publish(host: str, port: int, messages: Iterable[tuple[str, bytes]], *, rate: float | None = None) -> int:
    """Publish at QoS 1 and wait for every PUBACK (bounded in flight: paho stalls at 65,535 unacknowledged)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("wlt-pub-"), protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    sent = 0
    pending: list[paho.MQTTMessageInfo] = []
    started = time.monotonic()
    try:
        for topic, payload in messages:
            pending.append(client.publish(topic, payload, qos=1))
            sent += 1
            if len(pending) >= 500:
                for info in pending:
                    info.wait_for_publish(30)
                pending.clear()
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        for info in pending:
            info.wait_for_publish(30)
            assert info.is_published(), "broker did not acknowledge a publish"
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def connect_db(schema: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(TEST_DSN, autocommit=True, options=f"-c search_path={schema} -c timezone=UTC")


def count_rows(schema: str) -> int:
    with connect_db(schema) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(str(row[0])) if row else 0


def stored_rows(schema: str) -> dict[Key, list[float | None]]:
    with connect_db(schema) as conn:
        cur = conn.execute(
            """SELECT m.name, (extract(epoch FROM r.time) * 1000)::bigint, r.vals
               FROM readings r JOIN machines m USING (machine_id)"""
        )
        return {(str(name), int(ms)): list(vals) for name, ms, vals in cur}  # type: ignore[call-overload]


def wait_for_rows(schema: str, n: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (got := count_rows(schema)) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def ingest_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``wearline ingest`` run with ``settings`` (the ones our tests vary)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEARLINE_")}
    env.update(
        {
            "WEARLINE_TOPIC_PREFIX": settings.topic_prefix,
            "WEARLINE_MQTT__HOST": settings.mqtt.host,
            "WEARLINE_MQTT__PORT": str(settings.mqtt.port),
            "WEARLINE_MQTT__CLIENT_ID": settings.mqtt.client_id,
            "WEARLINE_MQTT__PROTOCOL": settings.mqtt.protocol,
            "WEARLINE_DATABASE__DSN": settings.database.dsn,
            "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name,
            "WEARLINE_INGEST__METRICS_PORT": "0",
            "WEARLINE_INGEST__BATCH_MAX_DELAY_MS": str(settings.ingest.batch_max_delay_ms),
            "WEARLINE_INGEST__BATCH_MAX_MESSAGES": str(settings.ingest.batch_max_messages),
        }
    )
    return env


@contextlib.contextmanager
def worker(
    env: dict[str, str], log: Path, *, wait_for: bytes | None = b"subscription scheme", command: str = "ingest"
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m wearline <command>`` with ``env``, returned once ``wait_for`` appears in its log once more (at
    once with None); terminated (SIGTERM) on the way out if still running."""
    before = log.read_bytes().count(wait_for) if wait_for is not None and log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wearline", *command.split()], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while wait_for is not None and log.read_bytes().count(wait_for) == before:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{command} did not log {wait_for!r}: {log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def ingest_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m wearline ingest`` in a process of its own, returned once it holds its subscription."""
    with worker(ingest_env(settings), log, wait_for=b"subscribed to") as proc:
        yield proc


def proxied_dsn(dsn: str, port: int) -> str:
    """``dsn`` with its server reached through a local proxy on ``port``; user, password and database kept."""
    info = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "hostaddr"}
    return make_conninfo("", **{**info, "host": "127.0.0.1", "port": str(port)})


def dsn_server(dsn: str) -> tuple[str, int]:
    """The TCP address of the server ``dsn`` names, which a proxy forwards to (the test skips if there is none)."""
    info = conninfo_to_dict(dsn)
    host = str(info.get("hostaddr") or info.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        pytest.skip(f"WEARLINE_TEST_DSN reaches its server through {host or 'a Unix socket'}, not one TCP address")
    return host, int(str(info.get("port") or 5432))


class TcpProxy:
    """A TCP forwarder on a free local port that can cut every connection and refuse new ones, then recover."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the listener (new connections are refused) and reset every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
