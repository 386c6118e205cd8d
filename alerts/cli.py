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
    import psycopg

    from alerts import list_tickets
    from wearline.db import connect
    from wearline.errors import WearlineError

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def show() -> None:
        async with await connect(settings.database) as conn:
            try:
                tickets = await list_tickets(conn, tenant=tenant, live_only=not all_)
            except psycopg.errors.UndefinedTable as exc:
                raise WearlineError(f"schema {schema} has no tickets table: run `wearline db migrate`") from exc
        if not tickets:
            # Silence would look like a broken command or the wrong schema: say which schema was asked.
            which = "tickets" if all_ else "live tickets"
            scope = f" for tenant {tenant}" if tenant else ""
            hint = "" if all_ else " (--all includes resolved and closed ones)"
            typer.echo(f"no {which}{scope} in schema {schema}{hint}")
        for t in tickets:
            typer.echo(
                f"#{t.ticket_id} P{t.priority} {t.status:<12} {t.tenant}/{t.machine}  {t.title}  "
                f"(x{t.occurrences}, since {t.first_seen:%Y-%m-%d %H:%M:%S})"
            )

    run_async(show())
