"""Alerts' commands: `wearline alerts` (the stage) and `wearline tickets ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from wearline.command import run_async, run_stage, settings_of

__all__ = ["app"]

app = typer.Typer()
tickets_app = typer.Typer(help="Service tickets.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")


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
