"""`wearline bench layout`: the measurement behind the readings table's shape."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from wearline.command import settings_of

bench = typer.Typer()


@bench.command("layout")
def bench_layout(
    ctx: typer.Context,
    samples: Annotated[int, typer.Option(min=1000, help="Samples (rows of the wide layout) to write.")] = 100_000,
    sensors: Annotated[int, typer.Option(min=1, max=256, help="Sensor values per sample.")] = 10,
) -> None:
    """COPY the same readings as narrow rows and as wide rows, plain and idempotent; print readings/s and size."""
    from wearline.db._layout_bench import measure_layouts

    settings = settings_of(ctx)
    typer.echo(f"settings: samples={samples} sensors={sensors} database={settings.database.dsn.split('@')[-1]}")
    figures = measure_layouts(settings.database.dsn, samples=samples, sensors=sensors)
    typer.echo(f"{'layout':<8} {'method':<11} {'readings/s':>12} {'MB on disk':>11}")
    for f in figures:
        typer.echo(f"{f.layout:<8} {f.method:<11} {f.readings_per_s:>12,.0f} {f.bytes_on_disk / 1e6:>11.1f}")
    typer.echo(
        json.dumps(
            {
                "bench": "layout",
                "samples": samples,
                "sensors": sensors,
                "results": [
                    {
                        "layout": f.layout,
                        "method": f.method,
                        "readings_per_s": round(f.readings_per_s),
                        "bytes": f.bytes_on_disk,
                    }
                    for f in figures
                ],
            }
        )
    )
