"""/healthz, /readyz and /metrics on every long-running process; a stage started before its database waits, not
ready, and becomes ready when the database answers (it used to exit 2, and Kubernetes restarted it in a loop)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import wearline
from tests._tools import http_get
from tests.conftest import TEST_DSN, TEST_MQTT, make_settings, unique
from tests.ingest._support import TcpProxy
from wearline.db import migrate
from wearline.gauges import NewestTimestamp
from wearline.health import Health, PassClock, serve_health
from wearline.mosquitto import free_port


def test_the_endpoints_answer_from_the_checks_and_nothing_else_is_served() -> None:
    registry = CollectorRegistry()
    now = [100.0]
    health = Health(stall_s=2.0, clock=lambda: now[0])
    health.declare("database", "broker")
    server = serve_health("127.0.0.1", free_port(), registry=registry, health=health, setting="ingest.metrics_port")
    assert server is not None
    try:
        status, body = http_get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {"alive": "ok", "broker": "starting", "database": "starting"}
        health.set("database", True)
        health.set("broker", False, "connection refused")
        assert json.loads(http_get(server.port, "/readyz")[1])["checks"]["broker"] == "connection refused"
        health.set("broker", True)
        status, body = http_get(server.port, "/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready")
        status, text = http_get(server.port, "/metrics")
        assert status == 200
        assert 'wearline_readiness_check{check="database"} 1.0' in text
        assert "wearline_ready 1.0" in text
        build = [line for line in text.splitlines() if line.startswith("wearline_build_info{")]
        assert build == [
            f'wearline_build_info{{python_version="{platform.python_version()}",version="{wearline.__version__}"}} 1.0'
        ]
        # The loop stalls: ten times the limit without a beat.
        now[0] += 20.0
        status, body = http_get(server.port, "/healthz")
        assert (status, json.loads(body)["status"]) == (503, "event loop stalled for 20 s")
        assert http_get(server.port, "/readyz")[0] == 503
        health.beat()
        assert http_get(server.port, "/healthz")[0] == 200
        assert http_get(server.port, "/")[0] == 404, "the metrics used to be served on every path"
    finally:
        server.shutdown()
        server.server_close()


def test_a_pass_clock_fails_keeping_up_past_its_limit() -> None:
    health = Health()
    clock = PassClock(health, 0.05)
    assert health.checks()["keeping_up"][0]
    time.sleep(0.5)  # ten times the limit
    ok, why = health.checks()["keeping_up"]
    assert not ok
    assert why.startswith("no pass completed for")
    clock.passed()
    assert health.checks()["keeping_up"][0]


def test_a_newest_timestamp_is_absent_until_set_and_never_goes_back() -> None:
    registry = CollectorRegistry()
    newest = NewestTimestamp("wearline_test_newest_timestamp_seconds", "test", registry=registry)
    assert registry.get_sample_value("wearline_test_newest_timestamp_seconds") is None
    newest.observe(1_700_000_000.0)
    newest.observe(1_600_000_000.0)
    assert registry.get_sample_value("wearline_test_newest_timestamp_seconds") == 1_700_000_000.0


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _wait(what: str, condition: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    # In a thread: a request that reaches the database goes through the proxy, which this loop runs.
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_stages_started_without_their_database_wait_not_ready_then_start(schema: str, tmp_path: Path) -> None:
    settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    info = conninfo_to_dict(TEST_DSN)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    await proxy.start()
    await proxy.cut()  # the database "is down": connections to the proxy's port are refused
    dsn = make_conninfo(TEST_DSN, host="127.0.0.1", port=str(proxy.port))
    host, port = TEST_MQTT.rsplit(":", 1)
    ports = {stage: free_port() for stage in ("ingest", "analytics", "alerts", "api")}
    api_port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}
    base |= {
        "WEARLINE_DATABASE__DSN": dsn,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__CONNECT_TIMEOUT_S": "2",
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_MQTT__CLIENT_ID": unique("wlt-health-"),
        "WEARLINE_TOPIC_PREFIX": unique("wlt-health-"),
        "WEARLINE_METRICS_HOST": "127.0.0.1",
        "WEARLINE_API__PORT": str(api_port),
        **{f"WEARLINE_{stage.upper()}__METRICS_PORT": str(p) for stage, p in ports.items()},
    }
    procs = {}
    logs = {}
    for stage in ports:
        logs[stage] = (tmp_path / f"{stage}.log").open("wb")
        procs[stage] = subprocess.Popen(  # noqa: ASYNC220 (once, at the start; the loop runs the proxy they use)
            [sys.executable, "-m", "wearline", stage], env=base, stdout=logs[stage], stderr=subprocess.STDOUT
        )
    try:
        for stage, p in ports.items():
            await _wait(f"{stage} to answer /readyz", lambda p=p: http_get(p, "/readyz")[0] == 503)
            body = http_get(p, "/readyz")[1]
            checks = json.loads(body)["checks"]
            print(stage, "before the database:", checks)
            assert "cannot connect" in checks["database"], checks
            assert http_get(p, "/healthz")[0] == 200, f"{stage} is alive while it waits"
            assert _metric(http_get(p, "/metrics")[1], 'wearline_readiness_check{check="database"}') == 0.0
        await asyncio.sleep(3)  # several attempts: they keep waiting instead of exiting
        exited = {s: p.returncode for s, p in procs.items() if p.poll() is not None}
        assert exited == {}, {s: (tmp_path / f"{s}.log").read_text()[-2000:] for s in exited}
        await proxy.restore()
        for stage, p in ports.items():
            await _wait(f"{stage} to be ready", lambda p=p: http_get(p, "/readyz")[0] == 200)
            print(stage, "after:", json.loads(http_get(p, "/readyz")[1])["checks"])
        await _wait("the API's own port", lambda: http_get(api_port, "/readyz")[0] == 200)
        assert json.loads((await asyncio.to_thread(http_get, api_port, "/readyz"))[1]) == {"status": "ready"}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for stage, proc in procs.items():
            try:
                codes[stage] = await asyncio.to_thread(proc.wait, 30)  # the proxy must go on serving meanwhile
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[stage] = proc.wait()
            logs[stage].close()
        await proxy.close()
    assert codes == dict.fromkeys(ports, 0), {s: (tmp_path / f"{s}.log").read_text()[-2000:] for s in ports}
