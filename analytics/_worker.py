"""The analytics worker: score each machine's new readings and record anomalies, resuming from a watermark."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from psycopg.types.json import Jsonb

from analytics._zscore import Matrix, RobustZ
from wearline.db import open_pool
from wearline.settings import Settings

__all__ = ["AnalyticsSummary", "run_analytics"]

log = logging.getLogger(__name__)
DETECTOR = "robust_z"
MAX_ROWS_PER_PASS = 5000


@dataclass
class AnalyticsSummary:
    passes: int = 0
    rows_scored: int = 0
    anomalies: int = 0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("wearline_analytics_rows_scored_total", "Readings rows scored.", registry=registry)
        self.anomalies = Counter(
            "wearline_analytics_anomalies_total",
            "Anomalies recorded, by detector.",
            ["detector"],
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "wearline_analytics_pass_seconds", "Time for one pass over all machines.", registry=registry
        )
        self.lag_seconds = Gauge(
            "wearline_analytics_lag_seconds",
            "Age of the newest reading scored in the last pass.",
            registry=registry,
        )


def _matrix(rows: list[tuple[Any, ...]], col: int) -> Matrix:
    width = max((len(r[col]) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        vals = r[col]
        out[i, : len(vals)] = [np.nan if v is None else v for v in vals]
    return out


async def _score_machine(
    conn: psycopg.AsyncConnection[Any], machine_id: int, settings: Settings, detector: RobustZ
) -> tuple[int, int, datetime | None]:
    """Score one machine's rows after its watermark; returns (rows scored, anomalies, newest time)."""
    an = settings.analytics
    async with conn.transaction():
        # Skip a machine another worker is scoring right now instead of doing its work twice.
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('wearline-analytics'), %s)", [machine_id])
        locked = await cur.fetchone()
        if not locked or not locked[0]:
            return 0, 0, None
        cur = await conn.execute(
            "SELECT last_time FROM analytics_watermarks WHERE machine_id = %s AND detector = %s FOR UPDATE",
            [machine_id, DETECTOR],
        )
        wm_row = await cur.fetchone()
        watermark = wm_row[0] if wm_row else None
        cur = await conn.execute(
            """SELECT time, vals FROM readings WHERE machine_id = %s AND (%s::timestamptz IS NULL OR time > %s)
               ORDER BY time LIMIT %s""",
            [machine_id, watermark, watermark, MAX_ROWS_PER_PASS],
        )
        new = await cur.fetchall()
        if not new:
            return 0, 0, None
        anomalies = 0
        if watermark is None:
            # Nothing scored yet: the first rows become the baseline and are not scored themselves.
            scored = new[an.baseline_rows :]
            if not scored:
                if len(new) >= an.baseline_rows:
                    await _set_watermark(conn, machine_id, new[-1][0])
                return 0, 0, None
            baseline_rows = new[: an.baseline_rows]
        else:
            scored = new
            cur = await conn.execute(
                "SELECT time, vals FROM readings WHERE machine_id = %s AND time <= %s ORDER BY time DESC LIMIT %s",
                [machine_id, watermark, an.baseline_rows],
            )
            baseline_rows = await cur.fetchall()
        result = detector.score(_matrix(baseline_rows, 1), _matrix(scored, 1))
        flagged = np.flatnonzero(result.flagged)
        if len(flagged) >= an.min_flagged:
            z = np.nan_to_num(result.z[flagged], nan=0.0)
            per_sensor = z.max(axis=0)
            top = np.argsort(per_sensor)[::-1]
            cur = await conn.execute("SELECT position, name FROM sensors WHERE machine_id = %s", [machine_id])
            names = dict(await cur.fetchall())
            drivers = [names.get(int(p) + 1, f"#{int(p) + 1}") for p in top if per_sensor[p] > detector.threshold]
            cur = await conn.execute(
                """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors, details)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                [
                    machine_id,
                    scored[int(flagged[0])][0],
                    DETECTOR,
                    float(per_sensor.max()),
                    detector.threshold,
                    drivers,
                    Jsonb(
                        {
                            "flagged_rows": len(flagged),
                            "scored_rows": len(scored),
                            "z": {
                                names.get(int(p) + 1, f"#{int(p) + 1}"): round(float(per_sensor[p]), 2) for p in top[:5]
                            },
                        }
                    ),
                ],
            )
            anomalies = cur.rowcount
        await _set_watermark(conn, machine_id, scored[-1][0])
        return len(scored), anomalies, scored[-1][0]


async def _set_watermark(conn: psycopg.AsyncConnection[Any], machine_id: int, last: datetime) -> None:
    await conn.execute(
        """INSERT INTO analytics_watermarks (machine_id, detector, last_time) VALUES (%s, %s, %s)
           ON CONFLICT (machine_id, detector) DO UPDATE SET last_time = excluded.last_time, updated_at = now()""",
        [machine_id, DETECTOR, last],
    )


async def run_analytics(
    settings: Settings, stop: asyncio.Event, *, registry: CollectorRegistry = REGISTRY
) -> AnalyticsSummary:
    """Score new readings every ``analytics.poll_interval_s`` until ``stop`` is set; a pass in progress finishes."""
    metrics = _Metrics(registry)
    detector = RobustZ(settings.analytics.z_threshold)
    summary = AnalyticsSummary()
    pool = await open_pool(settings.database, name="analytics")
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            newest: datetime | None = None
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT machine_id FROM machines ORDER BY machine_id")
                    for (machine_id,) in await cur.fetchall():
                        rows, found, last = await _score_machine(conn, machine_id, settings, detector)
                        summary.rows_scored += rows
                        summary.anomalies += found
                        metrics.rows.inc(rows)
                        if found:
                            metrics.anomalies.labels(DETECTOR).inc(found)
                            log.info("machine %d: anomaly recorded", machine_id)
                        if last is not None and (newest is None or last > newest):
                            newest = last
            except psycopg.OperationalError as exc:
                log.warning("database unavailable, retrying next pass: %s", exc)
            summary.passes += 1
            metrics.pass_seconds.observe(time.perf_counter() - t0)
            if newest is not None:
                metrics.lag_seconds.set(max(0.0, time.time() - newest.timestamp()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.analytics.poll_interval_s)
    finally:
        await pool.close()
        log.info(
            "analytics stopped: %d passes, %d rows scored, %d anomalies",
            summary.passes,
            summary.rows_scored,
            summary.anomalies,
        )
    return summary
