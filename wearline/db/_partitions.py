"""Time partitions of ``readings``: created ahead and on demand in native mode, retention in both modes, and the
state of TimescaleDB's background jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from wearline.db._migrate import StorageMode

__all__ = ["Maintained", "StorageJob", "ensure_partitions", "maintain_storage", "storage_jobs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Maintained:
    """What one :func:`maintain_storage` did: partitions created and dropped (native), the policy change
    (TimescaleDB: ``set``, ``removed``, ``unchanged``; None in native mode)."""

    created: int = 0
    dropped: int = 0
    policy: str | None = None


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
) -> Maintained:
    """Housekeeping a long-running process runs now and then (ingest's, hourly): partitions ahead, and retention
    as ``retention_days`` says now (0 keeps everything). Raising or lowering it takes effect at the next run: native
    mode drops the partitions older than the new cut-off, TimescaleDB mode replaces (or removes) the policy."""
    today = today or datetime.now(UTC).date()
    if mode == "native":
        created = await ensure_partitions(conn, today - timedelta(days=1), today + timedelta(days=days_ahead))
        if created:
            log.info("created %d readings partition(s) ahead", created)
        dropped = 0
        if retention_days:
            cur = await conn.execute("SELECT drop_partitions_before(%s)", [today - timedelta(days=retention_days)])
            row = await cur.fetchone()
            dropped = int(row[0]) if row and row[0] else 0
            if dropped:
                log.info("retention dropped %d readings partition(s) older than %d days", dropped, retention_days)
        return Maintained(created=created, dropped=dropped)
    cur = await conn.execute("SELECT set_readings_retention(%s)", [retention_days])
    row = await cur.fetchone()
    policy = str(row[0]) if row else "unchanged"
    if policy != "unchanged":
        log.info("readings retention policy %s (%d days; 0 keeps everything)", policy, retention_days)
    return Maintained(policy=policy)


@dataclass(frozen=True)
class StorageJob:
    """One TimescaleDB background job of this schema, as its statistics last saw it."""

    job_id: int
    kind: str
    """retention, compression or refresh (the hourly rollup), from the job's procedure."""
    last_run_failed: bool
    total_failures: int
    last_success: datetime | None


# The jobs view names a refresh policy by its continuous aggregate (hypertable_schema is the view's schema); a job
# that never succeeded has -infinity as its last success, which Python's datetime cannot hold.
_JOBS = """
SELECT j.job_id, j.proc_name, s.last_run_status, coalesce(s.total_failures, 0),
       nullif(s.last_successful_finish, '-infinity')
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
WHERE j.proc_name IN ('policy_retention', 'policy_compression', 'policy_refresh_continuous_aggregate')
  AND j.hypertable_schema = current_schema()
ORDER BY j.job_id
"""

_KINDS = {
    "policy_retention": "retention",
    "policy_compression": "compression",
    "policy_refresh_continuous_aggregate": "refresh",
}


async def storage_jobs(conn: psycopg.AsyncConnection[Any]) -> list[StorageJob]:
    """This schema's TimescaleDB policy jobs and how their last runs went (TimescaleDB mode only)."""
    cur = await conn.execute(_JOBS)
    return [
        StorageJob(int(job_id), _KINDS[proc], status == "Failed", int(failures), success)
        for job_id, proc, status, failures, success in await cur.fetchall()
    ]
