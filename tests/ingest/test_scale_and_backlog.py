"""Several workers on one shared subscription, and a replayed backlog of hours landing in the right partitions."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import make_settings, unique
from tests.ingest._support import Fleet, connect_db, count_rows, publish, stored_rows
from wearline.db import migrate
from wearline.settings import Settings


async def _ingest_until(settings: Settings, workers: int, rows: int, publish_all: object) -> list[ingest.IngestSummary]:
    stop = asyncio.Event()
    subscribed = [asyncio.Event() for _ in range(workers)]
    schema = settings.database.schema_name

    async def drive() -> None:
        try:
            for ev in subscribed:
                await ev.wait()
            await asyncio.to_thread(publish_all)  # type: ignore[arg-type]
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(count_rows, schema) < rows and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.1)
        finally:
            stop.set()

    async with asyncio.timeout(90), asyncio.TaskGroup() as tg:
        runs = [
            tg.create_task(
                ingest.run_ingest(
                    settings, stop, registry=CollectorRegistry(), client_id=unique("wlt-w-"), subscribed=ev
                )
            )
            for ev in subscribed
        ]
        tg.create_task(drive())
    return [r.result() for r in runs]


async def test_two_workers_share_the_load_and_commit_each_reading_once(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        mqtt={"host": host, "port": port},
        ingest={"shared_group": unique("g"), "subscription": "shared"},
    )
    await migrate(settings.database)
    fleet = Fleet(settings.topic_prefix, machines=20, samples=60, start_ms=int(time.time() * 1000) - 120_000)

    summaries = await _ingest_until(settings, 2, fleet.rows, lambda: publish(host, port, fleet.messages()))

    assert all(s.messages > 0 for s in summaries), f"a worker took no load: {summaries}"
    assert sum(s.messages for s in summaries) == fleet.machines * fleet.samples
    assert stored_rows(schema) == fleet.expected()


async def test_replayed_backlog_lands_in_its_own_partitions_beside_live_data(
    schema: str, storage: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), storage, mqtt={"host": host, "port": port})
    await migrate(settings.database)
    now = int(time.time() * 1000)
    # 30 hours of one-minute samples from 5 gateways, 60 per message: always spans at least two UTC days.
    backlog = Fleet(settings.topic_prefix, machines=5, samples=30 * 60, start_ms=now - 30 * 3_600_000,
                    step_ms=60_000, per_message=60, tenant="replay")  # fmt: skip
    live = Fleet(settings.topic_prefix, machines=5, samples=30, start_ms=now - 30_000, tenant="live")

    def publish_all() -> None:
        # Live data published while the backlog is being replayed, as it would be in the field.
        replay = list(backlog.messages())
        current = list(live.messages())
        mixed = [m for pair in zip(replay, current, strict=False) for m in pair] + replay[len(current) :]
        publish(host, port, mixed)

    await _ingest_until(settings, 1, backlog.rows + live.rows, publish_all)

    assert stored_rows(schema) == backlog.expected() | live.expected()
    with connect_db(schema) as conn:
        if storage == "native":
            misplaced = conn.execute(
                """SELECT count(*) FROM readings
                   WHERE tableoid::regclass::text <> 'readings_p' || to_char(time AT TIME ZONE 'UTC', 'YYYYMMDD')"""
            ).fetchone()
            parts = conn.execute("SELECT count(DISTINCT tableoid) FROM readings").fetchone()
        else:
            misplaced = conn.execute(
                """SELECT count(*) FROM readings r
                   JOIN timescaledb_information.chunks c ON c.hypertable_name = 'readings'
                        AND c.hypertable_schema = current_schema()
                        AND format('%I.%I', c.chunk_schema, c.chunk_name)::regclass = r.tableoid
                   WHERE NOT (r.time >= c.range_start AND r.time < c.range_end)"""
            ).fetchone()
            parts = conn.execute("SELECT count(DISTINCT tableoid) FROM readings").fetchone()
    assert misplaced == (0,)
    assert parts is not None
    assert int(parts[0]) >= 2  # type: ignore[call-overload]
