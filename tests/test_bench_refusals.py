"""The benchmarks refuse options that describe no run (issue 10, item 6), as a process: exit 2, one line naming the
option, no traceback, and before any work (no broker, schema or data is made; each refusal comes back in seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_DSN, TEST_MQTT

WEARLINE = str(Path(sys.executable).with_name("wearline"))

CASES = [
    # bench analytics: before, each of these but --history 0 ended in a numpy or scikit-learn traceback
    (("analytics", "--machines", "0"), "--machines"),
    (("analytics", "--machines", "-5"), "--machines"),
    (("analytics", "--sensors", "0"), "--sensors"),
    (("analytics", "--rows", "0"), "--rows"),
    (("analytics", "--history", "0"), "--history"),
    (("analytics", "--seed", "-1"), "--seed"),
    # bench ingest: before, --profile 0 and -10 ran the whole benchmark (bad_schema dead letters, negative
    # throughput, exit 0) and --rate inf / --duration inf passed their lower bounds
    (("ingest", "--machines", "0"), "--machines"),
    (("ingest", "--sensors", "0"), "--sensors"),
    (("ingest", "--workers", "0"), "--workers"),
    (("ingest", "--profile", "0"), "--profile"),
    (("ingest", "--profile", "-10"), "--profile"),
    (("ingest", "--rate", "-1"), "--rate"),
    (("ingest", "--rate", "inf"), "--rate"),
    (("ingest", "--duration", "inf"), "--duration"),
    # bench ingest against another service (issue 17 item 3): refused before anything is published; the other
    # refusals of these options are checked in-process in tests/ingest/test_bench_peer.py
    (("ingest", "--broker", "localhost"), "--broker"),
    (("ingest", "--count-sql", "SELECT 1"), "--count-sql"),
    (("ingest", "--broker", TEST_MQTT, "--sparkplug"), "--sparkplug"),
    (
        ("ingest", "--broker", TEST_MQTT, "--count-dsn", TEST_DSN, "--count-sql", "SELECT count(*) FROM no_such"),
        "--count-sql",
    ),
    # a drain (issue 17): of no negative backlog, and never of another service, whose processes it cannot restart
    (("ingest", "--backlog", "-1"), "--backlog"),
    (("ingest", "--backlog", "10", "--sparkplug"), "--backlog"),
    (
        ("ingest", "--broker", TEST_MQTT, "--count-dsn", TEST_DSN, "--count-sql", "SELECT 0", "--backlog", "10"),
        "--backlog",
    ),
    # bench dashboards: a fleet of none, or dashboards that are not there, before any schema is loaded
    (("dashboards", "--machines", "0"), "--machines"),
    (("dashboards", "--repeat", "0"), "--repeat"),
    (("dashboards", "--dashboards", "/nonexistent/dashboards"), "--dashboards"),
]


@pytest.mark.parametrize(("args", "option"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_benchmark_refuses_an_impossible_option_in_one_line(args: tuple[str, ...], option: str) -> None:
    host, port = TEST_MQTT.rsplit(":", 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "COLUMNS": "100",
    }
    started = time.monotonic()
    # The default duration is 60 s per profile: a run that was not refused cannot finish within the timeout.
    done = subprocess.run([WEARLINE, "bench", *args], env=env, capture_output=True, text=True, timeout=50, check=False)
    took = time.monotonic() - started
    print(f"wearline bench {' '.join(args)}: exit {done.returncode} in {took:.1f} s; stderr: {done.stderr!r}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    # Our own refusals are `error: --option ...`; Typer's range checks print `Invalid value for '--option': ...`.
    naming = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(f"error: {option} ") or f"Invalid value for '{option}'" in line
    ]
    assert len(naming) == 1, done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("error:")]) <= 1
