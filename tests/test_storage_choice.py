"""A new schema's storage mode: every TimescaleDB state the server can be in, times every ``database.storage``.

TimescaleDB installed but not preloaded used to crash ``db migrate`` (its CREATE EXTENSION ends the session): the
server is now asked first, and the answer decides through a pure function, tested here for every combination.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import HAS_TIMESCALEDB, NO_TIMESCALEDB, TEST_DSN, make_settings, unique
from wearline.db import StorageError, choose_storage, connect, migrate, probe_timescaledb, storage_mode
from wearline.db._storage import ExtensionProbe, ExtensionState, Wanted, names_timescaledb

PROBES: dict[ExtensionState, ExtensionProbe] = {
    "absent": ExtensionProbe(available=False, created=False, loader_present=False, preload_libraries=""),
    "not_preloaded": ExtensionProbe(
        available=True,
        created=False,
        loader_present=False,
        preload_libraries="pg_stat_statements",
        config_file="/etc/postgresql/15/main/postgresql.conf",
    ),
    "preloaded": ExtensionProbe(available=True, created=False, loader_present=True, preload_libraries="timescaledb"),
    "created": ExtensionProbe(available=True, created=True, loader_present=True, preload_libraries="timescaledb"),
    # A server restarted without the preload: the extension is still created in the database but cannot load.
    "created_not_preloaded": ExtensionProbe(available=True, created=True, loader_present=False, preload_libraries=""),
}

# (state, database.storage) -> mode and CREATE EXTENSION, or "error"; a warning exactly where auto falls back.
EXPECTED: dict[tuple[ExtensionState, Wanted], tuple[str, bool] | str] = {
    ("absent", "auto"): ("native", False),
    ("absent", "native"): ("native", False),
    ("absent", "timescaledb"): "error",
    ("not_preloaded", "auto"): ("native", False),
    ("not_preloaded", "native"): ("native", False),
    ("not_preloaded", "timescaledb"): "error",
    ("preloaded", "auto"): ("timescaledb", True),
    ("preloaded", "native"): ("native", False),
    ("preloaded", "timescaledb"): ("timescaledb", True),
    ("created", "auto"): ("timescaledb", False),
    ("created", "native"): ("native", False),
    ("created", "timescaledb"): ("timescaledb", False),
    # Its event trigger would fail every CREATE TABLE, native ones too.
    ("created_not_preloaded", "auto"): "error",
    ("created_not_preloaded", "native"): "error",
    ("created_not_preloaded", "timescaledb"): "error",
}


@pytest.mark.parametrize(("state", "wanted"), sorted(EXPECTED))
def test_every_state_and_setting(state: ExtensionState, wanted: Wanted) -> None:
    probe = PROBES[state]
    assert probe.state == state
    expected = EXPECTED[(state, wanted)]
    if expected == "error":
        with pytest.raises(StorageError) as raised:
            choose_storage(wanted, probe)
        message = str(raised.value)
        assert "\n" not in message
        if state == "created_not_preloaded":
            assert "shared_preload_libraries = 'timescaledb'" in message
            assert "DROP EXTENSION timescaledb" in message
            return
        assert "WEARLINE_DATABASE__STORAGE" in message
        if state == "not_preloaded":
            assert "shared_preload_libraries = 'timescaledb'" in message
            assert "/etc/postgresql/15/main/postgresql.conf" in message
            assert "restart" in message
        else:
            assert "no timescaledb extension" in message
        return
    choice = choose_storage(wanted, probe)
    assert (choice.mode, choice.create_extension) == expected
    if (state, wanted) == ("not_preloaded", "auto"):
        assert choice.warning is not None
        assert "\n" not in choice.warning
        assert "shared_preload_libraries = 'timescaledb'" in choice.warning
        assert "timescaledb-tune" in choice.warning
        assert "restart" in choice.warning
    else:
        assert choice.warning is None


def test_advice_without_the_config_file_names_the_debian_path_of_the_servers_version() -> None:
    # A role that may not read config_file still gets a path to look at.
    probe = ExtensionProbe(available=True, created=False, loader_present=False, preload_libraries=None, server_major=16)
    assert probe.state == "not_preloaded"
    warning = choose_storage("auto", probe).warning
    assert warning is not None
    assert "/etc/postgresql/16/main/postgresql.conf" in warning


@pytest.mark.parametrize(
    ("value", "listed"),
    [
        ("", False),
        ("timescaledb", True),
        ("pg_stat_statements, timescaledb", True),
        ("'timescaledb'", True),
        ("$libdir/timescaledb.so", True),
        ("timescaledb_toolkit", False),
        ("pg_stat_statements", False),
    ],
)
def test_reading_shared_preload_libraries(value: str, listed: bool) -> None:
    assert names_timescaledb(value) is listed


async def test_the_probe_on_the_test_server() -> None:
    settings = make_settings(unique("wlt_probe_"), unique("wlt/"))
    async with await connect(settings.database) as conn:
        probe = await probe_timescaledb(conn)
    print(f"probe: {probe} -> {probe.state}")
    if HAS_TIMESCALEDB:
        assert probe.state in ("preloaded", "created")
    else:
        # This server has no TimescaleDB at all.
        assert probe.state == "absent"
        assert not probe.created
        assert not probe.loader_present


def test_the_probe_works_for_a_role_that_may_not_read_server_settings() -> None:
    # current_setting('shared_preload_libraries') raises for such a role; the probe must not.
    role = unique("wlt_probe_role_")
    with psycopg.connect(TEST_DSN, autocommit=True) as admin:
        row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if row is None or not row[0]:
            pytest.skip("the test role is not a superuser, so it cannot create a role to test with")
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        try:
            with psycopg.connect(TEST_DSN, autocommit=True) as conn:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT current_setting('shared_preload_libraries')")
            probe = asyncio.run(_probe_as(role))
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    print(f"probe as {role}: {probe} -> {probe.state}")
    assert probe.preload_libraries is None
    assert probe.config_file is None
    assert probe.state in (("preloaded", "created") if HAS_TIMESCALEDB else ("absent",))


async def _probe_as(role: str) -> ExtensionProbe:
    async with await psycopg.AsyncConnection.connect(TEST_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return await probe_timescaledb(conn)


async def test_auto_on_this_server_migrates_without_a_warning(schema: str, caplog: pytest.LogCaptureFixture) -> None:
    if HAS_TIMESCALEDB:
        pytest.skip("TimescaleDB is usable here; auto picks it")
    settings = make_settings(schema, unique("wlt/"), "auto")
    with caplog.at_level(logging.WARNING, logger="wearline.db"):
        await migrate(settings.database)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    async with await connect(settings.database) as conn:
        assert await storage_mode(conn, schema) == "native"


def test_forcing_timescaledb_where_it_is_absent_is_one_line(schema: str) -> None:
    if HAS_TIMESCALEDB:
        pytest.skip("TimescaleDB is installed here, so forcing it succeeds")
    wearline = str(Path(sys.executable).with_name("wearline"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__STORAGE": "timescaledb",
    }
    done = subprocess.run([wearline, "db", "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False)
    print(f"exit {done.returncode}; stderr {done.stderr!r}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: database.storage (WEARLINE_DATABASE__STORAGE) is 'timescaledb'")


@pytest.mark.timescaledb
async def test_preloaded_timescaledb_is_chosen_by_auto(schema: str) -> None:
    if not HAS_TIMESCALEDB:
        pytest.skip(NO_TIMESCALEDB)
    settings = make_settings(schema, unique("wlt/"), "auto")
    await migrate(settings.database)
    async with await connect(settings.database) as conn:
        assert (await probe_timescaledb(conn)).state == "created"
        assert await storage_mode(conn, schema) == "timescaledb"
