"""`wearline db info` on a migrated schema with rows: exact row counts and the ingest members with their state.

The command runs in this process through the Typer app the installed ``wearline`` runs, settings from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from tests.conftest import TEST_DSN
from wearline.cli import app
from wearline.db import available_migrations, connect, storage_mode
from wearline.db._partitions import maintain_storage
from wearline.settings import Settings


def _info(settings: Settings) -> str:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WEARLINE_")}
    env |= {"WEARLINE_DATABASE__DSN": TEST_DSN, "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(app, ["db", "info"], env=env)
    finally:
        # The command routes logging to the runner's stderr, closed once it returns: later tests' logs would fail.
        root.handlers[:], root.level = handlers, level
    print(result.stdout, result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0
    return result.stdout


def _row(out: str, label: str) -> str:
    found = re.search(rf"^  {label} +(.*)$", out, re.M)
    assert found is not None, f"no {label!r} line"
    return found.group(1).strip()


async def _fill(settings: Settings) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with await connect(settings.database, autocommit=True) as conn:
        mode = await storage_mode(conn, settings.database.schema_name)
        assert mode is not None
        await maintain_storage(conn, mode, days_ahead=1, retention_days=0)
        await conn.execute(
            """INSERT INTO tenants (name) VALUES ('acme');
               INSERT INTO sites (tenant_id, name) VALUES (1, 'plant1');
               INSERT INTO lines (site_id, name) VALUES (1, 'line1');
               INSERT INTO machines (tenant_id, line_id, name) VALUES (1, 1, 'pump-1'), (1, 1, 'pump-2');
               INSERT INTO sensors (machine_id, position, name) VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'a');
               INSERT INTO models (kind, machine_type, version, blob) VALUES ('anomaly', 'pump', 'v1', '\\x00');"""
        )
        # Two machines, one row per second each over the last ten minutes.
        await conn.execute(
            "INSERT INTO readings (machine_id, time, vals) "
            "SELECT 1 + g %% 2, %s - (g / 2) * interval '1 s', '{1.0}' FROM generate_series(0, 1233) g",
            [now],
        )
        await conn.execute(
            "INSERT INTO anomalies (machine_id, time, detector, score, threshold) VALUES (1, %s, 'ewma', 5, 3)", [now]
        )
        await conn.execute(
            "INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)"
            " VALUES (1, %s, 'trend', 'v1', 100, 80, 120)",
            [now],
        )
        for status in ("open", "resolved"):
            await conn.execute(
                "INSERT INTO tickets (tenant_id, machine_id, reason, priority, status, title, first_seen, last_seen)"
                " VALUES (1, 1, 'anomaly', 2, %s, 'Abnormal a', %s, %s)",
                [status, now, now],
            )
        for i in range(5):
            await conn.execute(
                "INSERT INTO dead_letters (topic, reason, detail, payload, replayed_at) VALUES ('t', 'not_json', '', "
                "'x', %s)",
                [now if i < 2 else None],
            )
        # Missing: no heartbeat for 100 s at one every 5 s (over 3 intervals); alive: 10 s, under them.
        await conn.execute(
            """INSERT INTO ingest_members (identity, scheme, share, host, pid, heartbeat_s, heartbeat_at, stopped_at)
               VALUES ('ingest-a', 'partitioned', 'p0', 'h1', 11, 5, now() - interval '10 s', NULL),
                      ('ingest-b', 'partitioned', 'p1', 'h2', 22, 5, now() - interval '100 s', NULL),
                      ('ingest-c', 'shared', 'g', 'h3', 33, 5, now() - interval '1 h', now() - interval '1 h')"""
        )


def test_db_info_counts_rows_and_lists_ingest_members(migrated: Settings, storage: str) -> None:
    empty = _info(migrated)
    assert _row(empty, "readings") == "0"
    assert "ingest members: none yet" in empty
    asyncio.run(_fill(migrated))
    out = _info(migrated)
    shipped = available_migrations()[-1].version
    assert f"migrations:    {shipped} of {shipped}\n" in out
    assert f"storage mode:  {storage}" in out
    assert "rows (exact):" in out
    assert _row(out, "readings") == "1,234"
    assert _row(out, "machines") == "2"
    assert _row(out, "sensors") == "3"
    assert _row(out, "anomalies") == "1"
    assert _row(out, "rul estimates") == "1"
    assert _row(out, "tickets") == "2"
    assert _row(out, "dead letters") == "5  (3 pending replay)"
    assert _row(out, "models") == "1"
    members = {m.group(1): m.group(2) for m in re.finditer(r"^  (ingest-\w) +(\w+) +last heartbeat", out, re.M)}
    assert members == {"ingest-a": "alive", "ingest-b": "missing", "ingest-c": "stopped"}
    assert re.search(r"ingest-b +missing +last heartbeat 10\d\.\d s ago \(every 5 s\)", out)


def test_db_info_on_a_schema_behind_this_wearline(migrated: Settings, storage: str) -> None:
    if storage != "native":
        pytest.skip("one storage mode is enough to show an older schema")
    schema = migrated.database.schema_name
    with psycopg.connect(TEST_DSN, autocommit=True) as conn:
        # What a schema from before migration 7 lacks, as far as db info reads it.
        conn.execute(
            sql.SQL("DROP TABLE {}; ALTER TABLE {} DROP COLUMN replayed_at; DELETE FROM {} WHERE version >= 7").format(
                sql.Identifier(schema, "ingest_members"),
                sql.Identifier(schema, "dead_letters"),
                sql.Identifier(schema, "schema_migrations"),
            )
        )
    out = _info(migrated)
    assert f"migrations:    6 of {available_migrations()[-1].version} (run `wearline db migrate`)" in out
    assert _row(out, "dead letters") == "0"
    assert "ingest members: - (before migration 7)" in out
    assert schema in out
