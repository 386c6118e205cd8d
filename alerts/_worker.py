"""The alerts worker: every poll interval, fold new anomalies and remaining-life estimates into tickets, escalate
what nobody acknowledged and resolve what has cleared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from alerts._lifecycle import LIVE_STATUSES, escalate_unacknowledged, resolve_cleared
from alerts._outlets import Drained, Outlets
from alerts._retention import delete_delivered
from alerts._rules import RuleBook, RuleSet, load_rules
from alerts._tickets import _now, process_anomalies, process_rul
from alerts._watch import silent_machines, watch_dead_letters, watch_readings
from alerts._webhooks import deliver_due
from wearline.db import open_pool
from wearline.health import PROCESS_HEALTH, Health, PassClock
from wearline.settings import AlertsSettings, Settings

__all__ = ["AlertsSummary", "alerts_pass", "lifecycle_durations", "run_alerts"]

log = logging.getLogger(__name__)

_RETENTION_EVERY_S = 3600.0
_OUTCOMES = ("delivered", "retry", "failed")  # a webhook delivery's
_FILINGS = ("filed", "retry", "failed")  # a CMMS work request's


@dataclass
class AlertsSummary:
    tickets_opened: int = 0
    anomalies_handled: int = 0
    estimates_handled: int = 0
    escalations: int = 0
    auto_resolved: int = 0
    readings_watched: int = 0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.opened = Counter(
            "wearline_alerts_tickets_opened_total", "Service tickets opened or reopened.", registry=registry
        )
        self.handled = Counter(
            "wearline_alerts_anomalies_handled_total", "Anomalies folded into tickets.", registry=registry
        )
        self.estimates = Counter(
            "wearline_alerts_rul_estimates_handled_total",
            "Remaining-life estimates examined (those under the horizon become ticket evidence).",
            registry=registry,
        )
        self.escalations = Counter(
            "wearline_alerts_escalations_total",
            "Open tickets escalated for want of acknowledgement.",
            registry=registry,
        )
        self.auto_resolved = Counter(
            "wearline_alerts_auto_resolved_total",
            "Live tickets resolved because their condition cleared.",
            registry=registry,
        )
        self.live = Gauge(
            "wearline_alerts_live_tickets",
            "Live (open, acknowledged, in progress) tickets by priority.",
            ["priority"],
            registry=registry,
        )
        for p in range(1, 5):
            self.live.labels(str(p))  # every priority reads 0, not absent, before its first ticket
        self.silent = Gauge(
            "wearline_alerts_silent_machines",
            "Machines a live silence ticket covers (each machine of a silent gateway's line counts).",
            registry=registry,
        )
        self.deliveries = Counter(
            "wearline_alerts_webhook_deliveries_total",
            "Webhook delivery attempts by webhook and outcome (delivered, retry, failed).",
            ["webhook", "outcome"],
            registry=registry,
        )
        buckets = (60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 3 * 86400, 7 * 86400)
        self.to_ack = Histogram(
            "wearline_alerts_time_to_acknowledge_seconds",
            "From a ticket's opening to its acknowledgement (or the start of work).",
            buckets=buckets,
            registry=registry,
        )
        self.to_resolve = Histogram(
            "wearline_alerts_time_to_resolve_seconds",
            "From a ticket's opening to its resolution (by hand or because its condition cleared).",
            buckets=buckets,
            registry=registry,
        )
        self.readings = Counter(
            "wearline_alerts_readings_watched_total",
            "Readings examined by threshold and silence rules.",
            registry=registry,
        )
        self.rule_reloads = Counter(
            "wearline_alerts_rule_reloads_total",
            "Rule files reloaded after a change, by outcome (ok; error: the previous rules stayed).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("ok", "error"):
            self.rule_reloads.labels(outcome)
        self.outbox = Gauge(
            "wearline_alerts_outbox_pending",
            "Webhook deliveries not yet made (due or waiting to retry).",
            registry=registry,
        )
        self.mqtt = Counter(
            "wearline_alerts_mqtt_publications_total",
            "Ticket events published on MQTT by outcome (published: the broker acknowledged it; failed: the broker "
            "did not take it, tried again after a backoff).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("published", "failed"):
            self.mqtt.labels(outcome)
        self.mqtt_outbox = Gauge(
            "wearline_alerts_mqtt_outbox_pending", "Ticket events not yet published on MQTT.", registry=registry
        )
        self.cmms = Counter(
            "wearline_alerts_cmms_filings_total",
            "CMMS work request filing attempts by adapter and outcome (filed, retry, failed).",
            ["adapter", "outcome"],
            registry=registry,
        )
        self.cmms_outbox = Gauge(
            "wearline_alerts_cmms_outbox_pending",
            "CMMS work requests not yet filed (due or waiting to retry).",
            registry=registry,
        )
        self.deleted = Counter(
            "wearline_alerts_outbox_deleted_total",
            "Delivered outbox rows deleted after alerts.outbox_retention_days, by outbox (webhooks, mqtt).",
            ["outbox"],
            registry=registry,
        )
        for outbox in ("webhooks", "mqtt"):
            self.deleted.labels(outbox)

    def targets(self, webhooks: list[str], adapters: list[str]) -> None:
        """Every outcome of every live webhook and CMMS reads 0, not absent, before its first delivery."""
        for name in webhooks:
            for outcome in _OUTCOMES:
                self.deliveries.labels(name, outcome)
        for name in adapters:
            for outcome in _FILINGS:
                self.cmms.labels(name, outcome)


# How much each outbox still owes, and the targets whose metrics should exist before their first delivery.
_DEPTHS = """SELECT (SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL),
                    (SELECT count(*) FROM mqtt_outbox WHERE published_at IS NULL),
                    (SELECT count(*) FROM cmms_requests WHERE filed_at IS NULL AND failed_at IS NULL),
                    ARRAY(SELECT DISTINCT name FROM webhooks WHERE removed_at IS NULL),
                    ARRAY(SELECT DISTINCT name FROM cmms_adapters WHERE removed_at IS NULL)"""


async def alerts_pass(
    conn: psycopg.AsyncConnection[Any],
    settings: AlertsSettings,
    *,
    rules: RuleSet | None = None,
    topic_prefix: str = "wearline",
) -> AlertsSummary:
    """One pass over new evidence (anomalies, remaining-life estimates, readings, dead letters) by the rules, then
    the lifecycle's clock-driven changes. ``rules`` defaults to the settings' rule files, read now."""
    rules = rules or load_rules(settings)
    opened_a, anomalies = await process_anomalies(conn, settings, rules=rules)
    opened_r, estimates = await process_rul(conn, settings, rules=rules)
    async with conn.transaction():
        now = await _now(conn)
        watched = await watch_readings(conn, settings, rules, now=now)
        opened_d = await watch_dead_letters(conn, settings, rules, topic_prefix, now=now)
    async with conn.transaction():
        escalated = await escalate_unacknowledged(conn, settings, now=now, rules=rules)
        resolved = await resolve_cleared(conn, settings, now=now)
    for ticket_id, level, notify in escalated:
        log.warning("ticket #%d escalated to level %d: notify %s", ticket_id, level, notify)
    if resolved:
        log.info("resolved %d ticket(s) whose condition cleared: %s", len(resolved), resolved)
    return AlertsSummary(
        opened_a + opened_r + watched.opened + opened_d,
        anomalies,
        estimates,
        len(escalated),
        len(resolved),
        watched.readings,
    )


async def lifecycle_durations(
    conn: psycopg.AsyncConnection[Any], after: int | None
) -> tuple[int, list[tuple[str, float]]]:
    """Acknowledgements and resolutions recorded after event ``after`` (None: from now on), whoever made them (the
    CLI, the API, this worker), as (``acknowledged`` or ``resolved``, seconds since the ticket opened); returns the
    newest event id seen too."""
    if after is None:
        cur = await conn.execute("SELECT coalesce(max(event_id), 0) FROM ticket_events")
        row = await cur.fetchone()
        return (int(row[0]) if row else 0), []
    cur = await conn.execute(
        """SELECT e.event_id,
                  CASE WHEN e.data->>'to' = 'resolved' THEN 'resolved' ELSE 'acknowledged' END,
                  extract(epoch FROM e.at - k.opened_at)::float8
           FROM ticket_events e JOIN tickets k USING (ticket_id)
           WHERE e.event_id > %s AND e.kind = 'status'
             AND (e.data->>'to' = 'resolved'
                  OR (e.data->>'from' = 'open' AND e.data->>'to' IN ('acknowledged', 'in_progress')))
           ORDER BY e.event_id LIMIT 10000""",
        [after],
    )
    rows = await cur.fetchall()
    return (rows[-1][0] if rows else after), [(r[1], max(r[2], 0.0)) for r in rows]


async def _retention(pool: AsyncConnectionPool, settings: AlertsSettings, metrics: _Metrics) -> float:
    """Delete what the outboxes delivered past ``outbox_retention_days``; returns when to run again (a failure is
    logged and tried again in a minute: the outboxes only grow meanwhile)."""
    try:
        async with pool.connection() as conn:
            purged = await delete_delivered(conn, settings.outbox_retention_days)
    except psycopg.Error as exc:
        log.warning("outbox retention failed, retrying in 60 s: %s", exc)
        return time.monotonic() + 60
    metrics.deleted.labels("webhooks").inc(purged.webhooks)
    metrics.deleted.labels("mqtt").inc(purged.mqtt)
    if purged.webhooks or purged.mqtt:
        log.info(
            "outbox retention: deleted %d webhook deliveries and %d published ticket events older than %g days",
            purged.webhooks,
            purged.mqtt,
            settings.outbox_retention_days,
        )
    return time.monotonic() + _RETENTION_EVERY_S


async def run_alerts(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    health: Health = PROCESS_HEALTH,
) -> AlertsSummary:
    """Process evidence and the ticket lifecycle until ``stop`` is set; ``health`` gets ``database`` and
    ``keeping_up`` (a pass ended within a minute, or ten poll intervals)."""
    metrics = _Metrics(registry)
    health.declare("database")
    clock = PassClock(health, max(60.0, 10 * settings.alerts.poll_interval_s))
    book = RuleBook(settings.alerts)
    log.info("alert rules: %d from %d file(s)", len(book.current.rules), len(book.current.files))
    total = AlertsSummary()
    pool = await open_pool(settings.database, name="alerts")
    client = httpx.AsyncClient(follow_redirects=False)
    outlets = Outlets(settings)  # ticket events on MQTT, CMMS work requests
    reloads = (0, 0)
    seen_event: int | None = None  # durations count from this process's start: a restart does not count twice
    retention_due = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() >= retention_due:
                retention_due = await _retention(pool, settings.alerts, metrics)
            silent = 0
            try:
                async with pool.connection() as conn:
                    rules = book.refresh()
                    done = await alerts_pass(conn, settings.alerts, rules=rules, topic_prefix=settings.topic_prefix)
                    deliveries = await deliver_due(conn, client, settings.alerts)
                    drained = await outlets.drain(conn)
                    cur = await conn.execute(
                        "SELECT priority, count(*) FROM tickets WHERE status = ANY(%s) GROUP BY priority",
                        [list(LIVE_STATUSES)],
                    )
                    live: dict[int, int] | None = dict(await cur.fetchall())
                    silent = await silent_machines(conn)
                    cur = await conn.execute(_DEPTHS)
                    pending = await cur.fetchone()
                    seen_event, durations = await lifecycle_durations(conn, seen_event)
                    for kind, seconds in durations:
                        (metrics.to_ack if kind == "acknowledged" else metrics.to_resolve).observe(seconds)
                health.set("database", True)
                clock.passed()
            except psycopg.OperationalError as exc:
                health.set("database", False, str(exc))
                log.warning("database unavailable, retrying: %s", exc)
                done, live, deliveries, pending, drained = AlertsSummary(), None, [], None, Drained()
            for d in deliveries:
                metrics.deliveries.labels(d.webhook, d.status).inc()
                if d.status == "failed":
                    log.error("webhook %s: gave up on outbox row %d: %s", d.webhook, d.outbox_id, d.detail)
                elif d.status == "retry":
                    log.warning("webhook %s: delivery failed, will retry: %s", d.webhook, d.detail)
            metrics.mqtt.labels("published").inc(drained.published)
            metrics.mqtt.labels("failed").inc(drained.publish_failed)
            for f in drained.filings:
                metrics.cmms.labels(f.adapter, f.status).inc()
            if pending is not None:
                metrics.outbox.set(pending[0])
                metrics.mqtt_outbox.set(pending[1])
                metrics.cmms_outbox.set(pending[2])
                metrics.targets(pending[3], pending[4])
            if done.tickets_opened:
                log.info("opened %d ticket(s)", done.tickets_opened)
            metrics.opened.inc(done.tickets_opened)
            metrics.handled.inc(done.anomalies_handled)
            metrics.estimates.inc(done.estimates_handled)
            metrics.escalations.inc(done.escalations)
            metrics.readings.inc(done.readings_watched)
            metrics.rule_reloads.labels("ok").inc(book.reloads - reloads[0])
            metrics.rule_reloads.labels("error").inc(book.reload_errors - reloads[1])
            reloads = (book.reloads, book.reload_errors)
            metrics.auto_resolved.inc(done.auto_resolved)
            if live is not None:
                for p in range(1, 5):
                    metrics.live.labels(str(p)).set(live.get(p, 0))
                metrics.silent.set(silent)
            total.tickets_opened += done.tickets_opened
            total.anomalies_handled += done.anomalies_handled
            total.estimates_handled += done.estimates_handled
            total.escalations += done.escalations
            total.auto_resolved += done.auto_resolved
            if done.anomalies_handled == 0 and done.estimates_handled == 0 and not deliveries:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.alerts.poll_interval_s)
    finally:
        await client.aclose()
        await outlets.aclose()
        await pool.close()
        log.info(
            "alerts stopped: %d tickets opened, %d anomalies and %d estimates handled, %d escalations, "
            "%d resolved as cleared",
            total.tickets_opened,
            total.anomalies_handled,
            total.estimates_handled,
            total.escalations,
            total.auto_resolved,
        )
    return total
