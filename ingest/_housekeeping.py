"""Ingest's housekeeping: readings partitions and retention (both storage modes), dead-letter retention, the state
of TimescaleDB's background jobs as metrics, and the dead-letter log's summaries while traffic is idle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest._background import BackgroundLoop
from ingest._metrics import IngestMetrics
from ingest._surge import SurgeLog
from wearline.db import StorageMode, maintain_storage, storage_jobs

__all__ = ["Housekeeping", "StorageUpkeep", "delete_old_dead_letters"]

log = logging.getLogger(__name__)

_RETENTION_EVERY_S = 3600.0
_JOBS_EVERY_S = 300.0
_RETRY_S = 60.0
_CHUNK = 10_000  # rows per DELETE: a long backlog of expired rows never holds one long transaction


async def delete_old_dead_letters(pool: AsyncConnectionPool, retention_days: float) -> int:
    """Delete dead letters received more than ``retention_days`` ago, in chunks; how many were deleted."""
    deleted = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                """DELETE FROM dead_letters WHERE dead_letter_id IN (
                       SELECT dead_letter_id FROM dead_letters
                       WHERE received_at < now() - make_interval(secs => %s) LIMIT %s)""",
                [retention_days * 86_400, _CHUNK],
            )
            deleted += cur.rowcount
        if cur.rowcount < _CHUNK:
            return deleted


@dataclass(frozen=True)
class StorageUpkeep:
    """What the readings table needs from housekeeping: its storage mode, partitions ahead, retention in days
    (``database.retention_days``; 0 keeps everything)."""

    mode: StorageMode
    days_ahead: int
    retention_days: int


class Housekeeping:
    """While entered: applies the readings retention (and creates partitions ahead) and
    ``ingest.dead_letter_retention_days`` at once and then hourly (0 keeps everything), reads the TimescaleDB policy
    jobs' last runs into metrics every five minutes, and gives the dead-letter log its turn every second, so a surge
    that stopped is still summed up. On exit the log is flushed. A failed run is logged, counted and retried a
    minute later. Several ingest workers take turns: one maintains the readings table at a time, the others skip."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        surge: SurgeLog,
        *,
        retention_days: float,
        storage: StorageUpkeep | None = None,
        metrics: IngestMetrics | None = None,
        jobs_every_s: float = _JOBS_EVERY_S,
    ) -> None:
        self._pool = pool
        self._surge = surge
        self._retention_days = retention_days
        self._storage = storage
        self._metrics = metrics
        self._jobs_every_s = jobs_every_s
        self._job_kinds: set[str] = set()
        self._failures_logged: dict[int, int] = {}
        self._loop = BackgroundLoop("ingest-housekeeping", self._run)
        if metrics is not None:
            metrics.retention_days.labels("dead_letters").set(retention_days)
            if storage is not None:
                metrics.retention_days.labels("readings").set(storage.retention_days)

    async def __aenter__(self) -> Housekeeping:
        self._loop.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._loop.stop()
        self._surge.flush()

    async def _dead_letters(self) -> None:
        n = await delete_old_dead_letters(self._pool, self._retention_days)
        if n:
            log.info("dead-letter retention deleted %d row(s) older than %g days", n, self._retention_days)

    async def _readings(self) -> None:
        assert self._storage is not None
        s = self._storage
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.storage housekeeping'))"
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                return  # another worker is at it
            done = await maintain_storage(conn, s.mode, days_ahead=s.days_ahead, retention_days=s.retention_days)
        if self._metrics is not None:
            self._metrics.partitions_dropped.inc(done.dropped)

    async def _jobs(self) -> None:
        async with self._pool.connection() as conn:
            jobs = await storage_jobs(conn)
        for job in jobs:
            # Once per new failure, not at every look: a job failing for days would fill the log otherwise.
            if job.last_run_failed and self._failures_logged.get(job.job_id) != job.total_failures:
                log.warning("TimescaleDB %s job %d: its last run failed (%d failures in all); "
                            "timescaledb_information.job_errors has the error", job.kind, job.job_id,
                            job.total_failures)  # fmt: skip
            self._failures_logged[job.job_id] = job.total_failures
        if self._metrics is None:
            return
        m = self._metrics
        kinds = {job.kind for job in jobs}
        # A policy that was removed (retention turned off) takes its series with it: a stale "failed" would page
        # someone for a job that no longer exists.
        for gone in self._job_kinds - kinds:
            for gauge in (m.job_failed, m.job_failures, m.job_success):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._job_kinds = kinds
        for job in jobs:
            m.job_failed.labels(job.kind).set(1 if job.last_run_failed else 0)
            m.job_failures.labels(job.kind).set(job.total_failures)
            if job.last_success is not None:
                m.job_success.labels(job.kind).set(job.last_success.timestamp())

    async def _run(self, loop: BackgroundLoop) -> None:
        chores = [("dead-letter retention", self._dead_letters, _RETENTION_EVERY_S, bool(self._retention_days))]
        if self._storage is not None:
            chores.append(("readings partitions and retention", self._readings, _RETENTION_EVERY_S, True))
            chores.append(
                ("TimescaleDB job statistics", self._jobs, self._jobs_every_s, self._storage.mode == "timescaledb")
            )
        due = dict.fromkeys((name for name, *_ in chores), time.monotonic())
        while not loop.stopping:
            for name, chore, every_s, enabled in chores:
                if not enabled or time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + every_s
                try:
                    await chore()
                    if self._metrics is not None:
                        self._metrics.housekeeping.labels(name, "ok").inc()
                except (psycopg.Error, OSError) as exc:
                    due[name] = time.monotonic() + _RETRY_S
                    log.warning("%s failed, retrying in %.0f s: %s", name, _RETRY_S, exc)
                    if self._metrics is not None:
                        self._metrics.housekeeping.labels(name, "error").inc()
            self._surge.tick()
            await asyncio.sleep(1)
