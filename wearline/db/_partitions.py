"""Time partitions of ``readings``: created ahead and on demand in native mode, retention in both modes."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from wearline.db._migrate import StorageMode

__all__ = ["ensure_partitions", "maintain_storage"]

log = logging.getLogger(__name__)


async def ensure_partitions(conn: psycopg.AsyncConnection[Any], first: date, last: date) -> int:
    """Create any missing daily partitions from ``first`` to ``last`` (native mode); returns how many."""
    cur = await conn.execute("SELECT ensure_partitions(%s, %s)", [first, last])
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def maintain_storage(
    conn: psycopg.AsyncConnection[Any],
    mode: StorageMode,
    *,
    days_ahead: int,
    retention_days: int,
    today: date | None = None,
) -> None:
    """Housekeeping a long-running process runs now and then: partitions ahead, and retention."""
    today = today or datetime.now(UTC).date()
    if mode == "native":
        created = await ensure_partitions(conn, today - timedelta(days=1), today + timedelta(days=days_ahead))
        if created:
            log.info("created %d readings partition(s) ahead", created)
        if retention_days:
            cur = await conn.execute("SELECT drop_partitions_before(%s)", [today - timedelta(days=retention_days)])
            row = await cur.fetchone()
            if row and row[0]:
                log.info("retention dropped %d readings partition(s)", row[0])
    elif retention_days:
        await conn.execute(
            "SELECT add_retention_policy('readings', %s::interval, if_not_exists => true)",
            [f"{retention_days} days"],
        )
