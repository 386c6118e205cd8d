"""The ``wearline`` command line: one entry point that loads settings once and runs a stage or a tool.

Each ``_*.py`` module here adds its commands to the one Typer app when imported; this package imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Annotated

import typer

from wearline.cli._common import app
from wearline.logs import setup_logging
from wearline.settings import SettingsError, load_settings

__all__ = ["app", "main"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("_") and _module.name != "_common":
        importlib.import_module(f"{__name__}.{_module.name}")


@app.callback()
def _load(
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


def main() -> None:
    """Console-script entry point."""
    app()
