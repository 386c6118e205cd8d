"""The ``wearline`` command line: the core's own commands, plus every stage's, found through entry points.

A stage declares its commands in pyproject.toml, the way pytest and Flask find their plugins::

    [project.entry-points."wearline.commands"]
    ingest = "ingest.cli:app"          # a Typer app whose commands and groups join the top level
    [project.entry-points."wearline.bench"]
    ingest = "ingest.cli:bench"        # a Typer app whose commands join `wearline bench`

The core imports no stage. Expected failures (:class:`~wearline.errors.WearlineError`) end any command with one line
``error: ...`` and exit status 2; Ctrl-C ends it with status 130.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from wearline.command import Invocation
from wearline.errors import WearlineError

__all__ = ["app", "main"]


class _Root(TyperGroup):
    """Turns an expected failure raised anywhere below into one line on stderr and exit status 2."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context, which it does not export
        try:
            return super().invoke(ctx)
        except WearlineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        except ExceptionGroup as group:
            # A stage's task group fails with every error its tasks raised: expected ones still get one line each.
            expected, other = group.split(WearlineError)
            if expected is None or other is not None:
                raise
            for line in dict.fromkeys(str(exc) for exc in _leaves(expected)):
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from group
        except KeyboardInterrupt as exc:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf for exc in group.exceptions for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


app = typer.Typer(
    cls=_Root,
    help="Wearline: machine telemetry to maintenance tickets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: programs that print their figures and settings.", no_args_is_help=True)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file (default: $WEARLINE_CONFIG).")
    ] = None,
) -> None:
    # Settings load when a command first asks for them (wearline.command.settings_of), so that an offline command
    # is not stopped by a bad value in a section it never uses.
    ctx.obj = Invocation(config)


def _mount() -> None:
    from wearline.cli import _bench_dashboards, _bench_layout, _db

    app.add_typer(_db.db_app, name="db")
    bench_app.add_typer(_bench_layout.bench)
    bench_app.add_typer(_bench_dashboards.bench)
    for group, target in (("wearline.commands", app), ("wearline.bench", bench_app)):
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            target.add_typer(ep.load())
    app.add_typer(bench_app, name="bench")


_mount()


def main() -> None:
    """Console-script entry point."""
    app()
