"""`wearline bench dashboards`: what the Grafana dashboards' SQL costs the database at a fleet's size."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from wearline.command import run_async, settings_of
from wearline.errors import WearlineError

bench = typer.Typer()


@bench.command("dashboards")
def bench_dashboards(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, max=1_000_000, help="Machines in the fleet.")] = 10_000,
    minutes: Annotated[
        int, typer.Option(min=1, max=1440, help="Readings per machine: one a minute for this long.")
    ] = 60,
    repeat: Annotated[int, typer.Option(min=1, max=100, help="Runs of each query; the best is kept.")] = 3,
    dashboards: Annotated[Path, typer.Option(help="Folder of the dashboards' JSON files.")] = Path(
        "deploy/grafana/dashboards"
    ),
) -> None:
    """Load a fleet into a scratch schema and time every dashboard query as wearline_readonly; print each."""
    from wearline.db._dashboard_bench import time_dashboards

    if not dashboards.is_dir():
        raise WearlineError(
            f"--dashboards {dashboards}: no such folder (the dashboards' JSON files: deploy/grafana/dashboards of a "
            "checkout of Wearline)"
        )
    settings = settings_of(ctx)
    typer.echo(
        f"settings: machines={machines} minutes={minutes} repeat={repeat} dashboards={dashboards} "
        f"database={settings.database.dsn.split('@')[-1]} (native storage, role wearline_readonly)"
    )
    timings, loaded_s = run_async(
        time_dashboards(settings.database, dashboards, machines=machines, minutes=minutes, repeat=repeat)
    )
    typer.echo(f"loaded {machines:,} machines, {machines * minutes:,} readings rows in {loaded_s:.1f} s")
    typer.echo(f"{'dashboard':<18} {'query':<72} {'best ms':>9} {'rows':>7}")
    for t in timings:
        typer.echo(f"{t.dashboard:<18} {t.where[:72]:<72} {t.best_ms:>9.1f} {t.rows:>7}")
    per_board: dict[str, float] = {}
    for t in timings:
        per_board[t.dashboard] = per_board.get(t.dashboard, 0.0) + t.best_ms
    load = os.getloadavg()
    slowest = max(timings, key=lambda t: t.best_ms)
    typer.echo(
        json.dumps(
            {
                "bench": "dashboards",
                "machines": machines,
                "minutes": minutes,
                "repeat": repeat,
                "queries": len(timings),
                "refresh_ms": {board: round(ms, 1) for board, ms in per_board.items()},
                "slowest": {"query": f"{slowest.dashboard}: {slowest.where}", "ms": round(slowest.best_ms, 1)},
                "load_average": [round(x, 2) for x in load],
            }
        )
    )
