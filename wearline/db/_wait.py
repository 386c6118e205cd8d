"""Waiting for the database at start: a stage started before its database (a reboot, a Kubernetes roll-out) waits
and says it is not ready, instead of exiting and being restarted in a loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from wearline.db._connect import DatabaseUnavailable
from wearline.db._migrate import StorageMode, check_migrated
from wearline.health import Health
from wearline.settings import DatabaseSettings

__all__ = ["wait_for_database"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 10.0
_LOG_EVERY_S = 60.0  # one warning a minute while it waits, not one per attempt


async def wait_for_database(
    settings: DatabaseSettings,
    stop: asyncio.Event,
    health: Health,
    *,
    on_down: Callable[[], None] | None = None,
) -> StorageMode | None:
    """Check the schema is migrated, retrying with jittered backoff while the database cannot be reached.

    Returns the storage mode, or None when ``stop`` was set first. ``health``'s ``database`` check fails while it
    waits (``on_down`` is called on each failed attempt, for a stage's own gauge). A schema that is not migrated is
    no outage: :class:`~wearline.db.NotMigrated` is raised at once.
    """
    backoff = 0.5
    logged = -_LOG_EVERY_S
    while not stop.is_set():
        try:
            mode = await check_migrated(settings)
        except DatabaseUnavailable as exc:
            health.set("database", False, str(exc))
            if on_down is not None:
                on_down()
            if time.monotonic() - logged >= _LOG_EVERY_S:
                logged = time.monotonic()
                log.warning("waiting for the database (not ready until it answers): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            continue
        health.set("database", True)
        return mode
    return None
