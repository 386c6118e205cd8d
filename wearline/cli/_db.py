"""`wearline db ...`: migrations and schema status."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql

from wearline.command import run_async, settings_of
from wearline.errors import WearlineError

db_app = typer.Typer(help="Database schema: migrations and status.", no_args_is_help=True)

# (label, table): what an operator asks first, each counted exactly.
_COUNTED = (
    ("readings", "readings"),
    ("machines", "machines"),
    ("sensors", "sensors"),
    ("anomalies", "anomalies"),
    ("rul estimates", "rul_estimates"),
    ("tickets", "tickets"),
    ("dead letters", "dead_letters"),
    ("models", "models"),
)

# Read here rather than through the ingest stage: the core imports no stage. The states are ingest's own (see
# ingest/_membership.py): a member is missing after three of its own heartbeat intervals without one.
_MEMBERS = """
SELECT identity, scheme, share, host, pid, extract(epoch FROM now() - heartbeat_at)::float8, heartbeat_s,
    CASE WHEN session_ended THEN 'retired'
         WHEN stopped_at IS NOT NULL THEN 'stopped'
         WHEN heartbeat_at < now() - make_interval(secs => heartbeat_s * 3) THEN 'missing'
         ELSE 'alive' END
FROM {} ORDER BY identity
"""


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    from wearline.db import migrate

    settings = settings_of(ctx)
    applied = run_async(migrate(settings.database))
    schema = settings.database.schema_name
    typer.echo(f"schema {schema}: applied {applied}" if applied else f"schema {schema}: up to date")


@db_app.command("wait")
def db_wait(
    ctx: typer.Context,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up after this many seconds (exit 2, saying why).")
    ] = 600.0,
) -> None:
    """Wait until the database answers and the schema holds every migration this Wearline needs.

    A stage ends at once on a schema that is not migrated (waiting would not fix a schema nobody migrates); a
    roll-out that migrates in a Job of its own runs this before each stage (an init container) instead.
    """
    from wearline.db import DatabaseUnavailable, NotMigrated, check_migrated

    settings = settings_of(ctx, needs={"log", "database"})

    async def wait() -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return await check_migrated(settings.database)
            except (DatabaseUnavailable, NotMigrated) as exc:
                if time.monotonic() >= deadline:
                    why = " ".join(str(exc).split())  # libpq's hint comes on a line of its own
                    raise WearlineError(f"db wait: not ready after {timeout_s:g} s: {why}") from None
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    mode = run_async(wait())
    typer.echo(f"schema {settings.database.schema_name}: migrated ({mode})")


async def _exists(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, table).as_string(conn)])
    row = await cur.fetchone()
    return row is not None and row[0] is not None


async def _count(
    conn: psycopg.AsyncConnection[Any], schema: str, table: str, where: sql.Composable = sql.SQL("true")
) -> int | None:
    if not await _exists(conn, schema, table):
        return None  # an older schema: db info still shows what it has
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(schema, table), where))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@db_app.command("info")
def db_info(ctx: typer.Context) -> None:
    """Storage mode, migration level, row counts and ingest members."""
    from wearline.db import (
        applied_versions,
        available_migrations,
        connect,
        probe_timescaledb,
        require_migrated,
        storage_mode,
    )
    from wearline.db._storage import preload_advice

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def info() -> None:
        async with await connect(settings.database) as conn:
            versions = await applied_versions(conn, schema)
            mode = await storage_mode(conn, schema)
            probe = await probe_timescaledb(conn)
            cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            ext = await cur.fetchone()
            cur = await conn.execute("SHOW server_version")
            server = await cur.fetchone()
            shipped = available_migrations()[-1].version
            timescaledb = {
                "absent": "not installed on this server",
                "not_preloaded": "installed but not preloaded, so unusable: "
                + preload_advice(probe.config_file, probe.server_major),
                "preloaded": "available, not created in this database",
                "created": f"{ext[0] if ext else '?'}",
            }[probe.state]
            typer.echo(f"schema:        {schema}")
            typer.echo(f"server:        PostgreSQL {server[0] if server else '?'}")
            typer.echo(f"timescaledb:   {timescaledb}")
            # Before any migration there is nothing to count: the one line says which schema and what to run.
            await require_migrated(conn, schema, version=1)
            behind = "" if max(versions) >= shipped else " (run `wearline db migrate`)"
            typer.echo(f"storage mode:  {mode}")
            typer.echo(f"migrations:    {max(versions)} of {shipped}{behind}")
            typer.echo("rows (exact):")
            for label, table in _COUNTED:
                total = await _count(conn, schema, table)
                line = f"  {label:<14} {'-' if total is None else f'{total:,}':>12}"
                if table == "dead_letters" and total is not None:
                    pending = await _pending_dead_letters(conn, schema)
                    if pending is not None:
                        line += f"  ({pending:,} pending replay)"
                typer.echo(line)
            await _members(conn, schema)

    run_async(info())


async def _pending_dead_letters(conn: psycopg.AsyncConnection[Any], schema: str) -> int | None:
    cur = await conn.execute(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'dead_letters' AND column_name = 'replayed_at'",
        [schema],
    )
    if await cur.fetchone() is None:
        return None  # before migration 9 nothing was ever replayed
    return await _count(conn, schema, "dead_letters", sql.SQL("replayed_at IS NULL"))


async def _members(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    if not await _exists(conn, schema, "ingest_members"):
        typer.echo("ingest members: - (before migration 7)")
        return
    cur = await conn.execute(sql.SQL(_MEMBERS).format(sql.Identifier(schema, "ingest_members")))
    rows = await cur.fetchall()
    if not rows:
        typer.echo("ingest members: none yet")
        return
    typer.echo("ingest members:")
    for identity, scheme, share, host, pid, age, every, state in rows:
        typer.echo(
            f"  {identity:<24} {state:<8} last heartbeat {_age(age)} ago (every {every:g} s)  "
            f"{scheme} share {share}  {host}:{pid}"
        )
