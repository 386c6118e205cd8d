"""Ticket events on MQTT: every event of a tenant's tickets published, QoS 1, on
``<topic_prefix>/<tenant>/tickets/<ticket id>``, fed by a transactional outbox.

A trigger on ``ticket_events`` writes one ``mqtt_outbox`` row per event in the event's own transaction (migration
13), so a change and its publication cannot disagree: a rolled-back change publishes nothing, a committed one is
published once the broker takes it. One alerts worker at a time drains the outbox (a transaction-scoped advisory
lock), in event order, and marks a row published only after the broker's PUBACK: events of a ticket arrive in
order, and at least once. A crash between a PUBACK and the commit publishes that event again with the same ``id``,
which subscribers de-duplicate on. While the broker is unreachable the rows wait; the publisher tries again after
a backoff that doubles from ``retry_s``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any

import aiomqtt
import orjson
import psycopg
from psycopg.rows import class_row

from alerts._tickets import _TICKET_COLUMNS, Ticket, TicketEvent, ticket_json
from alerts._webhooks import _as_of
from wearline.settings import MqttSettings

__all__ = ["TicketPublisher", "ticket_topic"]

log = logging.getLogger(__name__)


def ticket_topic(prefix: str, tenant: str, ticket_id: int) -> str:
    """Where a ticket's events are published: under the tenant's level, so a broker ACL that confines a tenant to
    ``<prefix>/<tenant>/#`` covers them, and three levels deep, so telemetry's five-level filter never matches."""
    return f"{prefix}/{tenant}/tickets/{ticket_id}"


def event_message(ticket: Ticket, event: TicketEvent) -> bytes:
    """One event as published: its idempotency key (the same as the webhooks'), the event and the work order as the
    event left it."""
    return orjson.dumps(
        {
            "id": f"{ticket.external_id}-event-{event.event_id}",
            "event_id": event.event_id,
            "event": {"at": event.at, "kind": event.kind, "actor": event.actor, "why": event.why, "data": event.data},
            "ticket": ticket_json(ticket),
        }
    )


class TicketPublisher:
    """Drains ``mqtt_outbox`` to the broker; keeps one connection between drains and reconnects after a failure.

    ``drain`` never raises for the broker: a lost or refused connection leaves the rows for the next drain after
    the backoff, and the publisher says so once per outage in the log.
    """

    def __init__(
        self, mqtt: MqttSettings, topic_prefix: str, *, retry_s: float = 1.0, max_retry_s: float = 60.0
    ) -> None:
        self._mqtt = mqtt
        self._prefix = topic_prefix
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._failures = 0
        self._retry_at = 0.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None
        self.published = 0
        self.failed = 0
        """Publications the broker did not take (the event waits for the next drain after the backoff)."""

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        m = self._mqtt
        client = aiomqtt.Client(
            m.host,
            m.port,
            # A name of its own: the ingest subscription's client id must not be taken over (the broker would drop
            # the older connection); several alert workers each have one.
            identifier=f"{m.client_id[:60]}-tickets-{secrets.token_hex(4)}",
            username=m.username,
            password=m.password.get_secret_value() if m.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if m.protocol == "5" else aiomqtt.ProtocolVersion.V311,
            tls_context=m.ssl_context(),
            keepalive=m.keepalive_s,
            # Bounds the connection and each PUBACK: a broker silent that long is treated as gone.
            timeout=m.connect_timeout_s,
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(client)
        self._stack, self._client = stack, client
        return client

    async def _disconnect(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await stack.aclose()

    async def aclose(self) -> None:
        await self._disconnect()

    async def drain(self, conn: psycopg.AsyncConnection[Any], *, limit: int = 500) -> int:
        """Publish up to ``limit`` pending events, oldest first; returns how many the broker acknowledged."""
        if time.monotonic() < self._retry_at:
            return 0
        async with conn.transaction():
            # One drainer per schema at a time keeps every ticket's events in order without per-row bookkeeping.
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock('mqtt_outbox'::regclass::oid::bigint)")
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0
            cur = await conn.execute(
                """SELECT o.event_id, o.ticket_id, o.ticket_state, e.at, e.kind, e.actor, e.why, e.data
                   FROM mqtt_outbox o JOIN ticket_events e USING (event_id)
                   WHERE o.published_at IS NULL ORDER BY o.event_id LIMIT %s""",
                [limit],
            )
            rows = await cur.fetchall()
            if not rows:
                return 0
            tcur = conn.cursor(row_factory=class_row(Ticket))
            await tcur.execute(f"SELECT {_TICKET_COLUMNS} WHERE k.ticket_id = ANY(%s)", [list({r[1] for r in rows})])
            tickets = {t.ticket_id: t for t in await tcur.fetchall()}
            done: list[int] = []
            failed: int | None = None
            try:
                client = await self._connected()
                for event_id, ticket_id, state, at, kind, actor, why, data in rows:
                    failed = event_id
                    ticket = _as_of(tickets[ticket_id], state)
                    body = event_message(ticket, TicketEvent(event_id, at, kind, actor, why, data))
                    await client.publish(ticket_topic(self._prefix, ticket.tenant, ticket_id), body, qos=1)
                    done.append(event_id)
                failed = None
            except aiomqtt.MqttError as exc:
                await self._disconnect()
                self.failed += 1
                self._failures += 1
                delay = min(self._retry_s * 2 ** (self._failures - 1), self._max_retry_s)
                self._retry_at = time.monotonic() + delay
                if self._failures == 1:
                    log.warning(
                        "MQTT broker %s:%d unavailable for ticket events, retrying every %.1f s and up: %s",
                        self._mqtt.host,
                        self._mqtt.port,
                        self._retry_s,
                        exc,
                    )
            else:
                if self._failures:
                    log.info("ticket events published again after %d failed attempt(s)", self._failures)
                self._failures = 0
            await conn.execute(
                "UPDATE mqtt_outbox SET published_at = now(), attempts = attempts + 1 WHERE event_id = ANY(%s)", [done]
            )
            if failed is not None:
                await conn.execute("UPDATE mqtt_outbox SET attempts = attempts + 1 WHERE event_id = %s", [failed])
        self.published += len(done)
        return len(done)
