"""What a stage's commands share: the settings of this invocation, and running a coroutine or a long-lived service.

Each stage owns its commands (a Typer app in ``<stage>/cli.py`` using only that stage's public names and this
module); the ``wearline`` command mounts them through the ``wearline.commands`` and ``wearline.bench`` entry points
(see :mod:`wearline.cli`). Expected failures raise :class:`~wearline.errors.WearlineError` and become one line on
stderr with exit status 2 wherever they are raised.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer

from wearline.errors import WearlineError
from wearline.health import PROCESS_HEALTH
from wearline.lifecycle import run_service, serve_metrics
from wearline.logs import setup_logging
from wearline.settings import Settings, load_settings

__all__ = ["OFFLINE", "Invocation", "check_output", "run_async", "run_stage", "settings_of"]

T = TypeVar("T")

OFFLINE: frozenset[str] = frozenset({"log"})
"""What an offline command (files in, files out) needs of the settings: a broken broker or database setting does
not stop it."""


@dataclass
class Invocation:
    """What the top-level callback knows before a command runs: where the settings come from."""

    config_file: Path | None
    _loaded: dict[frozenset[str] | None, Settings] = field(default_factory=dict)

    def settings(self, needs: Collection[str] | None) -> Settings:
        key = frozenset(needs) if needs is not None else None
        if key not in self._loaded:
            settings = load_settings(self.config_file, needs=needs)
            setup_logging(settings.log)
            self._loaded[key] = settings
        return self._loaded[key]


def settings_of(ctx: typer.Context, needs: Collection[str] | None = None) -> Settings:
    """The settings for this invocation, loaded on first use, and logging set up from them.

    ``needs`` names the top-level sections a command uses (``{"log"}`` for an offline command): a bad value in any
    other section (a broken broker address, say) does not stop it. ``None`` validates everything.
    """
    invocation = ctx.find_root().obj
    assert isinstance(invocation, Invocation)
    return invocation.settings(needs)


def check_output(path: Path, option: str, *, folder: bool = False) -> None:
    """Fail before any work when ``path`` (a file, or with ``folder`` a folder to create) cannot be written.

    A model that takes minutes to fit must not be lost to a typo in ``--out``.
    """
    parent = path.resolve().parent
    if not parent.is_dir():
        raise WearlineError(f"{option} {path}: folder {parent} does not exist")
    if path.is_dir() and not folder:
        raise WearlineError(f"{option} {path}: is a folder, not a file")
    if path.exists() and folder and not path.is_dir():
        raise WearlineError(f"{option} {path}: is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise WearlineError(f"{option} {path}: folder {parent} is not writable")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop."""
    return asyncio.run(coro)


def run_stage(
    ctx: typer.Context,
    name: str,
    main: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, object]],
    port: int,
    *,
    database: bool = True,
) -> None:
    """Run a long-lived stage with metrics and health on ``port`` until SIGTERM/SIGINT, then shut it down gracefully.

    With ``database`` the stage starts once its database answers and its schema is migrated; until then it waits, not
    ready (a schema nobody migrated still ends the command at once: waiting would not fix it). Without it (the
    simulators, which only publish) the database is never touched.
    """
    settings = settings_of(ctx)

    async def body(stop: asyncio.Event) -> None:
        from wearline.db import wait_for_database  # noqa: PLC0415 (offline commands never load the database layer)

        if not database or await wait_for_database(settings.database, stop, PROCESS_HEALTH) is not None:
            await main(settings, stop)

    if database:
        PROCESS_HEALTH.declare("database")

    serve_metrics(port, setting=f"{name}.metrics_port", host=settings.metrics_host)
    run_async(run_service(name, body, grace_s=settings.shutdown_grace_s))
