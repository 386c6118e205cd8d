"""Ingest members: each worker records its identity and a heartbeat, so that a dead one is seen, not guessed.

A member that is not alive and whose session the broker still keeps (not retired) is *missing*: the broker goes
on queueing its share (its partition, or in a shared group on Mosquitto its turn of the round robin) and nobody
writes it until a worker with the same identity starts and resumes the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest._background import BackgroundLoop
from ingest._metrics import IngestMetrics
from ingest._scheme import Subscription
from wearline.db import connect
from wearline.settings import DatabaseSettings

__all__ = [
    "Heartbeat",
    "IngestMember",
    "MemberState",
    "ingest_members",
    "members_from",
    "record_heartbeat",
    "record_stop",
]

log = logging.getLogger(__name__)

MemberState = Literal["alive", "missing", "stopped", "retired"]
STALE_AFTER = 3  # heartbeat intervals


@dataclass(frozen=True, slots=True)
class IngestMember:
    """One ingest identity as the database last heard of it."""

    identity: str
    scheme: str
    share: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    state: MemberState
    """alive; missing (no heartbeat for three intervals: it died, its session still collects its share);
    stopped (stopped cleanly, session kept for its replacement: its share waits too); retired (session ended)."""

    @property
    def stranded(self) -> bool:
        """The broker keeps queueing for this identity and nobody is writing it."""
        return self.state in ("missing", "stopped")

    def __str__(self) -> str:
        return (
            f"{self.identity}: {self.state}, {self.scheme} {self.share}, {self.host} pid {self.pid}, "
            f"last heartbeat {self.heartbeat_at:%Y-%m-%d %H:%M:%S}Z"
        )


_UPSERT = """
INSERT INTO ingest_members (identity, scheme, share, host, pid, heartbeat_s)
VALUES (%(identity)s, %(scheme)s, %(share)s, %(host)s, %(pid)s, %(heartbeat_s)s)
ON CONFLICT (identity) DO UPDATE SET scheme = excluded.scheme, share = excluded.share, host = excluded.host,
    pid = excluded.pid, heartbeat_s = excluded.heartbeat_s, heartbeat_at = now(),
    started_at = CASE WHEN %(starting)s THEN now() ELSE ingest_members.started_at END,
    stopped_at = NULL, session_ended = false
"""


async def record_heartbeat(
    pool: AsyncConnectionPool, sub: Subscription, heartbeat_s: float, *, starting: bool = False
) -> None:
    """Say that this worker is alive (and, when ``starting``, that it just started)."""
    async with pool.connection() as conn:
        await conn.execute(
            _UPSERT,
            {
                "identity": sub.client_id,
                "scheme": sub.scheme,
                "share": sub.share,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat_s": heartbeat_s,
                "starting": starting,
            },
        )


async def record_stop(pool: AsyncConnectionPool, identity: str, *, session_ended: bool) -> None:
    """Say that this worker stopped cleanly, and whether it ended its session (retired) or kept it."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE ingest_members SET stopped_at = now(), session_ended = %s WHERE identity = %s",
            [session_ended, identity],
        )


_SELECT = """
SELECT identity, scheme, share, host, pid, started_at, heartbeat_at,
    CASE WHEN session_ended THEN 'retired'
         WHEN stopped_at IS NOT NULL THEN 'stopped'
         WHEN heartbeat_at < now() - make_interval(secs => heartbeat_s * %s) THEN 'missing'
         ELSE 'alive' END
FROM ingest_members ORDER BY identity
"""


async def members_from(conn: psycopg.AsyncConnection[Any]) -> list[IngestMember]:
    """Every ingest identity the schema has seen, with its state (empty before migration 7)."""
    cur = await conn.execute("SELECT to_regclass('ingest_members')")
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return []
    cur = await conn.execute(_SELECT, [STALE_AFTER])
    return [IngestMember(*r) for r in await cur.fetchall()]


async def ingest_members(database: DatabaseSettings) -> list[IngestMember]:
    """Every ingest identity of the schema and its state; ``wearline db info`` prints them.

    A member whose :attr:`IngestMember.stranded` is true is a share that the broker keeps and nobody writes:
    start a worker with the same identity, or retire it (see docs/ingest.md, scaling down).
    """
    conn = await connect(database, autocommit=True)
    async with conn:
        return await members_from(conn)


class Heartbeat:
    """While entered, records this worker's heartbeat every ``interval_s`` and publishes the members' states as
    ``wearline_ingest_members{state}``; a failed write is logged and retried at the next beat (the database's own
    outage handling is the writer's business)."""

    def __init__(self, pool: AsyncConnectionPool, sub: Subscription, interval_s: float, metrics: IngestMetrics) -> None:
        self._pool = pool
        self._sub = sub
        self._interval = interval_s
        self._metrics = metrics
        self._loop = BackgroundLoop("ingest-heartbeat", self._beat)
        self.members: list[IngestMember] = []

    async def __aenter__(self) -> Heartbeat:
        await record_heartbeat(self._pool, self._sub, self._interval, starting=True)
        self._loop.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._loop.stop()

    async def close(self, *, session_ended: bool) -> None:
        """Stop beating, then record a clean stop (a beat after it would mark the member alive again). Bounded:
        a database that is down must not hold the shutdown; the heartbeat then just goes stale."""
        await self.__aexit__()
        with contextlib.suppress(psycopg.Error, TimeoutError):
            async with asyncio.timeout(2):
                await record_stop(self._pool, self._sub.client_id, session_ended=session_ended)

    async def refresh(self) -> list[IngestMember]:
        """Read every member's state now and update the metric."""
        async with self._pool.connection() as conn:
            self.members = await members_from(conn)
        counts = Counter(m.state for m in self.members)
        for state in ("alive", "missing", "stopped", "retired"):
            self._metrics.members.labels(state).set(counts[state])
        return self.members

    async def _beat(self, loop: BackgroundLoop) -> None:
        warned: set[str] = set()
        while not loop.stopping:
            await asyncio.sleep(self._interval)
            try:
                await record_heartbeat(self._pool, self._sub, self._interval)
                for m in await self.refresh():
                    if m.stranded and m.identity not in warned:
                        log.warning("ingest member %s: its share is kept by the broker and written by nobody", m)
                warned = {m.identity for m in self.members if m.stranded}
            except (psycopg.Error, OSError) as exc:
                log.warning("could not record the ingest heartbeat: %s", exc)

    async def others_alive(self) -> int:
        """How many other members of this scheme and share are alive (a shared group's remaining members); 0 when
        the database does not answer within 2 s, so that a member keeps its session rather than guess."""
        try:
            async with asyncio.timeout(2):
                members = await self.refresh()
        except (psycopg.Error, TimeoutError):
            return 0
        return sum(
            m.state == "alive" and m.identity != self._sub.client_id and m.share == self._sub.share for m in members
        )
