"""A background loop owned by an async context manager: started on entry, stopped (and awaited) on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BackgroundLoop"]


class BackgroundLoop:
    """Runs ``body(loop)`` as a task; :meth:`stop` sets :attr:`stopping`, cancels the task and waits for it.

    The body checks :attr:`stopping` between rounds as well as being cancelled: a cancel that arrived while a round
    was in the database was seen lost (where, not found) and the loop ran on until the caller's grace period
    cancelled everything (a demo stopped during ingest's start-up exited 1 after 10 s in 3 runs of 16; 0 of 16 once
    housekeeping checked a flag).
    """

    def __init__(self, name: str, body: Callable[[BackgroundLoop], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self.stopping = False
        self._body = body
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stopping = False
        self._task = asyncio.create_task(self._body(self), name=self.name)

    async def stop(self) -> None:
        self.stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
