"""Outbox retention: webhook deliveries made and ticket events the broker took are deleted once older than
``alerts.outbox_retention_days``; the alerts worker runs it at start and hourly.

Each outbox gains a row per ticket event (and per webhook), so without this both tables grow with every event for
ever. Rows still owed (pending, retrying) are never touched, nor are deliveries that gave up (``failed_at``): they
are the record an operator looks at. CMMS work requests are not an outbox to empty: a filed request is how a status
the CMMS sends back finds its ticket, for as long as the ticket lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["CHUNK", "Purged", "delete_delivered"]

CHUNK = 10_000
"""Rows per DELETE: a long backlog of expired rows never holds one long transaction or lock."""


@dataclass(frozen=True)
class Purged:
    webhooks: int = 0
    mqtt: int = 0


# Oldest first along each primary key, which follows creation: the expired rows are found at the start of the walk.
_DELETE = {
    "webhooks": """DELETE FROM outbox WHERE outbox_id IN (
                       SELECT outbox_id FROM outbox WHERE delivered_at < now() - make_interval(secs => %s)
                       ORDER BY outbox_id LIMIT %s)""",
    "mqtt": """DELETE FROM mqtt_outbox WHERE event_id IN (
                   SELECT event_id FROM mqtt_outbox WHERE published_at < now() - make_interval(secs => %s)
                   ORDER BY event_id LIMIT %s)""",
}


async def delete_delivered(conn: psycopg.AsyncConnection[Any], retention_days: float, *, chunk: int = CHUNK) -> Purged:
    """Delete what both outboxes delivered more than ``retention_days`` ago (by the database's clock), ``chunk``
    rows per transaction; 0 keeps everything. Call with no transaction open: each chunk commits on its own."""
    if retention_days <= 0:
        return Purged()
    deleted = dict.fromkeys(_DELETE, 0)
    for outbox, statement in _DELETE.items():
        while True:
            async with conn.transaction():
                cur = await conn.execute(statement, [retention_days * 86_400, chunk])
            deleted[outbox] += cur.rowcount
            if cur.rowcount < chunk:
                break
    return Purged(**deleted)
