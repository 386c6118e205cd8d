"""The `wearline simulate` command: offline files from the CLI, and a tiny load run that ends with its JSON line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest._bench import own_broker
from simulators import TRUTH_COLUMNS, MachineGroup, PublishError, Scenario, publish_fleet, run_load
from tests.conftest import TEST_MQTT, make_settings, unique
from wearline.cli import app
from wearline.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
WEARLINE = str(Path(sys.executable).with_name("wearline"))


def test_offline_mode_writes_the_five_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--mode",
            "offline",
            "--scenario",
            str(ROOT / "deploy/scenarios/offline_pumps.toml"),
            "--units",
            "3",
            "--test-units",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 train units" in result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["test.csv", "test_rul.csv", "test_truth.csv", "train.csv", "train_truth.csv"]
    assert (tmp_path / "train_truth.csv").read_text().splitlines()[0] == ",".join(TRUTH_COLUMNS)
    assert len((tmp_path / "test_rul.csv").read_text().splitlines()) == 3


def test_a_bad_fault_is_refused_with_its_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--mode", "offline", "--out", str(tmp_path), "--fault", "1:bearing_wear"]
    )
    assert result.exit_code != 0
    assert "MACHINE:KIND:ONSET_S" in result.output


def test_load_mode_publishes_and_reports() -> None:
    settings = make_settings(unique("wlt_"), unique("wlt/"))
    result = run_load(
        settings.mqtt,
        f"{settings.topic_prefix}-load",
        Scenario(groups=(MachineGroup("cnc_spindle", 1), MachineGroup("air_compressor", 1))),
        machines=50,
        duration_s=0.5,
        batch_samples=2,
    )
    assert result.machines == 50
    assert result.messages > 0
    assert result.samples == 2 * result.messages
    figures = json.loads(result.json())
    assert figures["messages"] == result.messages
    assert figures["qos"] == 0


def _wearline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    host, port = TEST_MQTT.rsplit(":", 1)
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_TOPIC_PREFIX": unique("wlt-cli-"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [WEARLINE, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, check=False
    )
    print(f"wearline {' '.join(args)}: exit {done.returncode} in {time.monotonic() - started:.1f} s: {done.stderr!r}")
    return done


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_an_unreachable_broker_is_one_line_naming_it_and_the_settings() -> None:
    port = free_port()  # nothing listens there once the socket is closed
    line = _error_line(
        _wearline(
            "simulate", "--mode", "accelerated", "--steps", "5",
            env={"WEARLINE_MQTT__PORT": str(port), "WEARLINE_MQTT__CONNECT_TIMEOUT_S": "3"},
        )
    )  # fmt: skip
    assert f"127.0.0.1:{port}" in line
    assert "unreachable" in line
    assert "WEARLINE_MQTT__HOST" in line
    assert "WEARLINE_MQTT__PORT" in line


def test_offline_output_must_be_a_folder_whose_parent_exists(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    line = _error_line(_wearline("simulate", "--mode", "offline", "--units", "2", "--out", str(missing)))
    assert f"--out {missing}" in line
    assert "does not exist" in line
    assert not (tmp_path / "no").exists()
    a_file = tmp_path / "data"
    a_file.write_text("mine\n")
    line = _error_line(_wearline("simulate", "--mode", "offline", "--units", "2", "--out", str(a_file)))
    assert "is a file, not a folder" in line
    assert a_file.read_text() == "mine\n", "the file is left alone"


def test_an_accelerated_stretch_older_than_ingest_keeps_is_refused() -> None:
    line = _error_line(
        _wearline("simulate", "--mode", "accelerated", "--steps", "200000",
                  env={"WEARLINE_INGEST__MAX_PAST_DAYS": "1"})
    )  # fmt: skip
    assert "--steps 200000" in line
    assert "WEARLINE_INGEST__MAX_PAST_DAYS" in line


def test_an_accelerated_run_says_which_span_it_covers_and_ends_at_now() -> None:
    done = _wearline("simulate", "--mode", "accelerated", "--time-scale", "600", "--steps", "600", "--machines", "2")
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first.startswith("simulating ")
    assert "(10 min) at x600, about 1 s of wall time, reaching now as it ends; then stops" in first
    assert last.startswith("published 1200 messages (1200 samples) over 600 steps")
    assert "back-pressure: 0 episodes" in last
    assert "pending publish" not in done.stderr


async def test_a_broker_lost_mid_run_is_a_publish_error_naming_it() -> None:
    with own_broker() as (port, proc):
        settings = make_settings(unique("wlt_"), unique("wlt/"), mqtt={"port": port, "connect_timeout_s": 2})
        asyncio.get_running_loop().call_later(1.0, proc.terminate)
        began = time.monotonic()
        with pytest.raises(PublishError) as caught:
            await publish_fleet(
                settings.mqtt,
                settings.topic_prefix,
                Scenario(groups=(MachineGroup("centrifugal_pump", 3),)),
                asyncio.Event(),
                time_scale=20,
            )
        lasted = time.monotonic() - began
    print(f"lost after {lasted:.1f} s: {caught.value}")
    assert f"lost the MQTT broker at 127.0.0.1:{port} after " in str(caught.value)
    assert lasted < 1.0 + 2 * 2 + 2  # the loss, then at most the PUBACK wait (connect_timeout_s) and some slack
