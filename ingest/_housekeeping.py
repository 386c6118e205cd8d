"""Ingest's housekeeping: dead-letter retention, and the dead-letter log's summaries while traffic is idle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest._surge import SurgeLog

__all__ = ["Housekeeping", "delete_old_dead_letters"]

log = logging.getLogger(__name__)

_RETENTION_EVERY_S = 3600.0
_CHUNK = 10_000  # rows per DELETE: a long backlog of expired rows never holds one long transaction


async def delete_old_dead_letters(pool: AsyncConnectionPool, retention_days: float) -> int:
    """Delete dead letters received more than ``retention_days`` ago, in chunks; how many were deleted."""
    deleted = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                """DELETE FROM dead_letters WHERE dead_letter_id IN (
                       SELECT dead_letter_id FROM dead_letters
                       WHERE received_at < now() - make_interval(secs => %s) LIMIT %s)""",
                [retention_days * 86_400, _CHUNK],
            )
            deleted += cur.rowcount
        if cur.rowcount < _CHUNK:
            return deleted


class Housekeeping:
    """While entered: applies ``ingest.dead_letter_retention_days`` at once and then hourly (0 keeps everything),
    and gives the dead-letter log its turn every second, so a surge that stopped is still summed up. On exit the
    log is flushed. A failed retention run is logged and retried at the next turn."""

    def __init__(self, pool: AsyncConnectionPool, surge: SurgeLog, *, retention_days: float) -> None:
        self._pool = pool
        self._surge = surge
        self._retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Housekeeping:
        self._task = asyncio.create_task(self._run(), name="ingest-housekeeping")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._surge.flush()

    async def _run(self) -> None:
        due = time.monotonic()
        while True:
            if self._retention_days and time.monotonic() >= due:
                due = time.monotonic() + _RETENTION_EVERY_S
                try:
                    n = await delete_old_dead_letters(self._pool, self._retention_days)
                    if n:
                        log.info("dead-letter retention deleted %d row(s) older than %g days", n, self._retention_days)
                except (psycopg.Error, OSError) as exc:
                    due = time.monotonic() + 60
                    log.warning("dead-letter retention failed, retrying in 60 s: %s", exc)
            self._surge.tick()
            await asyncio.sleep(1)
