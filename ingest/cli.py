"""Ingest's commands: `wearline ingest` (the stage) and `wearline bench ingest`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from wearline.command import run_stage, settings_of
from wearline.settings import Settings

__all__ = ["app", "bench"]

app = typer.Typer()
bench = typer.Typer()


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


@bench.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Ingest worker processes (one shared subscription).")] = 1,
    machines: Annotated[int, typer.Option(min=1, help="Machines in the published fleet.")] = 1000,
    sensors: Annotated[int, typer.Option(min=1, max=256, help="Sensors per machine.")] = 10,
    profile: Annotated[
        list[int] | None,
        typer.Option(help="Readings per message; repeat for several profiles (default: 10 and 100)."),
    ] = None,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of publishing per profile.")] = 60.0,
    rate: Annotated[float, typer.Option(min=0, help="Messages/s offered; 0 publishes as fast as it can.")] = 0.0,
    cprofile: Annotated[
        Path | None, typer.Option(help="Directory for each worker's cProfile statistics (slows workers down).")
    ] = None,
) -> None:
    """Start WORKERS ingest processes, our own Mosquitto (shipped config) and schema; publish from another process.

    Prints offered and committed readings/s side by side, latency percentiles, CPU per process, peak RSS per worker
    and loss, then one JSON line with every figure. Broker protocol and batching come from the settings
    (``WEARLINE_MQTT__PROTOCOL``, ``WEARLINE_INGEST__*``).
    """
    from ingest import run_bench

    settings = settings_of(ctx)
    profiles = profile or [10, 100]
    for p in profiles:
        if p % sensors:
            raise typer.BadParameter(f"profile {p} is not a multiple of --sensors {sensors}", param_hint="--profile")
    ing = settings.ingest
    typer.echo(
        f"settings: workers={workers} machines={machines} sensors={sensors} profiles={profiles} duration={duration}s "
        f"rate={rate or 'max'} msg/s protocol=MQTT {settings.mqtt.protocol} batch_max_messages={ing.batch_max_messages} "
        f"batch_max_delay_ms={ing.batch_max_delay_ms} receive_maximum={ing.receive_maximum} "
        f"database={settings.database.dsn.split('@')[-1]} (own schema) broker=own mosquitto, shipped config"
    )
    results = []
    for p in profiles:
        r = run_bench(
            settings,
            workers=workers,
            machines=machines,
            sensors=sensors,
            samples_per_message=p // sensors,
            duration_s=duration,
            rate=rate,
            cprofile_to=cprofile,
        )
        results.append(r)
        typer.echo(
            f"profile {p:>4} readings/msg: offered {r.offered_readings_per_s:>9,.0f}/s  committed "
            f"{r.committed_readings_per_s:>9,.0f}/s  latency p50/p95/p99 {r.latency_p50_ms:.0f}/{r.latency_p95_ms:.0f}/"
            f"{r.latency_p99_ms:.0f} ms  lost {r.lost_readings}"
        )
        typer.echo(
            f"  cpu: publisher {r.publisher.cpu_s:.1f} s, broker {r.broker_cpu_s:.1f} s, workers "
            + ", ".join(
                f"{w.cpu_s:.1f} s (peak RSS {w.peak_rss_mb:.0f} MB, {w.readings_per_batch:.0f} readings/batch)"
                for w in r.workers_use
            )
        )
    typer.echo(json.dumps({"bench": "ingest", "results": [asdict(r) for r in results]}))
