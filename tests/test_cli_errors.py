"""Ordinary mistakes end a command with one line that names the problem, exit status 2, and no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_DSN, TEST_MQTT, unique

WEARLINE = str(Path(sys.executable).with_name("wearline"))


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    host, port = TEST_MQTT.rsplit(":", 1)
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
    }
    done = subprocess.run(
        [WEARLINE, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"wearline {' '.join(args)}: exit {done.returncode}; stderr: {done.stderr[-400:]!r}")
    return done


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_rul_fit_checks_its_output_folder_before_it_reads_or_trains(tmp_path: Path) -> None:
    # The training file does not exist either: the --out error coming first shows the check runs before any work.
    line = _one_error_line(
        _run("rul", "fit", "--train", str(tmp_path / "absent.csv"), "--unit", "u", "--time", "t", "--out",
             str(tmp_path / "no-such-folder" / "rul.model"))
    )  # fmt: skip
    assert "--out" in line
    assert "no-such-folder" in line
    assert "does not exist" in line


def test_predict_and_score_check_their_output_folder(tmp_path: Path) -> None:
    for group in ("rul", "anomaly"):
        verb = "predict" if group == "rul" else "score"
        line = _one_error_line(
            _run(group, verb, "--model", str(tmp_path / "m.model"), "--data", str(tmp_path / "d.csv"), "--out",
                 str(tmp_path / "missing" / "out.csv"))
        )  # fmt: skip
        assert "--out" in line
        assert "missing" in line


def test_a_second_process_on_a_taken_metrics_port_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(
            "ingest",
            env={
                "WEARLINE_INGEST__METRICS_PORT": str(port),
                "WEARLINE_DATABASE__SCHEMA": unique("wlt_port_"),
                "WEARLINE_TOPIC_PREFIX": unique("wlt-port-"),
            },
            timeout=30,
        )
    line = _one_error_line(done)
    assert f"port {port}" in line
    assert "WEARLINE_INGEST__METRICS_PORT" in line


def test_a_broken_broker_setting_stops_online_commands_only(tmp_path: Path) -> None:
    bad = {"WEARLINE_MQTT__PORT": "70000", "WEARLINE_INGEST__METRICS_PORT": "0"}
    offline = _one_error_line(
        _run("rul", "fit", "--train", str(tmp_path / "absent.csv"), "--unit", "u", "--time", "t", "--out",
             str(tmp_path / "rul.model"), env=bad)
    )  # fmt: skip
    assert "absent.csv" in offline, "the offline command ran past the settings to its own input"
    online = _run("ingest", env=bad)
    assert online.returncode == 2
    assert "mqtt.port (WEARLINE_MQTT__PORT)" in online.stderr
