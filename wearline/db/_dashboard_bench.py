"""Timing the Grafana dashboards' SQL on a fleet of a chosen size (``wearline bench dashboards``).

Grafana runs every panel's query at each refresh of an open dashboard (a minute by default), against the database
the stages write to. This loads a scratch schema (natively partitioned, dropped afterwards) with a fleet: machines
of two tenants, three sensors each, a reading a minute for ``minutes``, a day of hourly remaining-life estimates, an
anomaly on a fifth of the machines, a live ticket on a twentieth, dead letters and two ingest members; then it
runs every query of every dashboard as ``wearline_readonly`` after Grafana's substitutions (:mod:`wearline.grafana`)
and keeps each query's best of ``repeat`` runs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from wearline.db._connect import connect
from wearline.db._migrate import migrate
from wearline.db._roles import READONLY
from wearline.grafana import DATASOURCE_UID, Substitution, load_dashboards, relative_time, resolve_variables
from wearline.settings import DatabaseSettings

__all__ = ["QueryTiming", "time_dashboards"]

MACHINES_PER_LINE = 100


@dataclass(frozen=True)
class QueryTiming:
    dashboard: str
    where: str
    best_ms: float
    rows: int


_FILL = """
INSERT INTO tenants (name) VALUES ('acme'), ('rival');
INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant' FROM tenants;
INSERT INTO lines (site_id, name) SELECT site_id, 'line' || g FROM sites, generate_series(1, %(lines)s) g;
INSERT INTO machines (tenant_id, line_id, name)
SELECT l.tenant_id, l.line_id, 'm' || g
FROM generate_series(1, %(machines)s) g
JOIN (SELECT row_number() OVER (ORDER BY line_id) - 1 AS k, line_id, tenant_id FROM lines JOIN sites USING (site_id)) l
  ON l.k = g %% (2 * %(lines)s);
INSERT INTO sensors (machine_id, position, name, unit)
SELECT machine_id, p, (ARRAY['vibration_rms', 'bearing_temp', 'motor_current'])[p], '' FROM machines,
       generate_series(1, 3) p;
INSERT INTO readings (machine_id, time, vals)
SELECT machine_id, date_trunc('minute', %(now)s::timestamptz) - g * interval '1 minute',
       ARRAY[2 + random(), 50 + random(), 11 + random()]
FROM machines, generate_series(0, %(minutes)s - 1) g;
INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
SELECT machine_id, date_trunc('hour', %(now)s::timestamptz) - g * interval '1 hour', 'GbmRul', 'v1',
       500 + machine_id %% 1000, 300 + machine_id %% 1000, 800 + machine_id %% 1000
FROM machines, generate_series(0, 23) g;
INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
SELECT machine_id, %(now)s::timestamptz - interval '2 hours', 'ewma_mad', 9, 6, '{vibration_rms}'
FROM machines WHERE machine_id %% 5 = 0;
INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen, opened_at)
SELECT tenant_id, machine_id, 'anomaly', 1 + machine_id %% 4, 'abnormal vibration', %(now)s, %(now)s,
       %(now)s::timestamptz - interval '1 hour'
FROM machines WHERE machine_id %% 20 = 0;
INSERT INTO ticket_events (ticket_id, at, kind, why) SELECT ticket_id, opened_at, 'opened', 'anomaly' FROM tickets;
INSERT INTO dead_letters (received_at, topic, reason, detail, payload)
SELECT %(now)s::timestamptz - g * interval '20 seconds', 'acme/plant/line1/m' || g %% 50 || '/telemetry',
       (ARRAY['not_json', 'bad_schema', 'ts_future', 'unknown_machine', 'conflict'])[1 + g %% 5], 'bench', '\\x00'
FROM generate_series(1, 1000) g;
INSERT INTO ingest_members (identity, scheme, share, host, pid, heartbeat_s)
VALUES ('wearline-0of2', 'partitioned', '0of2', 'bench', 1, 5), ('wearline-1of2', 'partitioned', '1of2', 'bench', 2, 5);
"""


async def _load(conn: psycopg.AsyncConnection[Any], *, machines: int, minutes: int, now: datetime) -> None:
    cur = await conn.execute("SELECT to_regprocedure('ensure_partitions(date, date)') IS NOT NULL")
    if (await cur.fetchone() or [False])[0]:
        await conn.execute("SELECT ensure_partitions(%s::date - 1, %s::date)", [now, now])
    lines = max(1, -(-machines // (2 * MACHINES_PER_LINE)))
    params = {"lines": lines, "machines": machines, "minutes": minutes, "now": now}
    for statement in _FILL.split(";\n"):
        if statement.strip():
            await conn.execute(statement, params)
    await conn.execute("ANALYZE")


async def time_dashboards(
    database: DatabaseSettings, folder: Path, *, machines: int, minutes: int, repeat: int
) -> tuple[list[QueryTiming], float]:
    """Every dashboard query's best time of ``repeat`` runs on the loaded fleet, and the load's seconds."""
    dashboards = load_dashboards(folder)  # before any work: a wrong folder is one line, not a loaded schema
    schema = f"wlbench_dash_{uuid.uuid4().hex[:8]}"
    owner = database.model_copy(update={"schema_name": schema, "storage": "native", "role": None})
    now = datetime.now(UTC).replace(microsecond=0)
    timings = []
    try:
        await migrate(owner)
        t0 = time.perf_counter()
        async with await connect(owner, autocommit=True) as conn:
            await _load(conn, machines=machines, minutes=minutes, now=now)
        loaded_s = time.perf_counter() - t0
        async with await connect(owner.model_copy(update={"role": READONLY}), autocommit=True) as conn:
            for board in dashboards:
                time_range = board.model["time"]
                sub = Substitution(relative_time(time_range["from"], now), relative_time(time_range["to"], now))
                await resolve_variables(conn, board, sub, DATASOURCE_UID)
                for q in board.queries(DATASOURCE_UID):
                    query = sub.expand(q.sql)
                    best, rows = float("inf"), 0
                    for _ in range(repeat):
                        started = time.perf_counter()
                        cur = await conn.execute(query)
                        rows = len(await cur.fetchall())
                        best = min(best, time.perf_counter() - started)
                    timings.append(QueryTiming(q.dashboard, q.where, best * 1000, rows))
    finally:
        async with await connect(owner, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return timings, loaded_s
