"""Deduplicating anomalies into service tickets: one live ticket per machine and reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

__all__ = ["LIVE_STATUSES", "Ticket", "list_tickets", "priority_for", "process_anomalies"]

LIVE_STATUSES = ("open", "acknowledged", "in_progress")


@dataclass
class Ticket:
    ticket_id: int
    tenant: str
    machine: str
    reason: str
    priority: int
    status: str
    title: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    opened_at: datetime
    details: dict[str, Any]


def priority_for(score: float, threshold: float) -> int:
    """1 (urgent) to 4 (low): how far past its threshold the evidence is."""
    ratio = score / threshold if threshold > 0 else float("inf")
    if ratio >= 4:
        return 1
    if ratio >= 2:
        return 2
    if ratio >= 1.25:
        return 3
    return 4


async def process_anomalies(conn: psycopg.AsyncConnection[Any], limit: int = 500) -> tuple[int, int]:
    """Fold unhandled anomalies into tickets; returns (tickets opened, anomalies handled).

    Rows are claimed with SKIP LOCKED, so several alert workers can run side by side.
    """
    opened = handled = 0
    async with conn.transaction():
        cur = await conn.execute(
            """SELECT a.anomaly_id, a.machine_id, m.tenant_id, a.time, a.detector, a.score, a.threshold, a.sensors,
                      t.name || '/' || s.name || '/' || l.name || '/' || m.name
               FROM anomalies a
               JOIN machines m USING (machine_id)
               JOIN lines l USING (line_id) JOIN sites s USING (site_id) JOIN tenants t ON t.tenant_id = s.tenant_id
               WHERE a.handled_at IS NULL
               ORDER BY a.anomaly_id
               LIMIT %s
               FOR UPDATE OF a SKIP LOCKED""",
            [limit],
        )
        for (
            anomaly_id,
            machine_id,
            tenant_id,
            at,
            detector,
            score,
            threshold,
            sensors,
            path,
        ) in await cur.fetchall():
            reason = "anomaly"
            priority = priority_for(score, threshold)
            title = f"Abnormal {', '.join(sensors[:3]) or 'behaviour'} on {path}"
            details = {
                "detector": detector,
                "score": round(score, 2),
                "threshold": threshold,
                "sensors": sensors,
            }
            tcur = await conn.execute(
                """INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, details, first_seen, last_seen)
                   VALUES (%(tenant)s, %(machine)s, %(reason)s, %(priority)s, %(title)s, %(details)s, %(at)s, %(at)s)
                   ON CONFLICT (machine_id, reason) WHERE status IN ('open', 'acknowledged', 'in_progress')
                   DO UPDATE SET occurrences = tickets.occurrences + 1,
                                 last_seen = greatest(tickets.last_seen, excluded.last_seen),
                                 priority = least(tickets.priority, excluded.priority),
                                 updated_at = now()
                   RETURNING ticket_id, (xmax = 0) AS inserted""",
                {
                    "tenant": tenant_id,
                    "machine": machine_id,
                    "reason": reason,
                    "priority": priority,
                    "title": title,
                    "details": Jsonb(details),
                    "at": at,
                },
            )
            row = await tcur.fetchone()
            assert row is not None
            ticket_id, inserted = row
            await conn.execute(
                "INSERT INTO ticket_events (ticket_id, kind, data) VALUES (%s, %s, %s)",
                [
                    ticket_id,
                    "opened" if inserted else "occurrence",
                    Jsonb({"anomaly_id": anomaly_id, **details}),
                ],
            )
            await conn.execute(
                "UPDATE anomalies SET handled_at = now(), ticket_id = %s WHERE anomaly_id = %s",
                [ticket_id, anomaly_id],
            )
            opened += int(inserted)
            handled += 1
    return opened, handled


async def list_tickets(
    conn: psycopg.AsyncConnection[Any], *, tenant: str | None = None, live_only: bool = True
) -> list[Ticket]:
    """Tickets, most urgent first."""
    cur = conn.cursor(row_factory=class_row(Ticket))
    await cur.execute(
        """SELECT k.ticket_id, t.name AS tenant, s.name || '/' || l.name || '/' || m.name AS machine, k.reason,
                  k.priority, k.status, k.title, k.occurrences, k.first_seen, k.last_seen, k.opened_at, k.details
           FROM tickets k
           JOIN tenants t ON t.tenant_id = k.tenant_id
           JOIN machines m ON m.machine_id = k.machine_id
           JOIN lines l ON l.line_id = m.line_id JOIN sites s ON s.site_id = l.site_id
           WHERE (%(tenant)s::text IS NULL OR t.name = %(tenant)s)
             AND (NOT %(live)s OR k.status IN ('open', 'acknowledged', 'in_progress'))
           ORDER BY k.priority, k.opened_at""",
        {"tenant": tenant, "live": live_only},
    )
    return await cur.fetchall()
