"""The analytics worker: score each owned machine's new readings, record anomalies and RUL estimates.

Each machine is scored from a stored watermark, in the same transaction that records what the scoring found and
moves the watermark, so a restarted worker resumes where the last commit left off and no reading is scored
twice. Machines are split between workers by leases (:mod:`analytics._leases`). A streaming detector's state is
kept in memory between passes and rebuilt from the rows just before the watermark when it is missing or stale
(after a restart, or when the machine was another worker's). RUL models read the machine's whole history as
hourly means from the ``readings_hourly`` rollup (migration 0006), the shape they were trained on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from psycopg import sql
from psycopg.types.json import Jsonb

from analytics._base import Matrix, RunHistory
from analytics._ewma import EwmaMad
from analytics._leases import claim_machines, release_all
from analytics._offline import DETECTORS, _Conditions, detector_name
from analytics._registry import ModelCache
from analytics._threshold import Thresholded
from wearline.db import open_pool
from wearline.db.migrations.v0006_readings_hourly import POSITIONS as ROLLUP_POSITIONS
from wearline.gauges import NewestTimestamp
from wearline.health import PROCESS_HEALTH, Health, PassClock
from wearline.settings import Settings

__all__ = ["AnalyticsSummary", "run_analytics"]

log = logging.getLogger(__name__)
DETECTOR = "ewma_mad"
HOURLY = "hourly"
"""The watermark of the registered models, which score complete hours of the rollup."""
MAX_ROWS_PER_PASS = 5000
RUL_HISTORY_HOURS = 20_000
"""Newest hourly rows an RUL model sees (2.3 years); the machine's age still counts from its first reading."""
HOURS_PER_PASS = 168
"""Complete hours a registered anomaly model scores of one machine in a pass, oldest first (a newly registered
model starts on the last week, not on the machine's whole past)."""
MACHINE_REFRESH_S = 300.0
"""How long a machine's sensor names, type and first reading are trusted before they are read again."""


@dataclass
class AnalyticsSummary:
    """What one worker did; ``machines`` are the ones it scored at least one row of."""

    worker: str = ""
    passes: int = 0
    rows_scored: int = 0
    anomalies: int = 0
    rul_estimates: int = 0
    machines: set[int] = field(default_factory=set)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("wearline_analytics_rows_scored_total", "Readings rows scored.", registry=registry)
        self.anomalies = Counter(
            "wearline_analytics_anomalies_total",
            "Anomalies recorded, by detector: ewma_mad (the streaming detector on raw rows) or the kind of a registered "
            "model scoring hourly rows (knn, mahalanobis, ...).",
            ["detector"],
            registry=registry,
        )
        # Every detector reads 0 from the start: a series that appears with its first anomaly leaves a panel empty and
        # an increase() over it wrong by that first anomaly.
        for name in (DETECTOR, *DETECTORS):
            self.anomalies.labels(name)
        self.rul = Counter("wearline_analytics_rul_estimates_total", "RUL estimates recorded.", registry=registry)
        self.pass_seconds = Histogram(
            "wearline_analytics_pass_seconds", "Time for one pass over the owned machines.", registry=registry
        )
        # A time, not an age: an age computed at the pass freezes when passes stop, and reads 0 before the first.
        # The lag is PromQL's: against ingest's newest sample, or time().
        self.newest_scored = NewestTimestamp(
            "wearline_analytics_newest_scored_timestamp_seconds",
            "Timestamp of the newest reading scored, by any worker of this schema as of this worker's start, then by "
            "this worker; absent until one was.",
            registry=registry,
        )
        self.machines = Gauge("wearline_analytics_machines_owned", "Machines this worker holds.", registry=registry)


def _matrix(rows: list[tuple[Any, ...]], col: int, width: int) -> Matrix:
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        vals = r[col][:width]
        out[i, : len(vals)] = [np.nan if v is None else v for v in vals]
    return out


@dataclass
class _Stream:
    last: datetime
    detector: EwmaMad
    flags: Thresholded
    """Carries the persistence rule's run of rows across passes: a worker that keeps up scores a few rows a pass."""


@dataclass(frozen=True)
class _Machine:
    """What the worker keeps of a machine between passes, instead of reading it on every pass."""

    sensors: tuple[str, ...]
    """Sensor names by position (``sensors[0]`` names ``vals[1]``)."""
    machine_type: str | None
    first: datetime | None
    """The machine's first reading: it only moves on a backfill, which the periodic refresh catches."""
    width: int
    """The widest reading seen when this was read: a wider one means sensors were added since."""
    read_at: float

    def names(self) -> list[str]:
        """A name per value position up to ``width``; positions without a registered sensor are ``#n``."""
        return [*self.sensors, *(f"#{i + 1}" for i in range(len(self.sensors), self.width))]


async def _read_machine(conn: psycopg.AsyncConnection[Any], machine_id: int, width: int) -> _Machine:
    cur = await conn.execute(
        """SELECT t.name,
                  ARRAY(SELECT s.name FROM sensors s WHERE s.machine_id = m.machine_id ORDER BY s.position),
                  (SELECT min(r.time) FROM readings r WHERE r.machine_id = m.machine_id)
           FROM machines m LEFT JOIN machine_types t ON t.type_id = m.type_id WHERE m.machine_id = %s""",
        [machine_id],
    )
    row = await cur.fetchone()
    mtype, sensors, first = row if row else (None, [], None)
    return _Machine(tuple(sensors), mtype, first, max(width, len(sensors)), time.monotonic())


async def _hourly_rows(
    conn: psycopg.AsyncConnection[Any],
    machine_id: int,
    positions: list[int | None],
    *,
    until: datetime,
    since: datetime | None = None,
    limit: int,
) -> tuple[list[datetime], Matrix]:
    """Bucket starts and hourly means at value ``positions`` (None: a NaN column), oldest first, of the newest
    ``limit`` hours of the ``readings_hourly`` rollup up to ``until`` and, with ``since``, from ``since`` on.

    The rollup is for long histories. With TimescaleDB its materialized hours miss late rows (an ingest backlog,
    a backfill) until the refresh policy's next run, up to 30 minutes later: an hour that must be right the one
    time it is scored comes from :func:`_exact_hours`.
    """
    cols = _rolled(positions)
    query = sql.SQL(
        """SELECT bucket{} FROM readings_hourly WHERE machine_id = %s AND bucket <= %s
           AND (%s::timestamptz IS NULL OR bucket >= %s) ORDER BY bucket DESC LIMIT %s"""
    ).format(sql.SQL("").join(sql.SQL(", ") + sql.Identifier(f"mean_{p}") for p in cols))
    cur = await conn.execute(query, [machine_id, until, since, since, limit])
    return _by_position((await cur.fetchall())[::-1], cols, positions)


async def _exact_hours(
    conn: psycopg.AsyncConnection[Any],
    machine_id: int,
    positions: list[int | None],
    *,
    until: datetime,
    since: datetime,
    limit: int,
) -> tuple[list[datetime], Matrix]:
    """As :func:`_hourly_rows`, but the oldest ``limit`` hours from ``since`` to ``until``, computed from
    ``readings`` now, the way the rollup computes them (UTC hours, migration 0006)."""
    cols = _rolled(positions)
    hour = sql.SQL("date_bin(interval '1 hour', {}, timestamptz '2000-01-01 00:00:00+00')")
    at = hour.format(sql.SQL("%s::timestamptz"))
    query = sql.SQL(
        """SELECT {} AS bucket{} FROM readings WHERE machine_id = %s AND time >= {} AND time < {} + interval '1 hour'
           GROUP BY 1 ORDER BY 1 LIMIT %s"""
    ).format(
        hour.format(sql.Identifier("time")),
        sql.SQL("").join(sql.SQL(", avg(vals[{}])").format(sql.Literal(p)) for p in cols),
        at,
        at,
    )
    cur = await conn.execute(query, [machine_id, since, until, limit])
    return _by_position(await cur.fetchall(), cols, positions)


def _rolled(positions: list[int | None]) -> list[int]:
    return sorted({p for p in positions if p is not None})


def _by_position(
    rows: list[tuple[Any, ...]], cols: list[int], positions: list[int | None]
) -> tuple[list[datetime], Matrix]:
    """Bucket starts, and rows of means for ``cols`` laid out by ``positions`` (None: a NaN column)."""
    got = np.array([[np.nan if v is None else v for v in r[1:]] for r in rows], dtype=np.float64)
    got = got.reshape(len(rows), len(cols))
    at = {p: i for i, p in enumerate(cols)}
    values = np.full((len(rows), len(positions)), np.nan)
    for j, p in enumerate(positions):
        if p is not None:
            values[:, j] = got[:, at[p]]
    return [r[0] for r in rows], values


class _Scorer:
    """One worker's scoring of one machine at a time, with the streaming states it keeps between passes."""

    def __init__(self, settings: Settings, models: ModelCache) -> None:
        self.settings = settings
        self.models = models
        self.streams: dict[int, _Stream] = {}
        self.machines: dict[int, _Machine] = {}
        self.rul_hours: dict[int, tuple[datetime, str]] = {}
        """Per machine, the hour and model version of its last RUL estimate."""
        self.warned: set[tuple[int, str]] = set()
        """(machine, model version) pairs whose model could not be used: said once, not on every pass."""
        self.found: Tally[str] = Tally()
        """Anomalies committed by detector kind (a model's version left out: it would be a label value per upload)
        since the worker last took them (:meth:`take_found`)."""
        self._recording: Tally[str] = Tally()
        """The same, of the transaction in progress: counted only once it commits."""

    def take_found(self) -> dict[str, int]:
        """The anomalies committed by detector kind since the last call."""
        found, self.found = dict(self.found), Tally()
        return found

    def _cannot(self, machine_id: int, version: str, why: str) -> int:
        """Skip a registered model on a machine, loudly but once: a model scoring without its inputs would
        flag every hour (missing sensors look like dropouts, a missing condition like the wrong regime)."""
        if (machine_id, version) not in self.warned:
            self.warned.add((machine_id, version))
            log.warning("machine %d: model %s skipped: %s", machine_id, version, why)
        return 0

    async def _machine(self, conn: psycopg.AsyncConnection[Any], machine_id: int, width: int) -> _Machine:
        """The machine as last read, read again when older than ``MACHINE_REFRESH_S`` or narrower than ``width``."""
        known = self.machines.get(machine_id)
        if known is None or width > known.width or time.monotonic() - known.read_at > MACHINE_REFRESH_S:
            known = self.machines[machine_id] = await _read_machine(conn, machine_id, width)
        return known

    def _fresh(self) -> EwmaMad:
        an = self.settings.analytics
        return EwmaMad(warmup=min(60, an.baseline_rows), slow_span=float(an.baseline_rows))

    async def score(self, conn: psycopg.AsyncConnection[Any], machine_id: int) -> tuple[int, int, int, datetime | None]:
        """Score rows after the watermark; returns (rows, anomalies, rul estimates, newest time)."""
        an = self.settings.analytics
        self._recording = Tally()
        async with conn.transaction():
            # Belt and braces under the lease: never two transactions on one machine's watermark at once.
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || 'wearline-analytics'), %s)",
                [machine_id],
            )
            locked = await cur.fetchone()
            if not locked or not locked[0]:
                return 0, 0, 0, None
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
                return 0, 0, 0, None
            machine = await self._machine(conn, machine_id, max(len(r[1]) for r in new))
            width = machine.width
            names = machine.names()
            stream = self.streams.get(machine_id)
            if stream is None or watermark is None or stream.last != watermark:
                det = self._fresh()
                det.set_features(names)
                if watermark is not None:
                    cur = await conn.execute(
                        """SELECT time, vals FROM readings WHERE machine_id = %s AND time <= %s
                           ORDER BY time DESC LIMIT %s""",
                        [machine_id, watermark, an.baseline_rows],
                    )
                    det.learn_many(_matrix((await cur.fetchall())[::-1], 1, width))
                stream = _Stream(
                    new[-1][0], det, Thresholded(det, threshold=an.z_threshold, persistence=an.min_flagged)
                )
            det = stream.detector
            det.set_features(names)
            x = _matrix(new, 1, width)
            per = det.sensor_scores(x)
            flags = stream.flags.flag_many(per.max(axis=1, initial=0.0))
            anomalies = 0
            if flags.any():
                recorded = await _record(
                    conn,
                    machine_id,
                    new=new,
                    per=per,
                    flags=flags,
                    names=names,
                    detector=DETECTOR,
                    threshold=an.z_threshold,
                )
                self._recording[DETECTOR] += recorded
                anomalies += recorded
            anomalies += await self._hourly_anomalies(conn, machine_id, machine, new[-1][0])
            ruls = await self._rul(conn, machine_id, machine, new[-1][0])
            await conn.execute(
                """INSERT INTO analytics_watermarks (machine_id, detector, last_time) VALUES (%s, %s, %s)
                   ON CONFLICT (machine_id, detector) DO UPDATE SET last_time = excluded.last_time,
                   updated_at = now()""",
                [machine_id, DETECTOR, new[-1][0]],
            )
        self.found.update(self._recording)
        stream.last = new[-1][0]
        self.streams[machine_id] = stream
        return len(new), anomalies, ruls, new[-1][0]

    async def _hourly_anomalies(
        self, conn: psycopg.AsyncConnection[Any], machine_id: int, machine: _Machine, last: datetime
    ) -> int:
        """Score the machine's complete hours after its hourly watermark with its type's registered model.

        Models are fit on hourly rows (``wearline anomaly fit``, the offline files' shape), so they score hourly
        means: the new complete hours, and the ``context`` hours before the watermark (row-to-row changes and the
        persistence and window rules pick up where the last pass left off, without state kept in memory).
        """
        model = await self.models.anomaly(conn, machine.machine_type) if machine.machine_type else None
        if model is None:
            return 0
        version, am = model
        conds = am.conditions if am.condition else None
        why = _unusable(machine, [*am.features, *am.condition], conds)
        if why:
            return self._cannot(machine_id, version, why)
        cur = await conn.execute(
            "SELECT last_time FROM analytics_watermarks WHERE machine_id = %s AND detector = %s FOR UPDATE",
            [machine_id, HOURLY],
        )
        wm_row = await cur.fetchone()
        watermark: datetime | None = wm_row[0] if wm_row else None
        # An hour is complete once a reading at or after its end has been scored. Most passes complete none: skip
        # the rollup read then (natively it aggregates the machine's raw rows).
        until = last - timedelta(hours=1)
        if watermark is not None and until < watermark + timedelta(hours=1):
            return 0
        wrapper = am.detector.restarted()
        context = max(wrapper.persistence, wrapper.window, 1)
        # The features, then the conditions: the order the model's rows have (AnomalyModel.prepare).
        positions: list[int | None] = [machine.sensors.index(f) + 1 for f in [*am.features, *am.condition]]
        # New hours are scored once, so they are computed from the readings; the context hours, scored in an
        # earlier pass, only warm up the changes and the rules, and the rollup serves them.
        new_buckets, new_values = await _exact_hours(
            conn,
            machine_id,
            positions,
            until=until,
            since=until - timedelta(hours=HOURS_PER_PASS) if watermark is None else watermark + timedelta(hours=1),
            limit=HOURS_PER_PASS,
        )
        if not new_buckets:
            return 0
        buckets, values = (
            ([], np.empty((0, len(positions))))
            if watermark is None
            else await _hourly_rows(
                conn, machine_id, positions, until=watermark, since=watermark - timedelta(hours=context), limit=context
            )
        )
        fresh = np.array([False] * len(buckets) + [True] * len(new_buckets))
        buckets, values = [*buckets, *new_buckets], np.vstack([values, new_values])
        codes = None if conds is None else conds.codes_of(values[:, len(am.features) :])
        zeros = np.zeros(len(values), dtype=np.int64)
        rows = am.prepare(values, zeros if codes is None else codes, [np.arange(len(values))])
        # Hours before the watermark were scored in an earlier pass: they only warm up the rules here.
        flags = wrapper.flag_many(am.detector.detector.score_many(rows))[fresh]
        await conn.execute(
            """INSERT INTO analytics_watermarks (machine_id, detector, last_time) VALUES (%s, %s, %s)
               ON CONFLICT (machine_id, detector) DO UPDATE SET last_time = excluded.last_time, updated_at = now()""",
            [machine_id, HOURLY, buckets[-1]],
        )
        if not flags.any():
            return 0
        kind = detector_name(am.detector.detector)
        recorded = await _record(
            conn,
            machine_id,
            new=[(b,) for b, f in zip(buckets, fresh, strict=True) if f],
            per=am.contributions(rows)[fresh],
            flags=flags,
            names=am.features,
            detector=f"{kind}:{version}",
            threshold=float(am.detector.threshold or 0),
        )
        self._recording[kind] += recorded
        return recorded

    async def _rul(self, conn: psycopg.AsyncConnection[Any], machine_id: int, machine: _Machine, last: datetime) -> int:
        mtype = machine.machine_type
        model = await self.models.rul(conn, mtype) if mtype else None
        if model is None:
            return 0
        version, rm = model
        est = rm.estimators.get(mtype or "") or rm.estimators.get("all")
        if est is None:
            return 0
        why = _unusable(machine, rm.conditions.columns, rm.conditions)
        if why:
            return self._cannot(machine_id, version, why)
        # Remaining life moves over hours, not seconds: one estimate per machine and hour (and model version),
        # not one per pass. A pass rolled back after this leaves that hour without one.
        hour = (last.replace(minute=0, second=0, microsecond=0), version)
        if self.rul_hours.get(machine_id) == hour:
            return 0
        young = timedelta(hours=self.settings.analytics.rul_min_history_h)
        if young and (machine.first is None or last - machine.first < young):
            return 0  # too young to tell: asked again next pass, without reading its history
        rolled = machine.sensors[:ROLLUP_POSITIONS]
        beyond = [f for f in rm.features if f in machine.sensors[ROLLUP_POSITIONS:]]
        if beyond:
            log.warning("machine %d: RUL model reads sensors past the hourly rollup's width: %s", machine_id, beyond)
        # The machine's history as hourly means, the shape RUL models are trained on (one row per hour, from the
        # unit's start); a sensor the machine lacks, or the rollup leaves out, is a NaN column.
        nf = len(rm.features)
        buckets, values = await _hourly_rows(
            conn,
            machine_id,
            [rolled.index(f) + 1 if f in rolled else None for f in [*rm.features, *rm.conditions.columns]],
            until=last,
            limit=RUL_HISTORY_HOURS,
        )
        hours = np.array([b.timestamp() / 3600.0 for b in buckets])
        if len(hours) == 0:
            return 0  # with TimescaleDB, a backlog's hours show once the rollup's policy has refreshed them
        self.rul_hours[machine_id] = hour
        start = machine.first.timestamp() / 3600.0 if machine.first else None
        codes = rm.conditions.codes_of(values[:, nf:])
        pred = est.predict([RunHistory(str(machine_id), hours, values[:, :nf], codes, failed=False, start=start)])[0]
        await conn.execute(
            """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            [machine_id, last, type(est).__name__, version, pred.rul, pred.lower, pred.upper],
        )
        return 1


def _unusable(machine: _Machine, needed: Sequence[str], conditions: _Conditions | None) -> str | None:
    """Why a model cannot score this machine from the hourly rollup, or None: sensors (conditions included) the
    rollup lacks, or conditions that are categories, which readings (numbers) cannot carry."""
    text = conditions.text if conditions is not None else []
    if text:
        return f"its condition column(s) {', '.join(text)} are categories; readings carry numbers only"
    absent = [f for f in needed if f not in machine.sensors[:ROLLUP_POSITIONS]]
    if absent:
        return f"needs sensors the hourly rollup lacks: {', '.join(absent)}"
    return None


async def _record(
    conn: psycopg.AsyncConnection[Any],
    machine_id: int,
    *,
    new: list[tuple[Any, ...]],
    per: Matrix,
    flags: np.ndarray,
    names: list[str],
    detector: str,
    threshold: float,
) -> int:
    """One anomaly row per pass and detector: at the first flagged row, naming the sensors that drove it."""
    flagged = np.flatnonzero(flags)
    worst = per[flagged].max(axis=0)
    order = np.argsort(-worst)
    drivers = [names[i] for i in order if worst[i] > threshold] or [names[int(order[0])]]
    cur = await conn.execute(
        """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        [
            machine_id,
            new[int(flagged[0])][0],
            detector,
            float(worst.max()),
            threshold,
            drivers,
            Jsonb(
                {
                    "flagged_rows": len(flagged),
                    "scored_rows": len(new),
                    "scores": {names[i]: round(float(worst[i]), 2) for i in order[:5]},
                }
            ),
        ],
    )
    return cur.rowcount


KEEP_UP_S = 60.0
"""A worker whose last pass ended longer ago than this (or ten poll intervals, if longer) is not keeping up."""


def default_worker_id() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def run_analytics(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    worker: str | None = None,
    health: Health = PROCESS_HEALTH,
) -> AnalyticsSummary:
    """Score new readings every ``analytics.poll_interval_s`` until ``stop`` is set; a pass in progress finishes.

    Several workers (``worker`` names each; default host:pid:random) split the machines between them; on stop
    this one hands its machines back at once. ``health`` gets the ``database`` and ``keeping_up`` checks.
    """
    metrics = _Metrics(registry)
    summary = AnalyticsSummary(worker=worker or default_worker_id())
    lease_s = max(5.0, 5 * settings.analytics.poll_interval_s)
    scorer = _Scorer(settings, ModelCache())
    health.declare("database")
    clock = PassClock(health, max(KEEP_UP_S, 10 * settings.analytics.poll_interval_s))
    pool = await open_pool(settings.database, name="analytics")
    try:
        with contextlib.suppress(psycopg.OperationalError):
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT extract(epoch FROM max(last_time))::float8 FROM analytics_watermarks")
                row = await cur.fetchone()
                if row and row[0] is not None:
                    metrics.newest_scored.observe(row[0])
        while not stop.is_set():
            t0 = time.perf_counter()
            newest: datetime | None = None
            try:
                async with pool.connection() as conn:
                    owned = await claim_machines(conn, summary.worker, lease_s)
                    metrics.machines.set(len(owned))
                    for machine_id in owned:
                        rows, found, ruls, last = await scorer.score(conn, machine_id)
                        if rows:
                            summary.machines.add(machine_id)
                        summary.rows_scored += rows
                        summary.anomalies += found
                        summary.rul_estimates += ruls
                        metrics.rows.inc(rows)
                        metrics.rul.inc(ruls)
                        for kind, n in scorer.take_found().items():
                            metrics.anomalies.labels(kind).inc(n)
                        if found:
                            log.info("machine %d: anomaly recorded", machine_id)
                        if last is not None and (newest is None or last > newest):
                            newest = last
                health.set("database", True)
                clock.passed()
            except psycopg.OperationalError as exc:
                health.set("database", False, str(exc))
                log.warning("database unavailable, retrying next pass: %s", exc)
            summary.passes += 1
            metrics.pass_seconds.observe(time.perf_counter() - t0)
            if newest is not None:
                metrics.newest_scored.observe(newest.timestamp())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.analytics.poll_interval_s)
        with contextlib.suppress(psycopg.OperationalError):
            async with pool.connection() as conn:
                await release_all(conn, summary.worker)
    finally:
        await pool.close()
        log.info(
            "analytics %s stopped: %d passes, %d rows scored on %d machines, %d anomalies, %d RUL estimates",
            summary.worker,
            summary.passes,
            summary.rows_scored,
            len(summary.machines),
            summary.anomalies,
            summary.rul_estimates,
        )
    return summary
