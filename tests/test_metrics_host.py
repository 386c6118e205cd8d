"""metrics_host (WEARLINE_METRICS_HOST) binds every long-running command's metrics and health endpoint: issue 14
found metrics listening on every interface. Each command is started against a database port that refuses (it
waits, serving /healthz), with the endpoint on 127.0.0.2: it answers there and nowhere else on the host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tests._tools import stop_all
from tests.conftest import TEST_DSN, TEST_MQTT, unique
from wearline.mosquitto import free_port

STAGES = ("ingest", "analytics", "alerts", "api")


def _env(schema: str, host: str, ports: dict[str, int]) -> dict[str, str]:
    mqtt_host, mqtt_port = TEST_MQTT.rsplit(":", 1)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": make_conninfo(TEST_DSN, host="127.0.0.1", port=str(free_port())),
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__CONNECT_TIMEOUT_S": "2",
        "WEARLINE_MQTT__HOST": mqtt_host,
        "WEARLINE_MQTT__PORT": mqtt_port,
        "WEARLINE_MQTT__CLIENT_ID": unique("wlt-bind-"),
        "WEARLINE_TOPIC_PREFIX": unique("wlt-bind-"),
        "WEARLINE_METRICS_HOST": host,
        "WEARLINE_API__PORT": str(free_port()),
        **{f"WEARLINE_{stage.upper()}__METRICS_PORT": str(p) for stage, p in ports.items()},
    }


def _status(host: str, port: int) -> int | str:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.URLError as exc:
        return "refused" if isinstance(exc.reason, ConnectionRefusedError) else str(exc)


def test_every_stage_binds_its_endpoint_to_metrics_host(schema: str, tmp_path: Path) -> None:
    ports = {stage: free_port() for stage in STAGES}
    env = _env(schema, "127.0.0.2", ports)
    procs = {}
    logs = [(tmp_path / f"{stage}.log").open("wb") for stage in STAGES]
    for stage, log in zip(STAGES, logs, strict=True):
        procs[stage] = subprocess.Popen(
            [sys.executable, "-m", "wearline", stage], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        seen: dict[str, tuple[int | str, int | str]] = {}
        deadline = time.monotonic() + 60
        for stage, port in ports.items():
            while _status("127.0.0.2", port) != 200 and time.monotonic() < deadline:
                assert procs[stage].poll() is None, (tmp_path / f"{stage}.log").read_text()[-2000:]
                time.sleep(0.2)
            seen[stage] = (_status("127.0.0.2", port), _status("127.0.0.1", port))
        print(seen)
        assert seen == dict.fromkeys(STAGES, (200, "refused"))
    finally:
        stop_all(procs.values())
        for log in logs:
            log.close()


def test_an_address_that_is_not_this_hosts_is_one_line_naming_the_setting(schema: str) -> None:
    # 192.0.2.0/24 is reserved for documentation: no host has it.
    env = _env(schema, "192.0.2.1", {"ingest": free_port()})
    done = subprocess.run(
        [sys.executable, "-m", "wearline", "ingest"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    print(done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1, lines
    assert "cannot serve metrics on 192.0.2.1" in lines[0]
    assert "metrics_host (WEARLINE_METRICS_HOST)" in lines[0]
