"""Turning a batch of MQTT messages into committed rows: readings by COPY, refused messages as dead letters.

The write is idempotent: a reading is identified by (machine, timestamp), so a redelivered or re-sent message
lands on the row it already wrote. Values of one instant that arrive in separate messages are merged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest._metrics import IngestMetrics
from ingest._mqtt import Message
from wearline.db import StorageMode, ensure_partitions
from wearline.settings import Settings
from wearline.topics import MachinePath, TopicError, parse_telemetry_topic
from wearline.wire import DecodedMessage, PayloadError, Reason, decode_message, ms_to_datetime

__all__ = ["BatchWriter", "DeadLetter", "prepare_connection"]

log = logging.getLogger(__name__)

_EPOCH = date(1970, 1, 1)
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
    machine_id integer NOT NULL, time timestamptz NOT NULL, vals float8[] NOT NULL
) ON COMMIT DELETE ROWS
"""
_MERGE = """
INSERT INTO readings (machine_id, time, vals)
SELECT machine_id, time, vals FROM readings_stage
ON CONFLICT (machine_id, time) DO UPDATE
    SET vals = merge_vals(readings.vals, excluded.vals)
    WHERE readings.vals IS DISTINCT FROM merge_vals(readings.vals, excluded.vals)
"""


async def prepare_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Pool ``configure`` hook: the session's staging table, created once per connection rather than per batch."""
    await conn.execute(_STAGE)
    await conn.commit()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    detail: str


@dataclass
class _Machine:
    machine_id: int
    sensors: dict[str, int] = field(default_factory=dict)  # name -> position (1-based)


class UnknownMachine(Exception):
    pass


class BatchWriter:
    """Resolves machines and sensors (registering them when allowed) and commits batches."""

    def __init__(
        self, pool: AsyncConnectionPool, settings: Settings, mode: StorageMode, metrics: IngestMetrics
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._mode = mode
        self._metrics = metrics
        # A pool with no live connection makes getconn wait; bound it so an outage shows up as a retry (and in
        # the metrics) within seconds rather than the pool's default 30 s.
        self._wait_s = settings.database.connect_timeout_s
        self._machines: dict[MachinePath, _Machine] = {}
        self._partition_days: set[date] = set()
        self.last_received = 0
        """Values decoded by the latest :meth:`prepare` (the received-readings metric counts them once committed)."""

    # --- registry -------------------------------------------------------------------------------------------
    async def _lookup(self, conn: psycopg.AsyncConnection[Any], path: MachinePath) -> _Machine | None:
        cur = await conn.execute(
            """SELECT m.machine_id FROM machines m
               JOIN lines l USING (line_id) JOIN sites s USING (site_id) JOIN tenants t ON t.tenant_id = s.tenant_id
               WHERE t.name = %s AND s.name = %s AND l.name = %s AND m.name = %s""",
            [path.tenant, path.site, path.line, path.machine],
        )
        row = await cur.fetchone()
        if row is None:
            return None
        machine = _Machine(row[0])
        cur = await conn.execute("SELECT name, position FROM sensors WHERE machine_id = %s", [machine.machine_id])
        machine.sensors = dict(await cur.fetchall())
        return machine

    async def _register(
        self, conn: psycopg.AsyncConnection[Any], path: MachinePath, machine_type: str | None
    ) -> _Machine:
        # Each statement is an upsert, so two ingest processes registering the same machine agree on one row.
        async with conn.transaction():
            cur = await conn.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(tenant)s)
                              ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, %(site)s FROM t
                              ON CONFLICT (tenant_id, name) DO UPDATE SET name = excluded.name RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, %(line)s FROM s
                              ON CONFLICT (site_id, name) DO UPDATE SET name = excluded.name RETURNING line_id)
                   SELECT t.tenant_id, l.line_id FROM t, l""",
                {"tenant": path.tenant, "site": path.site, "line": path.line},
            )
            row = await cur.fetchone()
            assert row is not None
            tenant_id, line_id = row
            type_id = None
            if machine_type is not None:
                cur = await conn.execute(
                    """INSERT INTO machine_types (name) VALUES (%s)
                       ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING type_id""",
                    [machine_type],
                )
                type_row = await cur.fetchone()
                type_id = type_row[0] if type_row else None
            await conn.execute(
                """INSERT INTO machines (tenant_id, line_id, name, type_id, auto_registered)
                   VALUES (%s, %s, %s, %s, true) ON CONFLICT (line_id, name) DO NOTHING""",
                [tenant_id, line_id, path.machine, type_id],
            )
        machine = await self._lookup(conn, path)
        assert machine is not None
        log.info("registered machine %s (id %d)", path, machine.machine_id)
        return machine

    async def _add_sensors(self, conn: psycopg.AsyncConnection[Any], machine: _Machine, names: Iterable[str]) -> None:
        async with conn.transaction():
            # Serialise position assignment per machine; the lock ends with the transaction.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wearline-sensors'), %s)", [machine.machine_id])
            cur = await conn.execute("SELECT name, position FROM sensors WHERE machine_id = %s", [machine.machine_id])
            machine.sensors = dict(await cur.fetchall())
            nxt = max(machine.sensors.values(), default=0) + 1
            new = sorted(set(names) - machine.sensors.keys())
            await conn.execute(
                "INSERT INTO sensors (machine_id, position, name) SELECT %s, %s + n - 1, name"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS u(name, n)",
                [machine.machine_id, nxt, new],
            )
            machine.sensors.update({name: nxt + k for k, name in enumerate(new)})

    async def _resolve(self, path: MachinePath, decoded: DecodedMessage) -> _Machine:
        machine = self._machines.get(path)
        names = {n for s in decoded.samples for n in s.values}
        if machine is not None and names <= machine.sensors.keys():
            return machine
        async with self._pool.connection(timeout=self._wait_s) as conn:
            if machine is None:
                machine = await self._lookup(conn, path)
                if machine is None:
                    if not self._settings.ingest.auto_register:
                        raise UnknownMachine(f"machine {path} is not registered and ingest.auto_register is off")
                    machine = await self._register(conn, path, decoded.machine_type)
                self._machines[path] = machine
            missing = names - machine.sensors.keys()
            if missing:
                if not self._settings.ingest.auto_register:
                    raise UnknownMachine(f"machine {path} has no sensor(s) {sorted(missing)[:5]}")
                await self._add_sensors(conn, machine, missing)
        return machine

    # --- batches --------------------------------------------------------------------------------------------
    async def prepare(
        self, batch: Sequence[Message]
    ) -> tuple[dict[tuple[int, int], list[float | None]], list[DeadLetter], list[int]]:
        """Decode and resolve every message: rows keyed by (machine, ms), dead letters, and sample timestamps."""
        ing = self._settings.ingest
        now_ms = int(time.time() * 1000)
        rows: dict[tuple[int, int], list[float | None]] = {}
        dead: list[DeadLetter] = []
        stamps: list[int] = []
        received = 0
        for msg in batch:
            try:
                path = parse_telemetry_topic(self._settings.topic_prefix, msg.topic)
                decoded = decode_message(
                    msg.payload,
                    now_ms=now_ms,
                    max_bytes=ing.max_payload_bytes,
                    max_future_ms=int(ing.max_future_s * 1000),
                    max_past_ms=int(ing.max_past_days * 86_400_000),
                )
                machine = await self._resolve(path, decoded)
            except TopicError as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.BAD_TOPIC, str(exc)))
                continue
            except PayloadError as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, exc.reason, exc.detail))
                continue
            except UnknownMachine as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.UNKNOWN_MACHINE, str(exc)))
                continue
            width = len(machine.sensors)
            for sample in decoded.samples:
                key = (machine.machine_id, sample.ts_ms)
                vals = rows.get(key)
                if vals is None:
                    vals = rows[key] = [None] * width
                elif len(vals) < width:
                    vals.extend([None] * (width - len(vals)))
                for name, value in sample.values.items():
                    if value is not None:
                        vals[machine.sensors[name] - 1] = float(value)
                        received += 1
                stamps.append(sample.ts_ms)
        self.last_received = received
        return rows, dead, stamps

    async def commit(self, rows: dict[tuple[int, int], list[float | None]], dead: Sequence[DeadLetter]) -> None:
        """Write rows and dead letters in one transaction; raises psycopg errors for the caller to handle."""
        if self._mode == "native" and rows:
            # Integer day numbers keep this off the per-row datetime path; each missing day gets its own partition,
            # so one stray old sample does not create every partition between it and today.
            missing = {_EPOCH + timedelta(days=d) for d in {ms // 86_400_000 for _, ms in rows}} - self._partition_days
            if missing:
                async with self._pool.connection(timeout=self._wait_s) as conn:
                    for day in sorted(missing):
                        await ensure_partitions(conn, day, day)
                self._partition_days |= missing
        async with self._pool.connection(timeout=self._wait_s) as conn, conn.transaction():
            if rows:
                async with conn.cursor().copy(
                    "COPY readings_stage (machine_id, time, vals) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int4", "timestamptz", "float8[]"])
                    for (machine_id, ms), vals in rows.items():
                        await copy.write_row((machine_id, ms_to_datetime(ms), vals))
                await conn.execute(_MERGE)
            if dead:
                async with conn.cursor().copy("COPY dead_letters (topic, reason, detail, payload) FROM STDIN") as copy:
                    for d in dead:
                        await copy.write_row((d.topic, d.reason, d.detail, d.payload))
