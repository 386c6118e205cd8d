"""`wearline simulate`: publish a simulated fleet."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from wearline.cli._common import app, run_stage
from wearline.settings import Settings


@app.command()
def simulate(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Number of simulated pumps.")] = 5,
    period: Annotated[float, typer.Option(min=0.001, help="Simulated seconds between samples.")] = 1.0,
    time_scale: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per wall-clock second.")] = 1.0,
    steps: Annotated[int | None, typer.Option(min=1, help="Samples per machine, then stop (default: run on).")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Inject a bearing fault: MACHINE_INDEX:ONSET_SECONDS (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same stream.")] = 42,
    tenant: Annotated[str, typer.Option()] = "acme",
    site: Annotated[str, typer.Option()] = "plant1",
    line: Annotated[str, typer.Option()] = "line1",
) -> None:
    """Publish telemetry for a simulated fleet over MQTT."""
    from simulators import Fault, FleetSpec, publish_fleet

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

    run_stage(ctx, "simulate", main, 0)
