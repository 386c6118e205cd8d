"""Splitting machines between analytics workers: heartbeats plus time-limited leases, claimed one at a time."""

from __future__ import annotations

import math
from typing import Any

import psycopg

__all__ = ["claim_machines", "release_all"]

_CLAIM_LOCK = "wearline-analytics-leases"


async def claim_machines(conn: psycopg.AsyncConnection[Any], worker: str, lease_s: float) -> list[int]:
    """Heartbeat, renew this worker's leases, give back any above its fair share, claim free or expired machines
    up to it; returns the machines this worker now owns. Runs in one transaction behind an advisory lock, so two
    workers never claim the same machine."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", [_CLAIM_LOCK])
        await conn.execute(
            """INSERT INTO analytics_workers (worker) VALUES (%s)
               ON CONFLICT (worker) DO UPDATE SET heartbeat = now()""",
            [worker],
        )
        await conn.execute(
            "DELETE FROM analytics_workers WHERE heartbeat < now() - make_interval(secs => %s)", [lease_s]
        )
        cur = await conn.execute("SELECT count(*) FROM analytics_workers")
        workers = max(1, int((await cur.fetchone() or [1])[0]))
        cur = await conn.execute("SELECT count(*) FROM machines")
        machines = int((await cur.fetchone() or [0])[0])
        fair = math.ceil(machines / workers)
        await conn.execute(
            """UPDATE analytics_leases SET expires_at = now() + make_interval(secs => %s) WHERE worker = %s""",
            [lease_s, worker],
        )
        # A worker that joined later gets its share: the others give back their surplus, newest machines first.
        await conn.execute(
            """DELETE FROM analytics_leases WHERE worker = %s AND machine_id IN (
                   SELECT machine_id FROM analytics_leases WHERE worker = %s ORDER BY machine_id OFFSET %s)""",
            [worker, worker, fair],
        )
        await conn.execute(
            """INSERT INTO analytics_leases (machine_id, worker, expires_at)
               SELECT m.machine_id, %s, now() + make_interval(secs => %s)
               FROM machines m LEFT JOIN analytics_leases l USING (machine_id)
               WHERE l.machine_id IS NULL OR l.expires_at < now()
               ORDER BY m.machine_id
               LIMIT greatest(0, %s - (SELECT count(*) FROM analytics_leases WHERE worker = %s))
               ON CONFLICT (machine_id) DO UPDATE SET worker = excluded.worker, expires_at = excluded.expires_at""",
            [worker, lease_s, fair, worker],
        )
        cur = await conn.execute(
            "SELECT machine_id FROM analytics_leases WHERE worker = %s ORDER BY machine_id", [worker]
        )
        return [r[0] for r in await cur.fetchall()]


async def release_all(conn: psycopg.AsyncConnection[Any], worker: str) -> None:
    """On orderly shutdown: free this worker's machines now instead of when the leases run out."""
    async with conn.transaction():
        await conn.execute("DELETE FROM analytics_leases WHERE worker = %s", [worker])
        await conn.execute("DELETE FROM analytics_workers WHERE worker = %s", [worker])
