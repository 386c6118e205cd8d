"""A schema nobody migrated: every command that uses the schema says so in one line naming it and the fix.

Each command runs as the installed ``wearline`` in a process of its own (as a user runs it, so that a traceback
would show), all of them at once: each costs seconds of imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from analytics import AnomalyModel, read_table, save_model
from tests.conftest import TEST_DSN, TEST_MQTT, make_settings, unique
from wearline.db import NotMigrated, available_migrations, connect, migrate, require_migrated
from wearline.settings import Settings

WEARLINE = str(Path(sys.executable).with_name("wearline"))


def _model_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    rows = ["a,b"] + [f"{rng.normal()},{rng.normal()}" for _ in range(60)]
    (tmp_path / "normal.csv").write_text("\n".join(rows) + "\n")
    model = AnomalyModel.fit(read_table(tmp_path / "normal.csv"), detector="mahalanobis")
    save_model(model, tmp_path / "a.model", "anomaly", {"detector": "mahalanobis"})
    return tmp_path / "a.model"


def test_every_command_on_a_schema_never_migrated_is_one_line(schema: str, tmp_path: Path) -> None:
    model = _model_file(tmp_path)
    commands = [
        ["tickets", "list"],
        ["tickets", "show", "1"],
        ["tickets", "ack", "1"],
        ["models", "register", str(model), "--machine-type", "centrifugal_pump"],
        ["models", "list"],
        ["analytics"],
        ["alerts"],
        ["dead-letters", "list"],
        ["db", "info"],
        ["ingest"],
    ]
    host, port = TEST_MQTT.rsplit(":", 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
        "WEARLINE_TOPIC_PREFIX": unique("wlt-never-"),
        # The stages must stop before they serve anything; no port of their own, in case they did not.
        "WEARLINE_INGEST__METRICS_PORT": "0",
        "WEARLINE_ANALYTICS__METRICS_PORT": "0",
        "WEARLINE_ALERTS__METRICS_PORT": "0",
    }
    running = [
        (args, subprocess.Popen([WEARLINE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for args in commands
    ]
    failures = []
    for args, proc in running:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            failures.append(f"wearline {' '.join(args)}: still running after 60 s")
            continue
        print(f"wearline {' '.join(args)}: exit {proc.returncode}; stderr {err!r}")
        lines = err.splitlines()
        if proc.returncode != 2 or "Traceback" in err or len(lines) != 1:
            failures.append(f"wearline {' '.join(args)}: exit {proc.returncode}, {len(lines)} stderr line(s)")
        elif not (lines[0].startswith("error: ") and repr(schema) in lines[0] and "`wearline db migrate`" in lines[0]):
            failures.append(f"wearline {' '.join(args)}: {lines[0]!r}")
    assert failures == []
    with psycopg.connect(TEST_DSN) as conn:
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
    assert found == (0,), "a command that only reads created the schema"


async def test_a_schema_behind_this_wearline_names_both_versions(schema: str) -> None:
    settings: Settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    # The one before the newest, not newest - 1: migrations written side by side may land out of number order.
    previous, latest = (m.version for m in available_migrations()[-2:])
    async with await connect(settings.database, autocommit=True) as conn:
        assert await require_migrated(conn, schema) == "native"
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE version = %s").format(sql.Identifier(schema, "schema_migrations")), [latest]
        )
        with pytest.raises(NotMigrated) as raised:
            await require_migrated(conn, schema)
        assert str(raised.value) == (
            f"schema {schema!r} is at migration {previous}, this Wearline needs {latest}: "
            "run `wearline db migrate` first"
        )
        # A command that needs no more than the older schema has goes on.
        assert await require_migrated(conn, schema, version=previous) == "native"
