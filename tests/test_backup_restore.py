"""docs/operations.md's backup and restore of a natively partitioned schema, done as written: `pg_dump -Fc -n SCHEMA`,
`pg_restore` into another database, `wearline db migrate`; the rows come back, and the stages' roles can use them."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import TEST_DSN, make_settings, unique
from wearline.db import migrate

PG_DUMP, PG_RESTORE = shutil.which("pg_dump"), shutil.which("pg_restore")
ROWS = 500  # readings over three days: several daily partitions
COUNTED = ("tenants", "machines", "sensors", "readings", "tickets")


def _counts(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        counts = {}
        for table in COUNTED:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


@pytest.mark.skipif(PG_DUMP is None or PG_RESTORE is None, reason="pg_dump/pg_restore are not installed")
def test_a_native_schema_survives_dump_and_restore_into_another_database(schema: str, tmp_path: Path) -> None:
    assert PG_DUMP is not None
    assert PG_RESTORE is not None
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    with psycopg.connect(TEST_DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        cur = conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    ty AS (INSERT INTO machine_types (name) VALUES ('pump') RETURNING type_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant1' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id)
               INSERT INTO machines (tenant_id, line_id, name, type_id)
               SELECT t.tenant_id, l.line_id, 'pump-1', ty.type_id FROM t, l, ty RETURNING machine_id, tenant_id"""
        )
        row = cur.fetchone()
        assert row is not None
        machine_id, tenant_id = row
        conn.execute("INSERT INTO sensors (machine_id, position, name) VALUES (%s, 1, 'vibration_rms')", [machine_id])
        conn.execute("SELECT ensure_partitions(%s, %s)", [start.date(), (start + timedelta(days=4)).date()])
        conn.execute(
            """INSERT INTO readings (machine_id, time, vals)
               SELECT %s, %s + make_interval(mins => i * 9), ARRAY[i::float8] FROM generate_series(0, %s - 1) i""",
            [machine_id, start, ROWS],
        )
        conn.execute(
            """INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
               VALUES (%s, %s, 'no-data', 3, 'quiet', now(), now())""",
            [tenant_id, machine_id],
        )
    before = _counts(TEST_DSN, schema)
    assert before == {"tenants": 1, "machines": 1, "sensors": 1, "readings": ROWS, "tickets": 1}

    dump = tmp_path / "wearline.dump"
    done = subprocess.run(
        [PG_DUMP, "-Fc", "-n", schema, "-f", str(dump), TEST_DSN],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    database = unique("wlt_restore_")
    with psycopg.connect(TEST_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    restored = make_conninfo(TEST_DSN, dbname=database)
    try:
        done = subprocess.run(
            [PG_RESTORE, "-d", restored, str(dump)], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        there = settings.model_copy(update={"database": settings.database.model_copy(update={"dsn": restored})})
        assert asyncio.run(migrate(there.database)) == [], "the restored schema is at this Wearline's migration level"
        assert _counts(restored, schema) == before
        with psycopg.connect(restored) as conn:
            partitions = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [f'"{schema}".readings']
            ).fetchone()
            conn.execute("SET ROLE wearline_ingest")
            readable = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "readings")))
            assert readable.fetchone() == (ROWS,), "the stages' roles keep their grants"
        assert partitions is not None
        assert partitions[0] >= 4, "the daily partitions come back with the rows"
    finally:
        with psycopg.connect(TEST_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
