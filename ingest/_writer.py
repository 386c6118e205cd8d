"""Turning a batch of MQTT messages into committed rows: readings by COPY, refused messages as dead letters.

The write is idempotent: a reading is identified by (machine, timestamp), so a redelivered or re-sent message
lands on the row it already wrote. Values of one instant that arrive in separate messages are merged; a value
stored first is never replaced, and a re-send that disagrees with it is kept as a ``conflict`` dead letter.
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

from ingest._conflicts import Clash, Entry, conflicts_of, describe
from ingest._copy import encode_readings
from ingest._gateway_scope import GatewayScope, NoGateway
from ingest._limits import DeadLetterLimiter, LruCache
from ingest._metrics import IngestMetrics
from ingest._mqtt import Message
from ingest._sparkplug import Sessions
from ingest._surge import SurgeLog
from wearline.db import StorageMode, ensure_partitions
from wearline.settings import Settings
from wearline.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from wearline.sparkplug import SparkplugError
from wearline.sparkplug import parse_topic as parse_sparkplug_topic
from wearline.topics import MachinePath, TopicError, parse_telemetry_topic
from wearline.wire import DecodedMessage, PayloadError, Reason, decode_message

__all__ = ["BatchWriter", "Committed", "DeadLetter", "prepare_connection"]

log = logging.getLogger(__name__)

_EPOCH = date(1970, 1, 1)
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
    machine_id integer NOT NULL, time timestamptz NOT NULL, vals float8[] NOT NULL
) ON COMMIT DELETE ROWS
"""
# Step one inserts every new row: for live data that is the whole batch, and the write costs what a plain upsert
# did. When some rows already existed (redeliveries, re-sends, one instant sent in several messages), step two, run
# only then, fills their NULLs (merge_vals keeps stored values, migration 8) and returns the stored values that the
# batch disagrees with, read before the update. Rows step one has just inserted equal their staged values, and so
# does an identical re-send (the common case: a redelivery): one array comparison rules each out before the
# per-element functions run.
_INSERT_NEW = """
WITH ins AS (
    INSERT INTO readings (machine_id, time, vals)
    SELECT machine_id, time, vals FROM readings_stage
    ON CONFLICT (machine_id, time) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""
_MERGE_EXISTING = """
WITH old AS (
    SELECT s.machine_id, s.time, s.vals AS new, r.vals AS old
    FROM readings_stage s,
         LATERAL (SELECT vals FROM readings WHERE machine_id = s.machine_id AND time = s.time LIMIT 1) r
), upd AS (
    UPDATE readings r SET vals = merge_vals(r.vals, o.new) FROM old o
    WHERE r.machine_id = o.machine_id AND r.time = o.time
      AND r.vals IS DISTINCT FROM o.new AND r.vals IS DISTINCT FROM merge_vals(r.vals, o.new)
)
SELECT machine_id, (extract(epoch FROM time) * 1000)::bigint, old FROM old
WHERE old IS DISTINCT FROM new AND vals_conflict(old, new)
"""
SPARKPLUG_PREFIX = SPARKPLUG_NAMESPACE + "/"
# Registered machines, with their sensors, of any number of paths in one round trip (n: the path's place).
_LOOKUP = """
SELECT u.n, m.machine_id,
       coalesce(array_agg(se.name ORDER BY se.position) FILTER (WHERE se.name IS NOT NULL), '{}'),
       coalesce(array_agg(se.position ORDER BY se.position) FILTER (WHERE se.name IS NOT NULL), '{}')
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS u(tenant, site, line, machine, n)
JOIN tenants t ON t.name = u.tenant
JOIN sites s ON s.tenant_id = t.tenant_id AND s.name = u.site
JOIN lines l ON l.site_id = s.site_id AND l.name = u.line
JOIN machines m ON m.line_id = l.line_id AND m.name = u.machine
LEFT JOIN sensors se ON se.machine_id = m.machine_id
GROUP BY u.n, m.machine_id
"""

_REFUSAL_TTL_S = 30.0  # a refused machine is not looked up again for this long (a flood would hit the database)
# ...unless a machine was registered meanwhile (looked for at most this often): an operator who registers a
# refused machine and replays its dead letters must not meet the stale refusal.
_REGISTRY_CHECK_S = 0.5

Rows = dict[tuple[int, int], list[float | None]]


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


@dataclass(frozen=True, slots=True)
class Committed:
    """What one committed batch stored: sensor values written or confirmed, and every dead letter (the ones the
    rate limit kept out of the table included)."""

    readings: int
    dead: list[DeadLetter]


@dataclass
class _Machine:
    machine_id: int
    sensors: dict[str, int] = field(default_factory=dict)  # name -> position (1-based)


async def _lookup_many(conn: psycopg.AsyncConnection[Any], paths: Sequence[MachinePath]) -> list[_Machine | None]:
    """Each path's registered machine and sensors (None where it is not registered), in one query."""
    columns = [[p.tenant for p in paths], [p.site for p in paths], [p.line for p in paths], [p.machine for p in paths]]
    found: list[_Machine | None] = [None] * len(paths)
    for n, machine_id, names, positions in await (await conn.execute(_LOOKUP, columns)).fetchall():
        found[n - 1] = _Machine(machine_id, dict(zip(names, positions, strict=True)))
    return found


class UnknownMachine(Exception):
    pass


class RegistryLimit(Exception):
    pass


@dataclass
class _Batch:
    """What :meth:`BatchWriter.prepare` learnt about its batch that :meth:`BatchWriter.commit` needs."""

    messages: int = 0
    entries: list[Entry] = field(default_factory=list)
    sources: list[tuple[Message, MachinePath]] = field(default_factory=list)  # per entry: the message and where
    clashes: dict[int, list[Clash]] = field(default_factory=dict)
    filled: int = 0  # values staged into empty slots: the readings the batch offers the table


class BatchWriter:
    """Resolves machines and sensors (registering them within limits) and commits batches."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        mode: StorageMode,
        metrics: IngestMetrics,
        *,
        sparkplug: Sessions | None = None,
    ) -> None:
        self._pool = pool
        self.sparkplug = sparkplug
        """Sparkplug B sessions, when ingest is a host application (``ingest.sparkplug.groups``)."""
        self._settings = settings
        self._mode = mode
        self._metrics = metrics
        # A pool with no live connection makes getconn wait; bound it so an outage shows up as a retry (and in
        # the metrics) within seconds rather than the pool's default 30 s.
        self._wait_s = settings.database.connect_timeout_s
        ing = settings.ingest
        # Keyed by topic, whose hash the string caches: a cached machine's topic is not parsed again.
        self._machines: LruCache[str, tuple[_Machine, MachinePath]] = LruCache(ing.machine_cache_size)
        self._refused: LruCache[str, tuple[float, str, str]] = LruCache(ing.machine_cache_size)
        self._registry_mark: int | None = None  # the newest machine_id when the cached refusals were made
        self._registry_checked = 0.0
        metrics.machine_cache.set_function(lambda: len(self._machines))
        self._partition_days: set[date] = set()
        self._gateways = GatewayScope(required=ing.require_gateways)
        self._limiter = DeadLetterLimiter(
            rate_per_topic=ing.dead_letter_rate_per_topic,
            burst_per_topic=ing.dead_letter_burst_per_topic,
            rate_total=ing.dead_letter_rate_total,
        )
        self.surge = SurgeLog(ing.dead_letter_log_interval_s)
        """Dead letters in the log, rate-limited; ingest's housekeeping ticks and finally flushes it."""
        self._batch = _Batch()
        self.last_received = 0
        """Values decoded by the latest :meth:`prepare` (the received-readings metric counts them once committed)."""

    @property
    def cached_machines(self) -> int:
        """Machines held in memory (at most ``ingest.machine_cache_size``)."""
        return len(self._machines)

    # --- registry -------------------------------------------------------------------------------------------
    async def _lookup(self, conn: psycopg.AsyncConnection[Any], path: MachinePath) -> _Machine | None:
        return (await _lookup_many(conn, [path]))[0]

    async def _tenant(self, conn: psycopg.AsyncConnection[Any], name: str) -> int:
        """The tenant's id, creating it when the limits allow (inside the caller's transaction)."""
        ing = self._settings.ingest
        sql = "SELECT tenant_id FROM tenants WHERE name = %s"
        row = await (await conn.execute(sql, [name])).fetchone()
        if row is not None:
            return int(row[0])
        if not ing.auto_register_tenants:
            raise RegistryLimit(f"tenant {name!r} is not registered and ingest.auto_register_tenants is off")
        # One writer at a time counts and creates tenants, so several workers cannot pass the limit together.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wearline-tenants'))")
        row = await (await conn.execute(sql, [name])).fetchone()
        if row is not None:
            return int(row[0])
        row = await (await conn.execute("SELECT count(*) FROM tenants WHERE auto_registered")).fetchone()
        if row is not None and row[0] >= ing.max_auto_tenants:
            raise RegistryLimit(
                f"tenant {name!r} is not registered and auto-registration has created ingest.max_auto_tenants "
                f"({ing.max_auto_tenants}) tenants: register it, or raise the limit"
            )
        cur = await conn.execute(
            "INSERT INTO tenants (name, auto_registered) VALUES (%s, true) RETURNING tenant_id", [name]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def _register(
        self, conn: psycopg.AsyncConnection[Any], path: MachinePath, machine_type: str | None
    ) -> _Machine:
        ing = self._settings.ingest
        # Each statement is an upsert, so two ingest processes registering the same machine agree on one row.
        async with conn.transaction():
            tenant_id = await self._tenant(conn, path.tenant)
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wearline-machines'), %s)", [tenant_id])
            if await self._lookup(conn, path) is None:
                cur = await conn.execute("SELECT count(*) FROM machines WHERE tenant_id = %s", [tenant_id])
                row = await cur.fetchone()
                if row is not None and row[0] >= ing.max_machines_per_tenant:
                    raise RegistryLimit(
                        f"machine {path} is not registered and tenant {path.tenant!r} has "
                        f"ingest.max_machines_per_tenant ({ing.max_machines_per_tenant}) machines"
                    )
            cur = await conn.execute(
                """WITH s AS (INSERT INTO sites (tenant_id, name) VALUES (%(tenant_id)s, %(site)s)
                              ON CONFLICT (tenant_id, name) DO UPDATE SET name = excluded.name RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, %(line)s FROM s
                              ON CONFLICT (site_id, name) DO UPDATE SET name = excluded.name RETURNING line_id)
                   SELECT line_id FROM l""",
                {"tenant_id": tenant_id, "site": path.site, "line": path.line},
            )
            row = await cur.fetchone()
            assert row is not None
            line_id = row[0]
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

    async def _add_sensors(
        self, conn: psycopg.AsyncConnection[Any], path: MachinePath, machine: _Machine, names: Iterable[str]
    ) -> None:
        limit = self._settings.ingest.max_sensors_per_machine
        async with conn.transaction():
            # Serialise position assignment per machine; the lock ends with the transaction.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wearline-sensors'), %s)", [machine.machine_id])
            cur = await conn.execute("SELECT name, position FROM sensors WHERE machine_id = %s", [machine.machine_id])
            machine.sensors = dict(await cur.fetchall())
            nxt = max(machine.sensors.values(), default=0) + 1
            new = sorted(set(names) - machine.sensors.keys())
            if len(machine.sensors) + len(new) > limit:
                raise RegistryLimit(_sensor_limit(path, len(machine.sensors), new, limit))
            await conn.execute(
                "INSERT INTO sensors (machine_id, position, name) SELECT %s, %s + n - 1, name"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS u(name, n)",
                [machine.machine_id, nxt, new],
            )
            machine.sensors.update({name: nxt + k for k, name in enumerate(new)})

    async def _warm(self, batch: Sequence[Message]) -> None:
        """Cache, in one query, the registered machines of the topics in ``batch`` that are neither cached nor
        refused; :meth:`prepare` calls it at a batch's first cache miss, so a batch of cached machines pays nothing.

        A restarted worker (or one whose cache a larger fleet keeps evicting) otherwise resolved its machines one at
        a time inside the batch: 2,000 round trips (two queries a machine then) before the first commit of a
        1,000-machine fleet's backlog. Machines not found here take the usual path (registration, refusal) in
        :meth:`_resolve`.
        """
        machines, refused, prefix = self._machines, self._refused, self._settings.topic_prefix
        cold: dict[str, MachinePath] = {}
        for msg in batch:
            topic = msg.topic
            if topic in cold or topic in machines or topic in refused or topic.startswith(SPARKPLUG_PREFIX):
                continue
            try:
                cold[topic] = parse_telemetry_topic(prefix, topic)
            except TopicError:
                continue  # a dead letter, once prepare's loop comes to it
            if len(cold) >= machines.maxsize:
                break
        if len(cold) < 2:  # one machine costs the same either way
            return
        async with self._pool.connection(timeout=self._wait_s) as conn:
            found = await _lookup_many(conn, list(cold.values()))
        for (topic, path), machine in zip(cold.items(), found, strict=True):
            if machine is not None:
                machines.put(topic, (machine, path))

    async def _registry_grew(self) -> bool:
        """Whether a machine was registered since the cached refusals were made; if so they are forgotten."""
        now = time.monotonic()
        if self._registry_mark is None or now - self._registry_checked < _REGISTRY_CHECK_S:
            return False
        self._registry_checked = now
        async with self._pool.connection(timeout=self._wait_s) as conn:
            newest = await _newest_machine(conn)
        if newest == self._registry_mark:
            return False
        self._refused = LruCache(self._settings.ingest.machine_cache_size)
        self._registry_mark = None
        return True

    async def _resolve(
        self, topic: str, path: MachinePath, machine: _Machine | None, decoded: DecodedMessage
    ) -> _Machine:
        """The machine of ``path`` (``machine``: the cached one, if any) with every sensor of ``decoded``."""
        if machine is not None:  # the hot path: a cached machine whose sensors are all known (no set built)
            known = machine.sensors.keys()
            if all(s.values.keys() <= known for s in decoded.samples):
                return machine
        names = {n for s in decoded.samples for n in s.values}
        ing = self._settings.ingest
        if machine is None:
            refused = self._refused.get(topic)
            if refused is not None:
                until, kind, detail = refused
                if time.monotonic() < until and not (kind == "unknown" and await self._registry_grew()):
                    raise (RegistryLimit if kind == "limit" else UnknownMachine)(detail)
                self._refused.pop(topic)
        else:
            missing = names - machine.sensors.keys()
            if ing.auto_register and len(machine.sensors) + len(missing) > ing.max_sensors_per_machine:
                raise RegistryLimit(_sensor_limit(path, len(machine.sensors), missing, ing.max_sensors_per_machine))
        async with self._pool.connection(timeout=self._wait_s) as conn:
            if machine is None:
                machine = await self._lookup(conn, path)
                if machine is None:
                    if not ing.auto_register:
                        detail = f"machine {path} is not registered and ingest.auto_register is off"
                        if self._registry_mark is None:
                            self._registry_mark = await _newest_machine(conn)
                        self._refused.put(topic, (time.monotonic() + _REFUSAL_TTL_S, "unknown", detail))
                        raise UnknownMachine(detail)
                    try:
                        machine = await self._register(conn, path, decoded.machine_type)
                    except RegistryLimit as exc:
                        self._refused.put(topic, (time.monotonic() + _REFUSAL_TTL_S, "limit", str(exc)))
                        raise
                self._machines.put(topic, (machine, path))
            missing = names - machine.sensors.keys()
            if missing:
                if not ing.auto_register:
                    raise UnknownMachine(f"machine {path} has no sensor(s) {sorted(missing)[:5]}")
                await self._add_sensors(conn, path, machine, missing)
        return machine

    # --- batches --------------------------------------------------------------------------------------------
    async def prepare(self, batch: Sequence[Message]) -> tuple[Rows, list[DeadLetter], list[int]]:
        """Decode and resolve every message: rows keyed by (machine, ms), dead letters, and sample timestamps.

        Within the batch the first value of a sensor at an instant is the one staged; a later message of the batch
        that disagrees with it is remembered for :meth:`commit`, which turns it into a ``conflict`` dead letter.
        """
        ing = self._settings.ingest
        now_ms = int(time.time() * 1000)
        rows: Rows = {}
        dead: list[DeadLetter] = []
        stamps: list[int] = []
        self._batch = _Batch(messages=len(batch))
        received = 0
        machines = self._machines
        prefix = self._settings.topic_prefix
        sp = self.sparkplug
        if sp is not None:
            sp.begin()
        await self._gateways.refresh(self._pool, wait_s=self._wait_s)
        warmed = False
        for k, msg in enumerate(batch):
            if sp is not None and msg.topic.startswith(SPARKPLUG_PREFIX):
                received += await self._prepare_sparkplug(msg, sp, rows, dead=dead, stamps=stamps, now_ms=now_ms)
                continue
            try:
                hit = machines.get(msg.topic)
                if hit is None and not warmed:  # the batch's first miss: fetch the rest of its misses with it
                    warmed = True
                    await self._warm(batch[k:])
                    hit = machines.get(msg.topic)
                path = parse_telemetry_topic(prefix, msg.topic) if hit is None else hit[1]
                self._gateways.check(path)  # before the registry: no tenant or machine outside a gateway's site
                decoded = decode_message(
                    msg.payload,
                    now_ms=now_ms,
                    max_bytes=ing.max_payload_bytes,
                    max_future_ms=int(ing.max_future_s * 1000),
                    max_past_ms=int(ing.max_past_days * 86_400_000),
                )
                machine = await self._resolve(msg.topic, path, None if hit is None else hit[0], decoded)
            except TopicError as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.BAD_TOPIC, str(exc)))
                continue
            except PayloadError as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, exc.reason, exc.detail))
                continue
            except UnknownMachine as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.UNKNOWN_MACHINE, str(exc)))
                continue
            except NoGateway as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.NO_GATEWAY, str(exc)))
                continue
            except RegistryLimit as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.REGISTRY_LIMIT, str(exc)))
                continue
            received += self._stage(rows, stamps, msg, path=path, machine=machine, decoded=decoded)
        self.last_received = received
        return rows, dead, stamps

    def _stage(
        self,
        rows: Rows,
        stamps: list[int],
        msg: Message,
        *,
        path: MachinePath,
        machine: _Machine,
        decoded: DecodedMessage,
    ) -> int:
        """Add one message's samples to the batch's rows; the number of values it brought."""
        info = self._batch
        received = 0
        index = len(info.entries)
        sensors = machine.sensors
        info.entries.append((machine.machine_id, sensors, decoded))
        info.sources.append((msg, path))
        width = len(sensors)
        for sample in decoded.samples:
            key = (machine.machine_id, sample.ts_ms)
            vals = rows.get(key)
            if vals is None:
                vals = rows[key] = [None] * width
            elif len(vals) < width:
                vals.extend([None] * (width - len(vals)))
            for name, value in sample.values.items():
                if value is not None:
                    pos = sensors[name] - 1
                    first = vals[pos]
                    if first is None:
                        vals[pos] = float(value)
                        info.filled += 1
                    elif first != value:
                        info.clashes.setdefault(index, []).append(Clash(sample.ts_ms, pos, float(value), first))
                    received += 1
            stamps.append(sample.ts_ms)
        return received

    async def _prepare_sparkplug(
        self, msg: Message, sp: Sessions, rows: Rows, *, dead: list[DeadLetter], stamps: list[int], now_ms: int
    ) -> int:
        """One message on a ``spBv1.0/...`` topic: its session's verdict, then its readings like any other's."""
        try:
            topic = parse_sparkplug_topic(msg.topic)
        except SparkplugError as exc:
            dead.append(DeadLetter(msg.topic, msg.payload, Reason.BAD_TOPIC, str(exc)))
            return 0
        if topic.group not in self._settings.ingest.sparkplug.groups:
            detail = f"Sparkplug group {topic.group!r} is not in ingest.sparkplug.groups"
            dead.append(DeadLetter(msg.topic, msg.payload, Reason.BAD_TOPIC, detail))
            return 0
        if len(msg.payload) > self._settings.ingest.max_payload_bytes:
            detail = f"{len(msg.payload)} bytes, more than ingest.max_payload_bytes"
            dead.append(DeadLetter(msg.topic, msg.payload, Reason.OVERSIZED, detail))
            return 0
        key = (topic.group, topic.edge)
        if not sp.known(key):
            async with self._pool.connection(timeout=self._wait_s) as conn:
                await sp.load(conn, key)
        handled = sp.handle(topic, msg.payload, now_ms=now_ms, redelivered=msg.redelivered)
        if handled.dead is not None:
            dead.append(DeadLetter(msg.topic, msg.payload, *handled.dead))
            return 0
        received = 0
        for path, decoded in handled.readings:
            try:
                cache_key = f"{SPARKPLUG_NAMESPACE}:{path}"
                hit = self._machines.get(cache_key)
                machine = await self._resolve(cache_key, path, None if hit is None else hit[0], decoded)
            except UnknownMachine as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.UNKNOWN_MACHINE, str(exc)))
                return received
            except RegistryLimit as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, Reason.REGISTRY_LIMIT, str(exc)))
                return received
            received += self._stage(rows, stamps, msg, path=path, machine=machine, decoded=decoded)
        return received

    async def commit(self, rows: Rows, dead: Sequence[DeadLetter]) -> Committed:
        """Write rows and dead letters in one transaction (conflicting re-sends found on the way added to the dead
        letters); raises psycopg errors for the caller to handle. ``rows`` and ``dead`` come from :meth:`prepare`
        of the same batch, the latest one."""
        if self._mode == "native" and rows:
            # Integer day numbers keep this off the per-row datetime path; each missing day gets its own partition,
            # so one stray old sample does not create every partition between it and today.
            missing = {_EPOCH + timedelta(days=d) for d in {ms // 86_400_000 for _, ms in rows}} - self._partition_days
            if missing:
                async with self._pool.connection(timeout=self._wait_s) as conn:
                    for day in sorted(missing):
                        await ensure_partitions(conn, day, day)
                self._partition_days |= missing
        info = self._batch
        readings = 0
        async with self._pool.connection(timeout=self._wait_s) as conn, conn.transaction():
            stored: dict[tuple[int, int], list[float | None]] = {}
            if rows:
                async with conn.cursor().copy(
                    "COPY readings_stage (machine_id, time, vals) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    await copy.write(encode_readings(rows))
                readings = info.filled
                inserted = await (await conn.execute(_INSERT_NEW)).fetchone()
                existing = [] if inserted == (len(rows),) else await (await conn.execute(_MERGE_EXISTING)).fetchall()
                for machine_id, ms, old in existing:
                    staged = rows[(machine_id, ms)]
                    lost = sum(o is not None and s is not None and o != s for o, s in zip(old, staged, strict=False))
                    if lost:  # the batch's first value lost to the stored one: not a committed reading
                        stored[(machine_id, ms)] = old
                        readings -= lost
            if self.sparkplug is not None:
                await self.sparkplug.save(conn)
            conflicts = self._conflicts(info, stored) if rows and (info.clashes or stored) else []
            dead = [*dead, *(d for d, _ in conflicts)]
            allowed = self._limiter.allow(d.topic for d in dead)
            if any(allowed):
                cap = self._settings.ingest.dead_letter_max_payload_bytes
                async with conn.cursor().copy(
                    "COPY dead_letters (topic, reason, detail, payload, original_size) FROM STDIN"
                ) as copy:
                    for d, ok in zip(dead, allowed, strict=True):
                        if ok:
                            await copy.write_row((d.topic, d.reason, d.detail, d.payload[:cap], len(d.payload)))
        # Committed: only now do written dead letters spend their topics' tokens, and conflicts count; the Sparkplug
        # sessions move on and their rebirth requests go out.
        if self.sparkplug is not None:
            self.sparkplug.adopt()
        for _, tenant in conflicts:
            self._metrics.conflicts.labels(tenant).inc()
        self._limiter.spend(d.topic for d, ok in zip(dead, allowed, strict=True) if ok)
        for d, ok in zip(dead, allowed, strict=True):
            if not ok:
                self._metrics.dead_letters_unstored.labels(d.reason).inc()
        self._batch = _Batch()  # its decoded messages are no longer needed
        self.surge.record(
            info.messages, ((d.reason, d.topic, d.detail, ok) for d, ok in zip(dead, allowed, strict=True))
        )
        return Committed(readings, dead)

    @staticmethod
    def _conflicts(info: _Batch, stored: dict[tuple[int, int], list[float | None]]) -> list[tuple[DeadLetter, str]]:
        """A ``conflict`` dead letter, with its tenant, for each message that disagreed with the value kept."""
        out = []
        for idx, clashes in sorted(conflicts_of(info.entries, info.clashes, stored).items()):
            msg, path = info.sources[idx]
            detail = describe(info.entries[idx], clashes)
            out.append((DeadLetter(msg.topic, msg.payload, Reason.CONFLICT, detail), path.tenant))
        return out


def _sensor_limit(path: MachinePath, have: int, new: Iterable[str], limit: int) -> str:
    new = sorted(new)
    return (
        f"machine {path} has {have} sensors; {len(new)} new ({', '.join(new[:3])}{', ...' if len(new) > 3 else ''}) "
        f"would pass ingest.max_sensors_per_machine ({limit})"
    )


async def _newest_machine(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT coalesce(max(machine_id), 0) FROM machines")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0
