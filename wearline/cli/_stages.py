"""The long-running stages: `wearline ingest`, `analytics`, `alerts`, and `wearline tickets ...`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from wearline.cli._common import app, run_async, run_stage, settings_of
from wearline.settings import Settings

tickets_app = typer.Typer(help="Service tickets.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")


@app.command()
def ingest(
    ctx: typer.Context,
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (default: mqtt.client_id).")] = None,
) -> None:
    """Subscribe to telemetry and commit it to the database (QoS 1, acknowledged after commit)."""
    from ingest import run_ingest

    settings = settings_of(ctx)

    async def main(s: Settings, stop: asyncio.Event) -> None:
        await run_ingest(s, stop, client_id=client_id)

    run_stage(ctx, "ingest", main, settings.ingest.metrics_port)


@app.command()
def analytics(
    ctx: typer.Context,
    worker: Annotated[
        str | None, typer.Option(help="This worker's name among several (default: host:pid:random).")
    ] = None,
) -> None:
    """Score new readings, record anomalies and RUL estimates; several workers split the machines."""
    from analytics import run_analytics

    async def main(s: Settings, stop: asyncio.Event) -> None:
        await run_analytics(s, stop, worker=worker)

    run_stage(ctx, "analytics", main, settings_of(ctx).analytics.metrics_port)


@app.command()
def alerts(ctx: typer.Context) -> None:
    """Turn anomalies into deduplicated service tickets."""
    from alerts import run_alerts

    run_stage(ctx, "alerts", run_alerts, settings_of(ctx).alerts.metrics_port)


@tickets_app.command("list")
def tickets_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tickets.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved and closed tickets.")] = False,
) -> None:
    """List tickets, most urgent first."""
    from alerts import list_tickets
    from wearline.db import connect

    settings = settings_of(ctx)

    async def show() -> None:
        async with await connect(settings.database) as conn:
            for t in await list_tickets(conn, tenant=tenant, live_only=not all_):
                typer.echo(
                    f"#{t.ticket_id} P{t.priority} {t.status:<12} {t.tenant}/{t.machine}  {t.title}  "
                    f"(x{t.occurrences}, since {t.first_seen:%Y-%m-%d %H:%M:%S})"
                )

    run_async(show())
