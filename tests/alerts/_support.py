"""Helpers for the alerts tests: `wearline api` as a user starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tests.conftest import TEST_DSN
from wearline.cli import app
from wearline.mosquitto import free_port

WEARLINE = str(Path(sys.executable).with_name("wearline"))


@contextlib.contextmanager
def served_api(schema: str) -> Iterator[tuple[int, dict[str, str]]]:
    """`wearline api` as a user starts it, on a free port; SIGTERM at the end must end it with 0."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}
    env |= {
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_API__PORT": str(port),
        "WEARLINE_API__METRICS_PORT": "0",
    }
    api = subprocess.Popen([WEARLINE, "api"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                assert api.poll() is None, api.communicate()[0]
                assert time.monotonic() < deadline, "the API did not answer within 30 s"
                time.sleep(0.2)
        yield port, env
    finally:
        api.send_signal(signal.SIGTERM)
        out = api.communicate(timeout=30)[0]
        print(out)
    assert api.returncode == 0, out


def cli(schema: str, *args: str) -> tuple[int, str]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WEARLINE_")}
    env |= {"WEARLINE_DATABASE__DSN": TEST_DSN, "WEARLINE_DATABASE__SCHEMA": schema}
    result = CliRunner().invoke(app, list(args), env=env)
    print(f"$ wearline {' '.join(args)} -> exit {result.exit_code}\n{result.stdout}{result.stderr}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr
