"""The README's commands run as written: every line of every ```sh block is run here or by a CI step.

Lines run verbatim, in a folder of the test's own that sees the checkout's deploy/, but for three things a test must change: `.venv/bin/wearline` is this environment's command,
paths under /tmp go to the test's own folder, and long runs get options appended that shorten them (for Typer the
last of a repeated option wins). Each run has its own schema and topic prefix, and its metrics off.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import simulators
from tests.conftest import TEST_DSN, TEST_MQTT, drop_schema, unique
from wearline.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
WEARLINE = str(Path(sys.executable).with_name("wearline"))

# Appended to a README line in tests, to keep the suite short; the line itself is what a user runs.
SHORTER = {
    "simulate --mode offline": ["--units", "10"],
    "rul fit": [],
    "eval": ["--detectors", "knn", "--models", "gbm"],
    "bench ingest": ["--duration", "2", "--profile", "10"],
    "bench simulate": ["--duration", "1", "--machines", "200"],
    "bench analytics": ["--machines", "50", "--rows", "2000", "--history", "20"],
    "bench layout": ["--samples", "1000"],
    "bench dashboards": ["--machines", "200", "--repeat", "1"],
    # The plant's last hour at x600 (six seconds), then stop, instead of an hour in a minute, then real time.
    "simulate --scenario": ["--time-scale", "600", "--steps", "3600"],
}
# The live block's long-running stages: started in the background, as a user does in other terminals or with &.
STAGES = {"ingest", "analytics", "alerts"}


def sh_blocks() -> list[list[str]]:
    """Each ```sh block of the README as its command lines, comments dropped."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        lines = [re.split(r"\s+#\s", line)[0].strip() for line in block.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def block_with(first: str) -> list[str]:
    """The README block whose first line starts with ``first``."""
    found = [b for b in sh_blocks() if b and b[0].startswith(first)]
    assert len(found) == 1, f"one README block starts with {first!r}"
    return found[0]


def wearline_args(line: str, tmp: Path) -> list[str]:
    words = shlex.split(line.replace("/tmp/", f"{tmp}/"))
    assert words[0] == ".venv/bin/wearline", line
    args = words[1:]
    for prefix, extra in SHORTER.items():
        if " ".join(args).startswith(prefix):
            args += extra
    return args


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    schema = unique("wlt_readme_")
    host, port = TEST_MQTT.rsplit(":", 1)
    yield {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_TOPIC_PREFIX": unique("wlt-readme-"),
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_MQTT__CLIENT_ID": unique("wlt-readme-"),
        "WEARLINE_INGEST__METRICS_PORT": "0",
        "WEARLINE_ANALYTICS__METRICS_PORT": "0",
        "WEARLINE_ALERTS__METRICS_PORT": "0",
    }
    drop_schema(schema)


def see_deploy(cwd: Path) -> None:
    """The README's paths are relative to the checkout (deploy/...); its outputs go to the test's folder."""
    if not (cwd / "deploy").exists():
        (cwd / "deploy").symlink_to(ROOT / "deploy")


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> str:
    see_deploy(cwd)
    started = time.monotonic()
    done = subprocess.run(
        [WEARLINE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"wearline {shlex.join(args)}: exit {done.returncode} in {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_quick_start_is_two_commands_and_ci_runs_both() -> None:
    assert block_with("./dev") == ["./dev demo", "./dev test"]
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert any(re.search(r"(^|\s)\./dev test\b", line) for line in commands), ".ci/run runs the test command"
    assert any(re.search(r"(^|\s)\./dev demo\b", line) for line in commands), ".ci/run runs the demo command"


def _user_exports(data: Path, tmp: Path) -> None:
    """normal.csv and new.csv stand for the user's own exports in the README: pumps' early life and a later stretch."""
    with (data / "train.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["machine_type"] == "centrifugal_pump"]
    assert rows, "the simulated fleet has pumps"
    names = [n for n in rows[0] if rows[0][n] != "" and n not in ("unit", "time", "machine_type", "condition")]
    for name, early in (("normal.csv", True), ("new.csv", False)):
        with (tmp / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["machine", *names])
            w.writerows([[r["unit"], *(r[n] for n in names)] for r in rows if (float(r["time"]) < 150) == early])


@pytest.mark.timeout(360)  # several trainings in a row; 120 s was crossed on a loaded 2-core machine
def test_offline_block_runs_as_written(env: dict[str, str], tmp_path: Path) -> None:
    lines = block_with(".venv/bin/wearline simulate --mode offline")
    for line in lines:
        args = wearline_args(line, tmp_path)
        if args[:2] == ["anomaly", "fit"] and not (tmp_path / "normal.csv").exists():
            _user_exports(tmp_path / "sim-data", tmp_path)
        if args[:2] == ["models", "register"]:
            run(["db", "migrate"], env, tmp_path)
        out = run(args, env, tmp_path, timeout=300)
        if args[:2] == ["rul", "predict"]:
            header = out.splitlines()[0].split(",")
            assert header == ["unit", "time", "rul", "lower", "upper"]
            assert len(out.splitlines()) > 1
        if args[0] == "eval":
            assert out.splitlines()[-1].startswith("{"), "eval ends with its JSON line"
    with psycopg.connect(TEST_DSN) as conn:
        n = conn.execute(f"SELECT count(*) FROM {env['WEARLINE_DATABASE__SCHEMA']}.models").fetchone()
    assert n is not None
    assert n[0] == 1, "models register stored the model"


@pytest.mark.timeout(360)  # several trainings in a row; 120 s was crossed on a loaded 2-core machine
def test_benchmark_block_runs_as_written(env: dict[str, str], tmp_path: Path) -> None:
    lines = block_with(".venv/bin/wearline bench")
    assert {" ".join(shlex.split(line)[1:3]) for line in lines} == {
        "bench ingest",
        "bench simulate",
        "bench analytics",
        "bench layout",
        "bench dashboards",
    }
    for line in lines:
        out = run(wearline_args(line, tmp_path), env, tmp_path, timeout=300)
        assert out.splitlines()[-1].startswith("{"), f"{line} ends with its JSON line"


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def test_live_block_runs_as_written_and_the_faulty_pump_gets_its_ticket(env: dict[str, str], tmp_path: Path) -> None:
    """Issue 10, item 2: the README's live example put 94 % of messages in ts_future dead letters and raised no
    ticket. Its lines run here as written: the stages in the background, the plant's hour at x600, then the
    tickets, polled as a user would re-run the command."""
    lines = block_with(".venv/bin/wearline db migrate")
    see_deploy(tmp_path)
    stages: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    scenario = None
    try:
        for line in lines:
            args = wearline_args(line, tmp_path)
            if args[0] in STAGES:
                logs[args[0]] = tmp_path / f"{args[0]}.log"
                with logs[args[0]].open("wb") as log:
                    stages[args[0]] = subprocess.Popen(
                        [WEARLINE, *args], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
                    )
                if args[0] == "ingest":
                    # A user starts ingest first and it subscribes within a second; the test waits for it.
                    _wait_for_line(logs["ingest"], "subscribed to", stages["ingest"], 30)
                continue
            if args[0] == "simulate":
                scenario = simulators.load_scenario(tmp_path / args[args.index("--scenario") + 1])
                run(args, env, tmp_path)
                continue
            if args[:2] == ["tickets", "list"]:
                # A user re-runs the command until the ticket shows; on a loaded 2-core machine (CI beside other
                # jobs) analytics can lag the accelerated plant by a minute.
                deadline = time.monotonic() + 120
                while "pump-002" not in (out := run(args, env, tmp_path)) and time.monotonic() < deadline:
                    time.sleep(1)
                print(out)
                stage_logs = {n: logs[n].read_text()[-1500:] for n in ("analytics", "alerts") if n in logs}
                assert "pump-002" in out, f"the pump with the injected bearing wear has no ticket: {stage_logs}"
                continue
            run(args, env, tmp_path)
        assert set(stages) == STAGES, "the README starts every stage"
    finally:
        for proc in stages.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=30) for name, proc in stages.items()}
    assert codes == dict.fromkeys(STAGES, 0), {n: logs[n].read_text()[-1500:] for n in STAGES if codes.get(n)}
    assert scenario is not None, "the README's block simulates the plant"
    with psycopg.connect(TEST_DSN, options=f"-c search_path={env['WEARLINE_DATABASE__SCHEMA']}") as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()
        dead = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
    print(f"readings {readings}; dead letters {dead}")
    assert dead == [], "no sample is stamped ahead of the wall clock, so none is a ts_future dead letter"
    assert readings == (scenario.machines * 3600,), "every sample of the plant's hour is one reading"


def test_every_readme_command_is_run_somewhere() -> None:
    claimed = [
        block_with("./dev"),
        block_with(".venv/bin/wearline simulate --mode offline"),
        block_with(".venv/bin/wearline bench"),
        block_with(".venv/bin/wearline api"),
        *[b for b in sh_blocks() if b and b[0].startswith(".venv/bin/wearline db migrate")],
    ]
    unclaimed = [line for block in sh_blocks() for line in block if not any(line in b for b in claimed)]
    assert unclaimed == []


def test_maintenance_block_runs_as_written(env: dict[str, str], tmp_path: Path) -> None:
    """The API in the background, a token, a ticket shown and acknowledged, a webhook added, on a plant with one
    ticket (#1) as the alerts worker would have opened it."""
    lines = block_with(".venv/bin/wearline api")
    run(["db", "migrate"], env, tmp_path)
    with psycopg.connect(TEST_DSN, options=f"-c search_path={env['WEARLINE_DATABASE__SCHEMA']}") as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name)
                          SELECT (SELECT tenant_id FROM t), line_id, 'pump-002' FROM l RETURNING machine_id, tenant_id)
               INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
               SELECT tenant_id, machine_id, 'anomaly', 2, 'Abnormal vibration_rms on pump-002', now(), now() FROM m"""
        )
    api_env = {**env, "WEARLINE_API__PORT": str(free_port()), "WEARLINE_API__METRICS_PORT": "0"}
    api: subprocess.Popen[bytes] | None = None
    log = tmp_path / "api.log"
    outputs = []
    try:
        for line in lines:
            args = wearline_args(line, tmp_path)
            if args == ["api"]:
                with log.open("wb") as out:
                    api = subprocess.Popen([WEARLINE, *args], env=api_env, cwd=tmp_path, stdout=out, stderr=out)
                _wait_for_line(log, "API on http://", api, 30)
                continue
            outputs.append(run(args, api_env, tmp_path))
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            assert api.wait(timeout=30) == 0, log.read_text()[-2000:]
    assert api is not None, "the block starts the API"
    assert outputs[0].splitlines()[1].startswith("wlt_"), "the token is printed"
    assert "Abnormal vibration_rms on pump-002" in outputs[1]
    assert outputs[2] == "#1 acknowledged\n"
    assert "vibration-zone" in outputs[3]
    assert "webhook #1 for tenant acme" in outputs[4]
