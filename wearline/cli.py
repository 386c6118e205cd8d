"""The ``wearline`` command line: one entry point that loads settings once and runs a stage or a tool."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from wearline.logs import setup_logging
from wearline.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="Wearline: machine telemetry to maintenance tickets.", no_args_is_help=True, pretty_exceptions_enable=False
)
db_app = typer.Typer(help="Database schema: migrations and status.", no_args_is_help=True)
tickets_app = typer.Typer(help="Service tickets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tickets_app, name="tickets")

T = TypeVar("T")


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def _run(coro: Awaitable[T]) -> T:
    from ingest import BrokerError
    from wearline.db import DatabaseUnavailable
    from wearline.lifecycle import MetricsPortError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (DatabaseUnavailable, BrokerError, MetricsPortError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file (default: $WEARLINE_CONFIG).")
    ] = None,
) -> None:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    setup_logging(settings.log)
    ctx.obj = settings


def _service(ctx: typer.Context, name: str, main: Callable[[Settings, asyncio.Event], Awaitable[object]], port: int) -> None:
    from wearline.lifecycle import run_service, serve_metrics

    settings = _settings(ctx)

    async def body(stop: asyncio.Event) -> None:
        await main(settings, stop)

    serve_metrics(port)
    _run(run_service(name, body, grace_s=settings.shutdown_grace_s))


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    from wearline.db import migrate

    settings = _settings(ctx)
    applied = _run(migrate(settings.database))
    schema = settings.database.schema_name
    typer.echo(f"schema {schema}: applied {applied}" if applied else f"schema {schema}: up to date")


@db_app.command("info")
def db_info(ctx: typer.Context) -> None:
    """Storage mode, migration level and row counts."""
    from wearline.db import applied_versions, available_migrations, connect, storage_mode

    settings = _settings(ctx)
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

    _run(info())


@app.command()
def ingest(
    ctx: typer.Context,
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (default: mqtt.client_id).")] = None,
) -> None:
    """Subscribe to telemetry and commit it to the database (QoS 1, acknowledged after commit)."""
    from ingest import run_ingest

    settings = _settings(ctx)

    async def main(s: Settings, stop: asyncio.Event) -> None:
        await run_ingest(s, stop, client_id=client_id)

    _service(ctx, "ingest", main, settings.ingest.metrics_port)


@app.command()
def analytics(ctx: typer.Context) -> None:
    """Score new readings and record anomalies."""
    from analytics import run_analytics

    _service(ctx, "analytics", run_analytics, _settings(ctx).analytics.metrics_port)


@app.command()
def alerts(ctx: typer.Context) -> None:
    """Turn anomalies into deduplicated service tickets."""
    from alerts import run_alerts

    _service(ctx, "alerts", run_alerts, _settings(ctx).alerts.metrics_port)


@app.command()
def simulate(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Number of simulated pumps.")] = 5,
    period: Annotated[float, typer.Option(min=0.001, help="Simulated seconds between samples.")] = 1.0,
    time_scale: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per wall-clock second.")] = 1.0,
    steps: Annotated[int | None, typer.Option(min=1, help="Samples per machine, then stop (default: run on).")] = None,
    fault: Annotated[
        list[str] | None, typer.Option(help="Inject a bearing fault: MACHINE_INDEX:ONSET_SECONDS (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same stream.")] = 42,
    tenant: Annotated[str, typer.Option()] = "acme",
    site: Annotated[str, typer.Option()] = "plant1",
    line: Annotated[str, typer.Option()] = "line1",
) -> None:
    """Publish telemetry for a simulated fleet over MQTT."""
    from simulators import Fault, FleetSpec, publish_fleet

    settings = _settings(ctx)
    faults = []
    for f in fault or []:
        try:
            index, onset = f.split(":")
            faults.append(Fault(int(index), float(onset)))
        except ValueError as exc:
            raise typer.BadParameter(f"--fault {f!r}: expected MACHINE_INDEX:ONSET_SECONDS, e.g. 2:600") from exc
        if not 0 <= faults[-1].machine_index < machines:
            raise typer.BadParameter(f"--fault {f!r}: machine index must be 0..{machines - 1}")
    try:
        spec = FleetSpec(tenant, site, line, machines, period, seed, tuple(faults))
        spec.path(0)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def main(s: Settings, stop: asyncio.Event) -> None:
        result = await publish_fleet(s.mqtt, s.topic_prefix, spec, stop, steps=steps, time_scale=time_scale)
        typer.echo(f"published {result.messages} messages")

    _service(ctx, "simulate", main, 0)


@tickets_app.command("list")
def tickets_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tickets.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved and closed tickets.")] = False,
) -> None:
    """List tickets, most urgent first."""
    from alerts import list_tickets
    from wearline.db import connect

    settings = _settings(ctx)

    async def show() -> None:
        async with await connect(settings.database) as conn:
            for t in await list_tickets(conn, tenant=tenant, live_only=not all_):
                typer.echo(
                    f"#{t.ticket_id} P{t.priority} {t.status:<12} {t.tenant}/{t.machine}  {t.title}  "
                    f"(x{t.occurrences}, since {t.first_seen:%Y-%m-%d %H:%M:%S})"
                )

    _run(show())


@app.command()
def demo(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=2, help="Simulated pumps; one of them develops a bearing fault.")] = 5,
    timeout: Annotated[float, typer.Option(min=10, help="Give up if no ticket appears within this many seconds.")] = 120,
) -> None:
    """Run the whole chain on a small fleet with one fault, and print the ticket it raises.

    Uses its own schema (database.schema + '_demo', recreated each run) and topic prefix (topic_prefix + '-demo').
    """
    from wearline.demo import run_demo
    from wearline.lifecycle import run_service

    base = _settings(ctx)
    settings = base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}-demo",
            "database": base.database.model_copy(update={"schema_name": f"{base.database.schema_name}_demo"}),
            # A session of its own that expires soon: a new run must not inherit an old run's unacknowledged messages.
            "mqtt": base.mqtt.model_copy(
                update={"client_id": f"{base.mqtt.client_id}-demo-{os.getpid()}", "session_expiry_s": 60}
            ),
        }
    )
    typer.echo(
        f"demo: {machines} pumps -> mqtt://{settings.mqtt.host}:{settings.mqtt.port} -> ingest -> "
        f"schema {settings.database.schema_name} -> analytics -> alerts; metrics on :{settings.ingest.metrics_port}/metrics"
    )
    result = None

    async def body(stop: asyncio.Event) -> None:
        nonlocal result
        result = await run_demo(settings, stop, machines=machines, timeout_s=timeout)

    _run(run_service("demo", body, grace_s=settings.shutdown_grace_s))
    if result is None or result.ticket is None:
        typer.echo("demo: no ticket appeared before the timeout", err=True)
        raise typer.Exit(1)
    t = result.ticket
    typer.echo(f"\nTicket #{t.ticket_id} (priority {t.priority}, {t.status}) after {result.seconds:.1f} s, "
               f"{result.published} messages published:")
    typer.echo(f"  {t.title}")
    typer.echo(f"  machine:    {t.tenant}/{t.machine}")
    typer.echo(f"  first seen: {t.first_seen.isoformat()}")
    typer.echo(f"  details:    {t.details}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SettingsError as exc:  # pragma: no cover - surfaced by the callback already
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
