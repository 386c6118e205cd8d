"""Migrations: idempotent, safe when several processes run them at once, in both storage modes."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from tests.conftest import HAS_TIMESCALEDB, TEST_DSN, make_settings
from wearline.cli import app
from wearline.db import available_migrations, connect, maintain_storage, migrate, storage_mode
from wearline.settings import Settings

TABLES = {
    "tenants", "sites", "lines", "machines", "machine_types", "sensors", "readings", "dead_letters",
    "anomalies", "rul_estimates", "tickets", "ticket_events", "analytics_watermarks", "schema_migrations", "meta",
}  # fmt: skip


def _tables(schema: str) -> set[str]:
    with psycopg.connect(TEST_DSN) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename NOT LIKE 'readings_p%%'", [schema]
        ).fetchall()
    return {r[0] for r in rows}


async def test_migrate_on_empty_schema_then_again_is_a_no_op(settings: Settings, storage: str) -> None:
    applied = await migrate(settings.database)
    assert applied == [m.version for m in available_migrations()]
    assert _tables(settings.database.schema_name) >= TABLES
    assert await migrate(settings.database) == []
    async with await connect(settings.database) as conn:
        assert await storage_mode(conn, settings.database.schema_name) == storage


async def test_two_processes_migrating_at_once_apply_each_migration_once(settings: Settings) -> None:
    first, second = await asyncio.gather(migrate(settings.database), migrate(settings.database))
    shipped = [m.version for m in available_migrations()]
    assert sorted([first, second], key=len) == [[], shipped]
    with psycopg.connect(TEST_DSN) as conn:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.schema_migrations").format(sql.Identifier(settings.database.schema_name))
        ).fetchone()
    assert count == (len(shipped),)


async def test_native_mode_partitions_ahead_and_drops_old_ones(migrated: Settings, storage: str) -> None:
    if storage != "native":
        pytest.skip("partition housekeeping is the native mode's; TimescaleDB manages chunks itself")
    today = datetime.now(UTC).date()
    async with await connect(migrated.database, autocommit=True) as conn:
        await maintain_storage(conn, "native", days_ahead=3, retention_days=0, today=today)
        assert await _partition_days(conn, migrated.database.schema_name) == {
            today + timedelta(d) for d in range(-1, 4)
        }
        # A reading for a day with a partition lands there; one for a day without has nowhere to go.
        await conn.execute(
            "INSERT INTO tenants (name) VALUES ('t'); INSERT INTO sites (tenant_id, name) VALUES (1, 's');"
            "INSERT INTO lines (site_id, name) VALUES (1, 'l');"
            "INSERT INTO machines (tenant_id, line_id, name) VALUES (1, 1, 'm')"
        )
        await conn.execute("INSERT INTO readings VALUES (1, %s, '{1.0}')", [datetime.now(UTC)])
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("INSERT INTO readings VALUES (1, %s, '{1.0}')", [datetime.now(UTC) + timedelta(days=30)])
        await maintain_storage(conn, "native", days_ahead=3, retention_days=1, today=today + timedelta(days=2))
        assert min(await _partition_days(conn, migrated.database.schema_name)) == today + timedelta(days=1)


async def _partition_days(conn: psycopg.AsyncConnection[Any], schema: str) -> set[date]:
    cur = await conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
           WHERE n.nspname = %s AND p.relname = 'readings'""",
        [schema],
    )
    return {datetime.strptime(r[0][len("readings_p") :], "%Y%m%d").date() for r in await cur.fetchall()}


async def test_timescaledb_mode_makes_a_hypertable(migrated: Settings, storage: str) -> None:
    if storage != "timescaledb":
        pytest.skip("hypertables exist only in TimescaleDB mode")
    async with await connect(migrated.database) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = %s AND hypertable_name = 'readings'",
            [migrated.database.schema_name],
        )
        assert await cur.fetchone() == (1,)


def test_forcing_timescaledb_without_it_fails_clearly(schema: str) -> None:
    if HAS_TIMESCALEDB:
        pytest.skip("TimescaleDB is installed here, so forcing it succeeds")
    settings = make_settings(schema, "wlt/x", "timescaledb")
    with pytest.raises(RuntimeError, match="no timescaledb extension"):
        asyncio.run(migrate(settings.database))


def test_db_info_says_which_mode(migrated: Settings, storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_DATABASE__DSN", TEST_DSN)
    monkeypatch.setenv("WEARLINE_DATABASE__SCHEMA", migrated.database.schema_name)
    result = CliRunner().invoke(app, ["db", "info"])
    assert result.exit_code == 0, result.output
    assert f"storage mode:  {storage}" in result.output
    shipped = available_migrations()[-1].version
    assert f"migrations:    {shipped} of {shipped}" in result.output
