"""A progress bar for long commands, on stderr and only when stderr is a terminal.

In a pipe, a file or a test the bar writes nothing at all, so scripts that read a command's output (the last line
of ``wearline eval`` is JSON) see exactly what they saw before. Long-running code takes a :class:`Bar` and reports
phases and steps; the command decides whether one is shown::

    with progress("fitting") as bar:
        bar.phase("train units", total=len(units))
        for u in units:
            ...
            bar.advance()

Code called without a bar uses :data:`SILENT`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

__all__ = ["SILENT", "Bar", "progress"]


class Bar:
    """One command's progress: a phase at a time, advanced step by step; does nothing when not shown."""

    def __init__(self, display: Progress | None = None, task: TaskID | None = None) -> None:
        self._display = display
        self._task = task

    @property
    def shown(self) -> bool:
        """Whether anything reaches the terminal."""
        return self._display is not None

    def phase(self, description: str, total: float | None = None) -> None:
        """Start a new phase from zero; ``total`` None shows activity without a share done."""
        if self._display is not None and self._task is not None:
            self._display.reset(self._task, total=total, description=description)

    def advance(self, steps: float = 1.0) -> None:
        """Count ``steps`` more done in the current phase."""
        if self._display is not None and self._task is not None:
            self._display.advance(self._task, steps)


SILENT = Bar()
"""The bar of code called without one: every call does nothing."""


@contextmanager
def progress(description: str, total: float | None = None, *, stream: TextIO | None = None) -> Iterator[Bar]:
    """A bar on ``stream`` (default: standard error) while the block runs, if ``stream`` is a terminal.

    The bar is removed when the block ends: what the command prints stays, the bar does not.
    """
    out = sys.stderr if stream is None else stream
    if not _is_terminal(out):
        yield SILENT
        return
    display = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(file=out),
        transient=True,
        # Lines printed to standard output while the bar runs go above it, but only when standard output is the
        # same terminal: redirected, they must stay in their file or pipe, not move to the terminal.
        redirect_stdout=_is_terminal(sys.stdout) and out is sys.stderr,
        redirect_stderr=out is sys.stderr,
    )
    with display:
        yield Bar(display, display.add_task(description, total=total))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream is no terminal
        return False
