"""The alerts worker: turn new anomalies into tickets every poll interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from alerts._tickets import process_anomalies
from wearline.db import open_pool
from wearline.settings import Settings

__all__ = ["AlertsSummary", "run_alerts"]

log = logging.getLogger(__name__)


@dataclass
class AlertsSummary:
    tickets_opened: int = 0
    anomalies_handled: int = 0


async def run_alerts(
    settings: Settings, stop: asyncio.Event, *, registry: CollectorRegistry = REGISTRY
) -> AlertsSummary:
    """Process anomalies until ``stop`` is set."""
    opened_total = Counter("wearline_alerts_tickets_opened_total", "Service tickets opened.", registry=registry)
    handled_total = Counter(
        "wearline_alerts_anomalies_handled_total", "Anomalies folded into tickets.", registry=registry
    )
    summary = AlertsSummary()
    pool = await open_pool(settings.database, name="alerts")
    try:
        while not stop.is_set():
            try:
                async with pool.connection() as conn:
                    opened, handled = await process_anomalies(conn)
            except psycopg.OperationalError as exc:
                log.warning("database unavailable, retrying: %s", exc)
                opened = handled = 0
            if opened:
                log.info("opened %d ticket(s)", opened)
            opened_total.inc(opened)
            handled_total.inc(handled)
            summary.tickets_opened += opened
            summary.anomalies_handled += handled
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.alerts.poll_interval_s)
    finally:
        await pool.close()
        log.info(
            "alerts stopped: %d tickets opened, %d anomalies handled",
            summary.tickets_opened,
            summary.anomalies_handled,
        )
    return summary
