"""`wearline demo` as a user runs it: the real command in a subprocess, against the real database and broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import TEST_DSN, TEST_MQTT, drop_schema, unique
from wearline.mosquitto import free_port

WEARLINE = str(Path(sys.executable).with_name("wearline"))


@pytest.fixture
def demo_env() -> Iterator[dict[str, str]]:
    schema = unique("wlt_demo_")
    host, port = TEST_MQTT.rsplit(":", 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_TOPIC_PREFIX": unique("wlt-demo-"),
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_INGEST__METRICS_PORT": "0",
    }
    yield env
    drop_schema(f"{schema}_demo")


def test_demo_with_the_broker_down_exits_within_its_timeout_saying_so(demo_env: dict[str, str]) -> None:
    port = free_port()  # nothing listens here
    started = time.monotonic()
    done = subprocess.run(
        [WEARLINE, "demo", "--timeout", "10"],
        env={**demo_env, "WEARLINE_MQTT__PORT": str(port), "WEARLINE_MQTT__CONNECT_TIMEOUT_S": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(f"demo with the broker down: exit {done.returncode} after {elapsed:.1f} s; stderr: {done.stderr[-300:]!r}")
    assert done.returncode == 2
    assert elapsed < 10 + 10, "within its timeout, plus start-up and the grace period"
    assert f"127.0.0.1:{port} is unreachable" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_interrupted_says_so(demo_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [WEARLINE, "demo", "--timeout", "120"],
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("demo:"), "the demo announced itself"
        time.sleep(2.0)  # into the run: stages up, fleet publishing
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    print(f"demo interrupted: exit {proc.returncode}; stderr:\n{err}")  # all of it: which stage did not stop
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "no ticket appeared" not in err
    assert "Traceback" not in err


def test_demo_raises_both_tickets_and_acknowledges_one_through_the_api(demo_env: dict[str, str]) -> None:
    """Issue 12, item 7: an anomaly ticket and a remaining-life ticket, both for the pump whose bearing the scenario
    wears out (pump-002) and none for the four healthy ones, the board's address, and an acknowledgement made
    through the REST API with a token of the ticket's tenant (the ticket's history names who did it)."""
    port = free_port()
    done = subprocess.run(
        [WEARLINE, "demo", "--timeout", "150"],
        env={**demo_env, "WEARLINE_API__PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Ticket #1 " in done.stdout
    # The ticket names the sensors of its first anomaly: the worn bearing's vibration, with its temperature when both
    # crossed in the same pass (timing decides which).
    assert re.search(
        r"Abnormal (bearing_temp, )?vibration_rms(, bearing_temp)? on acme/plant1/line1/pump-002", done.stdout
    )
    assert "Predicted failure of acme/plant1/line1/pump-002 in " in done.stdout
    assert "POST /api/v1/tickets/1/acknowledge -> status acknowledged, by demo via demo" in done.stdout
    assert f"Board: http://127.0.0.1:{port}/board" in done.stdout
    schema = f"{demo_env['WEARLINE_DATABASE__SCHEMA']}_demo"
    with psycopg.connect(TEST_DSN, options=f"-c search_path={schema}") as conn:
        status = conn.execute("SELECT status FROM tickets WHERE ticket_id = 1").fetchone()
        acks = conn.execute("SELECT actor, why FROM ticket_events WHERE ticket_id = 1 AND kind = 'status'").fetchall()
        tickets = conn.execute(
            "SELECT t.reason, m.name FROM tickets t JOIN machines m USING (machine_id) ORDER BY t.reason"
        ).fetchall()
        estimates = conn.execute(
            "SELECT m.name, min(r.lower_hours) FROM rul_estimates r JOIN machines m USING (machine_id) GROUP BY 1"
        ).fetchall()
    print(f"lowest remaining-life lower bound per pump: {estimates}")
    assert len(estimates) == 5, "every pump had its remaining life estimated"
    assert tickets == [("anomaly", "pump-002"), ("remaining_life", "pump-002")]
    assert status == ("acknowledged",)
    assert acks == [("demo via demo", "acknowledged through the API by the demo")]
