"""Floods are bounded: dead letters are capped in size, rate-limited per topic (and counted all the same), kept for
a limited time and summed up in the log; auto-registration has limits; the machine cache evicts. Each limit is
crossed tenfold, and each test prints what it published and what was stored."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

import ingest
from ingest._limits import DeadLetterLimiter, LruCache
from ingest._metrics import IngestMetrics
from ingest._mqtt_codec import Message
from ingest._surge import SurgeLog
from ingest._writer import BatchWriter, prepare_connection
from tests.conftest import make_settings, unique
from tests.ingest._support import connect_db, publish, stored_rows
from wearline.db import check_migrated, connect, migrate, open_pool
from wearline.settings import Settings
from wearline.topics import MachinePath

Send = Callable[[list[tuple[str, bytes]]], Awaitable[None]]


def _msg(ts: int, values: dict[str, float]) -> bytes:
    return orjson.dumps({"v": 1, "ts": ts, "values": values})


def _handled(registry: CollectorRegistry) -> int:
    return int(
        sum(
            registry.get_sample_value("wearline_ingest_messages_total", {"outcome": o}) or 0
            for o in ("written", "dead_letter")
        )
    )


@asynccontextmanager
async def _ingest(settings: Settings) -> AsyncIterator[tuple[CollectorRegistry, Send]]:
    """Ingest in this process; yields its registry and ``send(messages)``, which returns once all are handled."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    sent = 0

    async def send(messages: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        await asyncio.to_thread(publish, settings.mqtt.host, settings.mqtt.port, messages)
        sent += len(messages)
        deadline = time.monotonic() + 60
        while _handled(registry) < sent:
            assert time.monotonic() < deadline, f"handled {_handled(registry)} of {sent}"
            await asyncio.sleep(0.05)

    async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
        tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        await subscribed.wait()
        try:
            yield registry, send
        finally:
            stop.set()


async def _settings(schema: str, broker: tuple[str, int], **ing: object) -> Settings:
    host, port = broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port}, ingest=ing)
    await migrate(settings.database)
    return settings


def _scalar(schema: str, query: str) -> int:
    with connect_db(schema) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(str(row[0]))


def _topic(settings: Settings, tenant: str = "acme", machine: str = "m1") -> str:
    return f"{settings.topic_prefix}/{tenant}/site1/line1/{machine}/telemetry"


# --- dead letters: size, rate, retention, log ----------------------------------------------------------------


async def test_garbage_is_rate_limited_per_topic_capped_in_size_and_still_counted(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    burst, cap = 5, 100
    settings = await _settings(
        schema,
        shipped_broker,
        dead_letter_burst_per_topic=burst,
        dead_letter_rate_per_topic=0.001,  # one token per 1,000 s: none comes back during the test
        dead_letter_max_payload_bytes=cap,
    )
    garbage = b"\xff" + b"g" * (10 * cap - 1)  # not JSON, ten times the cap
    topics = [_topic(settings, machine="noisy1"), _topic(settings, machine="noisy2")]
    messages = [(t, garbage) for t in topics for _ in range(10 * burst)]
    async with _ingest(settings) as (registry, send):
        await send(messages)
        counted = registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": "not_json"})
        unstored = registry.get_sample_value("wearline_ingest_dead_letters_unstored_total", {"reason": "not_json"})
        outcome = registry.get_sample_value("wearline_ingest_messages_total", {"outcome": "dead_letter"})
    with connect_db(schema) as conn:
        per_topic = {
            str(t): int(str(n)) for t, n in conn.execute("SELECT topic, count(*) FROM dead_letters GROUP BY topic")
        }
        sizes = conn.execute("SELECT DISTINCT octet_length(payload), original_size FROM dead_letters").fetchall()
    listed = await _listed(settings)
    print(
        f"published {len(messages)} garbage on {len(topics)} topics; stored {per_topic}; counted {counted}, "
        f"unstored {unstored}; stored sizes {sizes}"
    )
    assert per_topic == dict.fromkeys(topics, burst)
    assert counted == len(messages)
    assert outcome == len(messages)
    assert unstored == len(messages) - 2 * burst
    assert sizes == [(cap, 10 * cap)]
    assert len(listed) == 2 * burst
    assert all(d.truncated and d.size == 10 * cap for d in listed)


async def _listed(settings: Settings) -> list[ingest.StoredDeadLetter]:
    conn = await connect(settings.database, autocommit=True)
    async with conn:
        return await ingest.list_dead_letters(
            conn, settings.database.schema_name, settings.topic_prefix, ingest.DeadLetterFilter(), limit=1000
        )


def test_the_total_dead_letter_rate_bounds_a_flood_spread_over_many_topics() -> None:
    now = [0.0]
    limiter = DeadLetterLimiter(rate_per_topic=1.0, burst_per_topic=100, rate_total=2.0, clock=lambda: now[0])
    total_burst = 20  # ten seconds' worth of rate_total
    written = 0
    for second in range(10):  # 10 s of 10 x the burst a second, each on a topic of its own
        now[0] = float(second)
        topics = [f"t/{second}/{i}" for i in range(10 * total_burst)]
        allowed = limiter.allow(topics)
        limiter.spend(t for t, ok in zip(topics, allowed, strict=True) if ok)
        written += sum(allowed)
    print(f"offered {10 * 10 * total_burst}, written {written}, topic buckets {limiter.topics}")
    # The burst, then 2 a second for the 9 seconds after it.
    assert written == total_burst + 9 * 2


def test_a_topic_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = DeadLetterLimiter(rate_per_topic=0.5, burst_per_topic=3, rate_total=1000.0, clock=lambda: now[0])
    written = []
    for second in range(30):  # 10 x the burst, one dead letter offered every second
        now[0] = float(second)
        ok = limiter.allow(["t"])
        limiter.spend(["t"] if ok[0] else [])
        written.append(ok[0])
    print(f"offered 30 on one topic, written {sum(written)}")
    assert written[:3] == [True, True, True]
    assert sum(written) == int(3 + 0.5 * 29)  # the burst plus what 29 s at 0.5 a second refill
    assert written[-4:] == [True, False, True, False]  # and then one every 2 s


async def test_expired_dead_letters_are_deleted_by_housekeeping(schema: str, shipped_broker: tuple[str, int]) -> None:
    settings = await _settings(schema, shipped_broker, dead_letter_retention_days=30)
    old, recent = 25_000, 10  # old: 2.5 times the delete chunk
    with connect_db(schema) as conn:
        for n, age in ((old, "40 days"), (recent, "29 days")):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, reason, detail, payload)"
                " SELECT now() - %s::interval, 't', 'not_json', '', '' FROM generate_series(1, %s)",
                [age, n],
            )
    async with _ingest(settings):
        deadline = time.monotonic() + 30
        while (left := _scalar(schema, "SELECT count(*) FROM dead_letters")) > recent:
            assert time.monotonic() < deadline, left
            await asyncio.sleep(0.1)
    print(f"inserted {old} expired and {recent} recent dead letters; {left} left")
    assert left == recent


async def test_a_surge_of_dead_letters_is_logged_while_it_lasts_once_per_interval(
    schema: str, shipped_broker: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    settings = await _settings(schema, shipped_broker, dead_letter_log_interval_s=60)
    future = int(time.time() * 1000) + 3_600_000  # an hour ahead, past ingest.max_future_s
    good_topic, bad_topic = _topic(settings, machine="ok"), _topic(settings, machine="ahead")
    messages = [(bad_topic, _msg(future + i, {"a": 1.0})) for i in range(94)]
    messages += [(good_topic, _msg(future - 3_700_000 + i, {"a": 1.0})) for i in range(6)]
    caplog.set_level(logging.WARNING, logger="ingest.dead_letters")
    async with _ingest(settings) as (_, send):
        await send(messages)
        await send(messages[:10])  # more of the same within the interval: summed, not logged yet
        while_running = [r.getMessage() for r in caplog.records if r.name == "ingest.dead_letters"]
    after = [r.getMessage() for r in caplog.records if r.name == "ingest.dead_letters"]
    print("\n".join(after))
    assert len(while_running) == 1
    assert while_running[0].startswith("dead letters: ")
    assert " ts_future " in while_running[0]
    assert f"top topic {bad_topic} (" in while_running[0]
    assert "ahead of ingest's clock" in while_running[0]
    assert len(after) == 2  # the rest, at shutdown
    counts = [int(re.sub(r"\D", "", m.split()[2])) for m in after]
    assert sum(counts) == 94 + 10


def test_the_surge_log_says_each_reason_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    surge = SurgeLog(10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="ingest.dead_letters")
    for k in range(1000):  # 100 s, ten times the interval, a dead letter every 0.1 s among 10 messages
        now[0] = k / 10
        surge.record(10, [("ts_future", f"t/{k % 3}", f"example {k}", True)])
    surge.flush()
    lines = [r.getMessage() for r in caplog.records]
    print(f"1000 dead letters over 100 s: {len(lines)} warnings")
    assert len(lines) == 11  # at 0 s, every 10 s up to 90 s, and the rest at the end
    assert sum(int(m.split()[2].replace(",", "")) for m in lines) == 1000
    assert "(10% of 1,000 messages)" in lines[1]
    assert "e.g. example 0" in lines[0]


# --- registration limits and the cache ----------------------------------------------------------------------


async def test_auto_registration_creates_at_most_max_auto_tenants(schema: str, shipped_broker: tuple[str, int]) -> None:
    limit = 3
    settings = await _settings(schema, shipped_broker, max_auto_tenants=limit)
    now = int(time.time() * 1000)
    messages = [(_topic(settings, tenant=f"t{i:02d}"), _msg(now, {"a": 1.0})) for i in range(10 * limit)]
    async with _ingest(settings) as (registry, send):
        await send(messages)
        await send(messages)  # refusals are remembered: the second round asks the database nothing new
        refused = registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": "registry_limit"})
    tenants = _scalar(schema, "SELECT count(*) FROM tenants WHERE auto_registered")
    rows = _scalar(schema, "SELECT count(*) FROM readings")
    print(
        f"published {len(messages)} x 2 on {10 * limit} new tenants: {tenants} tenants, {rows} rows, {refused} refused"
    )
    assert tenants == limit
    assert rows == limit
    assert refused == 2 * (len(messages) - limit)
    detail = _scalar(schema, "SELECT count(*) FROM dead_letters WHERE detail LIKE '%ingest.max_auto_tenants (3)%'")
    assert detail == 2 * (len(messages) - limit)


async def test_new_tenants_only_when_allowed_and_machines_and_sensors_within_limits(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    machines, sensors = 3, 4
    settings = await _settings(
        schema,
        shipped_broker,
        auto_register_tenants=False,
        max_machines_per_tenant=machines,
        max_sensors_per_machine=sensors,
    )
    with connect_db(schema) as conn:
        conn.execute("INSERT INTO tenants (name) VALUES ('acme')")
    now = int(time.time() * 1000)
    stranger = [(_topic(settings, tenant="stranger"), _msg(now, {"a": 1.0}))]
    many_machines = [(_topic(settings, machine=f"m{i:02d}"), _msg(now, {"a": 1.0})) for i in range(10 * machines)]
    one_sensor_each = [
        (_topic(settings, machine="m00"), _msg(now - 1000 * (k + 1), {f"s{k:02d}": float(k)}))
        for k in range(10 * sensors)
    ]
    async with _ingest(settings) as (registry, send):
        await send(stranger + many_machines)
        await send(one_sensor_each)
        refused = registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": "registry_limit"})
    with connect_db(schema) as conn:
        tenant_names = [r[0] for r in conn.execute("SELECT name FROM tenants").fetchall()]
        n_machines = conn.execute("SELECT count(*) FROM machines").fetchone()
        n_sensors = conn.execute(
            "SELECT count(*) FROM sensors s JOIN machines m USING (machine_id) WHERE m.name = 'm00'"
        ).fetchone()
    print(
        f"published 1 on an unknown tenant, {len(many_machines)} on new machines, {len(one_sensor_each)} new sensors:"
        f" tenants {tenant_names}, machines {n_machines}, sensors of m00 {n_sensors}, refused {refused}"
    )
    assert tenant_names == ["acme"]
    assert n_machines == (machines,)
    assert n_sensors == (sensors,)  # "a" and three of the new ones
    assert refused == 1 + (10 * machines - machines) + (10 * sensors - (sensors - 1))


async def test_the_machine_cache_is_bounded_and_evicted_machines_are_written_right(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    size = 5
    settings = await _settings(schema, shipped_broker, machine_cache_size=size)
    now = int(time.time() * 1000) - 60_000
    names = [f"m{i:02d}" for i in range(10 * size)]
    rounds = [
        [(_topic(settings, machine=m), _msg(now + 1000 * r, {"a": i + r / 10, "b": -i})) for i, m in enumerate(names)]
        for r in range(3)
    ]
    async with _ingest(settings) as (registry, send):
        for messages in rounds:  # every round looks up machines the round before evicted
            await send(messages)
        cached = registry.get_sample_value("wearline_ingest_machine_cache_machines")
    rows = stored_rows(schema)
    sensors = _scalar(schema, "SELECT count(*) FROM sensors")
    print(f"published {sum(map(len, rounds))} on {len(names)} machines: {len(rows)} rows, cache {cached}")
    assert cached == size
    assert sensors == 2 * len(names)
    assert rows == {(m, now + 1000 * r): [i + r / 10, -i] for i, m in enumerate(names) for r in range(3)}


async def test_a_cold_cache_looks_up_a_registered_fleet_in_one_query_per_batch(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    """A restarted worker used to resolve each machine of its backlog with two queries of its own, before the first
    commit; now the batch's registered machines come in one query, and the rest still register one by one."""
    machines = 300
    settings = await _settings(schema, shipped_broker, machine_cache_size=100)
    now = int(time.time() * 1000) - 60_000

    def batch(names: list[str], first: int, ts: int) -> list[Message]:
        return [
            Message(_topic(settings, machine=m), _msg(ts, {"a": i, f"x{i % 3}": -i}), i + 1, 1, False, 0.0)
            for i, m in enumerate(names, start=first)
        ]

    registered = [f"m{i:03d}" for i in range(machines)]
    async with await open_pool(settings.database, configure=prepare_connection) as pool:
        mode = await check_migrated(settings.database)
        first = BatchWriter(pool, settings, mode, IngestMetrics(CollectorRegistry()))
        for k in range(0, machines, 100):  # registers the fleet (a cache of 100)
            rows, dead, _ = await first.prepare(batch(registered[k : k + 100], k, now))
            await first.commit(rows, dead)
        restarted = BatchWriter(pool, settings, mode, IngestMetrics(CollectorRegistry()))
        lookups: list[str] = []
        lookup = restarted._lookup

        async def counted(conn: Any, path: MachinePath) -> Any:
            lookups.append(path.machine)
            return await lookup(conn, path)

        restarted._lookup = counted  # type: ignore[method-assign]
        # Ten times the cache: only the first 100 cold topics are fetched together; the rest go one by one.
        names = [*registered, "new1", "new2"]
        for k in range(0, len(names), 1000):
            rows, dead, _ = await restarted.prepare(batch(names[k : k + 1000], k, now + 1000))
            await restarted.commit(rows, dead)
    stored = stored_rows(schema)
    print(f"{machines} registered machines and 2 new in one batch after a restart: {len(lookups)} single lookups")
    assert dead == []
    # One by one: what the cache could not hold, and the two new machines (which registration looks up again).
    assert len([m for m in lookups if m.startswith("m")]) == machines - 100
    assert set(lookups) - set(registered) == {"new1", "new2"}
    assert restarted.cached_machines == 100
    # Positions came back right: each machine's second sensor (x0, x1 or x2) is where its first row put it.
    assert stored == {
        **{(m, now): [i, -i] for i, m in enumerate(registered)},
        **{(m, now + 1000): [i, -i] for i, m in enumerate(names)},
    }


def test_lru_cache_keeps_the_most_recently_used() -> None:
    cache: LruCache[int, str] = LruCache(10)
    for i in range(100):  # ten times its size
        cache.put(i, str(i))
        if i < 50:  # key 0 kept in use for the first half
            assert cache.get(0) == "0"
    print(f"put 100, kept {len(cache)}, evicted {cache.evictions}")
    assert len(cache) == 10
    assert cache.evictions == 90
    assert cache.get(0) is None  # not used since the first half: evicted
    assert [k for k in range(100) if k in cache] == list(range(90, 100))
