"""What every command shares: the app objects, the settings in the context, and running a coroutine or a service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer

from wearline.settings import Settings

__all__ = ["app", "bench_app", "run_async", "run_stage", "settings_of"]

app = typer.Typer(
    help="Wearline: machine telemetry to maintenance tickets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: programs that print their figures and settings.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

T = TypeVar("T")


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the top-level callback loaded for this invocation."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; start-up failures that name their cause (database, broker, port) exit 2 with that message."""
    from ingest import BrokerError
    from wearline.db import DatabaseUnavailable
    from wearline.lifecycle import MetricsPortError

    try:
        return asyncio.run(coro)
    except (DatabaseUnavailable, BrokerError, MetricsPortError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def run_stage(
    ctx: typer.Context,
    name: str,
    main: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, object]],
    port: int,
) -> None:
    """Run a long-lived stage with metrics on ``port`` until SIGTERM/SIGINT, then shut it down gracefully."""
    from wearline.lifecycle import run_service, serve_metrics

    settings = settings_of(ctx)

    async def body(stop: asyncio.Event) -> None:
        await main(settings, stop)

    serve_metrics(port)
    run_async(run_service(name, body, grace_s=settings.shutdown_grace_s))
