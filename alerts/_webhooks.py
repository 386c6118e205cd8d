"""Ticket events to other systems: per-tenant webhooks fed by a transactional outbox.

A trigger on ``ticket_events`` writes one outbox row per live webhook of the ticket's tenant in the event's own
transaction (migration 12). Delivery takes one due row at a time (SKIP LOCKED, so several alert workers share the
work), POSTs it, and records the outcome in the same transaction: a 2xx marks it delivered, anything else schedules
the next attempt with exponential backoff, and after ``alerts.webhook_max_attempts`` the row is marked failed and
kept. A crash between the POST and the commit re-sends it: receivers de-duplicate on the ``Idempotency-Key``
header, which is the same on every attempt. Events of one ticket reach a webhook in order: a row waits while an
earlier one of the same ticket is still pending.

Each request is signed: ``X-Wearline-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the
webhook's secret, so a receiver can check both origin and freshness.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
import psycopg
from psycopg.rows import class_row

from alerts._tickets import Ticket, TicketEvent, ticket_history, ticket_json
from wearline.errors import WearlineError
from wearline.settings import AlertsSettings

__all__ = [
    "Delivery",
    "WebhookError",
    "WebhookInfo",
    "add_webhook",
    "deliver_due",
    "list_webhooks",
    "payload",
    "remove_webhook",
    "sign",
]

Format = Literal["wearline", "alertmanager"]


class WebhookError(WearlineError):
    """A webhook command that cannot be done: an unknown tenant or webhook, a bad URL."""


@dataclass
class WebhookInfo:
    webhook_id: int
    tenant: str
    name: str
    url: str
    format: str
    created_at: datetime
    removed_at: datetime | None
    pending: int
    delivered: int
    failed: int


@dataclass(frozen=True)
class Delivery:
    webhook: str
    outbox_id: int
    status: Literal["delivered", "retry", "failed"]
    detail: str


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def add_webhook(
    conn: psycopg.AsyncConnection[Any], *, tenant: str, name: str, url: str, fmt: Format, secret: str | None
) -> tuple[int, str]:
    """A new webhook for ``tenant``; returns (its id, its signing secret)."""
    if not url.startswith(("http://", "https://")):
        raise WebhookError(f"webhook URL must start with http:// or https://: {url!r}")
    cur = await conn.execute("SELECT tenant_id FROM tenants WHERE name = %s", [tenant])
    row = await cur.fetchone()
    if row is None:
        raise WebhookError(f"no tenant {tenant!r}")
    secret = secret or secrets.token_urlsafe(32)
    try:
        cur = await conn.execute(
            """INSERT INTO webhooks (tenant_id, name, url, format, secret) VALUES (%s, %s, %s, %s, %s)
               RETURNING webhook_id""",
            [row[0], name, url, fmt, secret],
        )
    except psycopg.errors.UniqueViolation as exc:
        raise WebhookError(f"tenant {tenant} already has a webhook named {name!r}") from exc
    created = await cur.fetchone()
    assert created is not None
    return int(created[0]), secret


async def remove_webhook(conn: psycopg.AsyncConnection[Any], webhook_id: int) -> None:
    """Stop feeding a webhook; what it already has pending is still delivered."""
    cur = await conn.execute(
        "UPDATE webhooks SET removed_at = coalesce(removed_at, now()) WHERE webhook_id = %s RETURNING 1",
        [webhook_id],
    )
    if await cur.fetchone() is None:
        raise WebhookError(f"no webhook #{webhook_id}")


async def list_webhooks(conn: psycopg.AsyncConnection[Any]) -> list[WebhookInfo]:
    cur = conn.cursor(row_factory=class_row(WebhookInfo))
    await cur.execute(
        """SELECT w.webhook_id, t.name AS tenant, w.name, w.url, w.format, w.created_at, w.removed_at,
                  count(*) FILTER (WHERE o.delivered_at IS NULL AND o.failed_at IS NULL AND o.outbox_id IS NOT NULL)
                      AS pending,
                  count(o.delivered_at) AS delivered, count(o.failed_at) AS failed
           FROM webhooks w JOIN tenants t USING (tenant_id) LEFT JOIN outbox o USING (webhook_id)
           GROUP BY w.webhook_id, t.name ORDER BY w.webhook_id"""
    )
    return await cur.fetchall()


def payload(fmt: str, webhook: str, key: str, ticket: Ticket, event: TicketEvent) -> dict[str, Any]:
    """The body for one event: Wearline's own shape, or Alertmanager's webhook shape (version 4), which existing
    alert receivers (chat bridges, incident tools, CMMS connectors) already accept."""
    if fmt == "wearline":
        return {
            "id": key,
            "event": {"at": event.at, "kind": event.kind, "actor": event.actor, "why": event.why, "data": event.data},
            "ticket": ticket_json(ticket),
        }
    site, line, machine = ticket.machine.split("/", 2)
    labels = {
        "alertname": f"wearline_{ticket.reason}",
        "tenant": ticket.tenant,
        "site": site,
        "line": line,
        "machine": machine,
        "failure_mode": ticket.reason,
        "priority": f"P{ticket.priority}",
        "severity": {1: "critical", 2: "major", 3: "minor"}.get(ticket.priority, "warning"),
        "ticket": str(ticket.ticket_id),
    }
    live = ticket.status in ("open", "acknowledged", "in_progress")
    alert = {
        "status": "firing" if live else "resolved",
        "labels": labels,
        "annotations": {
            "summary": ticket.title,
            "description": f"{event.kind} by {event.actor}: {event.why}".rstrip(": "),
            "ticket_status": ticket.status,
        },
        "startsAt": ticket.opened_at,
        "endsAt": "0001-01-01T00:00:00Z" if live else event.at,
        "generatorURL": "",
        "fingerprint": ticket.external_id,
    }
    return {
        "version": "4",
        "groupKey": f"{{}}:{{ticket={ticket.ticket_id!r}}}",
        "truncatedAlerts": 0,
        "status": alert["status"],
        "receiver": webhook,
        "groupLabels": {"ticket": str(ticket.ticket_id)},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "alerts": [alert],
    }


# The ticket's columns that change over its life, as the outbox's snapshot holds them.
_CHANGING = ("status", "priority", "title", "team", "assignee", "occurrences", "escalation_level", "reopened", "kind")
_CHANGING_TIMES = ("due_at", "last_seen")


def _as_of(ticket: Ticket, state: dict[str, Any]) -> Ticket:
    """``ticket`` as it was when the event was written (names and ids do not change; the rest may have)."""
    values: dict[str, Any] = {k: state[k] for k in _CHANGING}
    values |= {k: state[k] and datetime.fromisoformat(state[k]) for k in _CHANGING_TIMES}
    return dataclasses.replace(ticket, details=state["details"], **values)


def _backoff(attempts: int) -> timedelta:
    # 2 s, 4 s, 8 s ... capped at an hour; jitter keeps many failing rows from retrying in lockstep.
    base = min(2.0**attempts, 3600.0)
    return timedelta(seconds=base * (0.75 + secrets.randbelow(500) / 1000))


async def deliver_due(
    conn: psycopg.AsyncConnection[Any],
    client: httpx.AsyncClient,
    settings: AlertsSettings,
    *,
    now: datetime | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliver up to ``limit`` due outbox rows, one transaction each; returns what happened to each."""
    done: list[Delivery] = []
    for _ in range(limit):
        async with conn.transaction():
            cur = await conn.execute(
                """SELECT o.outbox_id, o.attempts, o.event_id, o.ticket_id, o.ticket_state, w.name, w.url, w.format,
                          w.secret, coalesce(%(now)s, now())
                   FROM outbox o JOIN webhooks w USING (webhook_id)
                   WHERE o.delivered_at IS NULL AND o.failed_at IS NULL
                     AND o.next_attempt_at <= coalesce(%(now)s, now())
                     AND NOT EXISTS (SELECT 1 FROM outbox e
                                     WHERE e.webhook_id = o.webhook_id AND e.ticket_id = o.ticket_id
                                       AND e.outbox_id < o.outbox_id
                                       AND e.delivered_at IS NULL AND e.failed_at IS NULL)
                   ORDER BY o.next_attempt_at, o.outbox_id
                   LIMIT 1
                   FOR UPDATE OF o SKIP LOCKED""",
                {"now": now},
            )
            row = await cur.fetchone()
            if row is None:
                break
            outbox_id, attempts, event_id, ticket_id, state, name, url, fmt, secret, at = row
            ticket, events = await ticket_history(conn, ticket_id)
            ticket = _as_of(ticket, state)
            event = next(e for e in events if e.event_id == event_id)
            key = f"{ticket.external_id}-event-{event_id}"
            body = orjson.dumps(payload(fmt, name, key, ticket, event))
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "X-Wearline-Signature": sign(secret, int(time.time()), body),
                "User-Agent": "wearline-webhooks",
            }
            try:
                response = await client.post(url, content=body, headers=headers, timeout=settings.webhook_timeout_s)
                error = None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            if error is None:
                await conn.execute(
                    "UPDATE outbox SET delivered_at = %s, attempts = attempts + 1 WHERE outbox_id = %s", [at, outbox_id]
                )
                done.append(Delivery(name, outbox_id, "delivered", ""))
            elif attempts + 1 >= settings.webhook_max_attempts:
                await conn.execute(
                    "UPDATE outbox SET failed_at = %s, attempts = attempts + 1, last_error = %s WHERE outbox_id = %s",
                    [at, error, outbox_id],
                )
                done.append(Delivery(name, outbox_id, "failed", error))
            else:
                await conn.execute(
                    """UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s
                       WHERE outbox_id = %s""",
                    [error, at + _backoff(attempts + 1), outbox_id],
                )
                done.append(Delivery(name, outbox_id, "retry", error))
    return done
