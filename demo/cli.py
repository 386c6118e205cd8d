"""`wearline demo`: the whole chain on a small fleet with one fault."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from wearline.command import run_async, settings_of

__all__ = ["app"]

app = typer.Typer()


@app.command()
def demo(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=2, help="Simulated pumps; one of them develops a bearing fault.")] = 5,
    timeout: Annotated[
        float, typer.Option(min=10, help="Give up if its two tickets do not appear within this many seconds.")
    ] = 120,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the stages and the board running after the ticket, until Ctrl-C.")
    ] = False,
) -> None:
    """Run the whole chain on a small fleet with one fault, print the ticket it raises, and acknowledge it through the
    REST API as a maintenance team's tool would (the API on api.host:api.port).

    Uses its own schema (database.schema + '_demo', recreated each run) and topic prefix (topic_prefix + '-demo').
    """
    from demo import run_demo
    from wearline.lifecycle import run_service

    base = settings_of(ctx)
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
        result = await run_demo(settings, stop, machines=machines, timeout_s=timeout, serve=serve)

    run_async(run_service("demo", body, grace_s=settings.shutdown_grace_s))
    if result is not None and result.interrupted:
        typer.echo(f"demo: interrupted after {result.seconds:.1f} s, before its tickets appeared", err=True)
        raise typer.Exit(130)
    if result is None or result.ticket is None or not result.complete:
        missing = (
            "no ticket"
            if result is None or (result.ticket is None and result.rul_ticket is None)
            else "no anomaly ticket"
            if result.ticket is None
            else "no remaining-life ticket"
            if result.rul_ticket is None
            else "the published history's remaining-life estimates not all handled"
        )
        typer.echo(f"demo: {missing} within the timeout of {timeout:.0f} s", err=True)
        raise typer.Exit(1)
    t = result.ticket
    typer.echo(f"\n{result.published} messages published, tickets after {result.seconds:.1f} s:")
    for shown in (t, result.rul_ticket):
        if shown is None:
            continue
        typer.echo(f"\nTicket #{shown.ticket_id} ({shown.kind}, priority {shown.priority}, {shown.status}):")
        typer.echo(f"  {shown.title}")
        typer.echo(f"  machine:    {shown.tenant}/{shown.machine}")
        typer.echo(f"  first seen: {shown.first_seen.isoformat()}")
        typer.echo(f"  details:    {shown.details}")
    if result.acknowledged is not None:
        ack = result.acknowledged
        typer.echo(
            f"\nAcknowledged through the API: POST /api/v1/tickets/{t.ticket_id}/acknowledge -> status "
            f"{ack['status']}, by {ack['events'][-1]['actor']}"
        )
        typer.echo(f"Board: {result.board} (sign in with the token below; `wearline demo --serve` keeps it up)")
        typer.echo(f"Token: {result.token}")
        typer.echo(f"Browse it later: WEARLINE_DATABASE__SCHEMA={settings.database.schema_name} wearline api")
