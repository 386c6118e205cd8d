"""`wearline db ...`: migrations and schema status."""

from __future__ import annotations

import typer

from wearline.command import run_async, settings_of

db_app = typer.Typer(help="Database schema: migrations and status.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    from wearline.db import migrate

    settings = settings_of(ctx)
    applied = run_async(migrate(settings.database))
    schema = settings.database.schema_name
    typer.echo(f"schema {schema}: applied {applied}" if applied else f"schema {schema}: up to date")


@db_app.command("info")
def db_info(ctx: typer.Context) -> None:
    """Storage mode, migration level and row counts."""
    from wearline.db import applied_versions, available_migrations, connect, storage_mode

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def info() -> None:
        async with await connect(settings.database) as conn:
            versions = await applied_versions(conn, schema)
            mode = await storage_mode(conn, schema)
            cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            ext = await cur.fetchone()
            cur = await conn.execute("SHOW server_version")
            server = await cur.fetchone()
        shipped = available_migrations()[-1].version
        typer.echo(f"schema:        {schema}")
        typer.echo(f"server:        PostgreSQL {server[0] if server else '?'}")
        typer.echo(f"timescaledb:   {ext[0] if ext else 'not installed in this database'}")
        typer.echo(f"storage mode:  {mode or 'not migrated yet'}")
        typer.echo(f"migrations:    {max(versions, default=0)} of {shipped}")

    run_async(info())
