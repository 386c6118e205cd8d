"""`wearline db wait`: what a Kubernetes init container runs before a stage, so that a stage started while the
migrate Job still runs waits for it instead of exiting 2 and crash-looping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tests.conftest import TEST_DSN, make_settings, unique
from wearline.db import migrate
from wearline.mosquitto import free_port

WEARLINE = str(Path(sys.executable).with_name("wearline"))


def _env(schema: str, dsn: str = TEST_DSN) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": dsn,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__CONNECT_TIMEOUT_S": "2",
    }


async def test_db_wait_returns_once_the_schema_is_migrated(schema: str) -> None:
    waiting = subprocess.Popen(  # noqa: ASYNC220 (started once; the migration below runs while it waits)
        [WEARLINE, "db", "wait", "--timeout", "120"],
        env=_env(schema),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # It must still be waiting before anyone migrates: a wait that returns at once proves nothing.
        await asyncio.sleep(4)
        assert waiting.poll() is None, waiting.communicate()
        await migrate(make_settings(schema, unique("wlt/"), "native").database)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    print(out, err)
    assert waiting.returncode == 0, err
    assert out.strip() == f"schema {schema}: migrated (native)"


def test_db_wait_gives_up_in_one_line_naming_why(schema: str) -> None:
    refused = free_port()  # nothing listens there once the socket is closed
    cases = {
        "never migrated": _env(schema),
        "cannot connect": _env(schema, make_conninfo(TEST_DSN, host="127.0.0.1", port=str(refused))),
    }
    for why, env in cases.items():
        done = subprocess.run(
            [WEARLINE, "db", "wait", "--timeout", "1"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        print(why, done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        assert done.returncode == 2
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: db wait: not ready after 1 s: ")
        assert why in lines[0]
