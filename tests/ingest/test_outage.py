"""Back-pressure: the database goes away for more than 10 s mid-stream; ingest holds, retries, and loses nothing."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import TEST_DSN, make_settings, unique
from tests.ingest._support import Fleet, TcpProxy, count_rows, dsn_server, proxied_dsn, publish, stored_rows
from wearline.db import migrate

OUTAGE_S = 11.0


async def test_database_outage_holds_back_then_commits_everything_once(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    proxy = TcpProxy(*dsn_server(TEST_DSN))
    await proxy.start()
    direct = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    await migrate(direct.database)
    settings = make_settings(
        schema,
        direct.topic_prefix,
        "native",
        mqtt={"host": host, "port": port},
        database={"dsn": proxied_dsn(TEST_DSN, proxy.port), "connect_timeout_s": 1.0},
        ingest={"batch_max_messages": 100, "receive_maximum": 500},
    )
    fleet = Fleet(settings.topic_prefix, machines=10, samples=300, start_ms=int(time.time() * 1000) - 600_000)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    seen_db_down = False
    max_depth = 0.0

    def metric(name: str) -> float:
        value = registry.get_sample_value(name)
        return -1.0 if value is None else value

    async def drive() -> None:
        nonlocal seen_db_down, max_depth
        try:
            await subscribed.wait()
            publishing = asyncio.create_task(asyncio.to_thread(publish, host, port, fleet.messages(), rate=200))
            while await asyncio.to_thread(count_rows, schema) < fleet.rows // 10:  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.05)
            await proxy.cut()
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < OUTAGE_S:
                seen_db_down |= metric("wearline_ingest_db_up") == 0
                max_depth = max(max_depth, metric("wearline_ingest_queue_depth"))
                await asyncio.sleep(0.1)
            rows_during = await asyncio.to_thread(count_rows, schema)
            assert rows_during < fleet.rows, "the outage came too late to test anything"
            await proxy.restore()
            assert await publishing == fleet.machines * fleet.samples
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(count_rows, schema) < fleet.rows and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.2)
        finally:
            stop.set()

    try:
        async with asyncio.timeout(110), asyncio.TaskGroup() as tg:
            tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
            tg.create_task(drive())
    finally:
        await proxy.close()

    assert seen_db_down, "wearline_ingest_db_up never went to 0 during the outage"
    assert max_depth >= 100, "the queue depth did not show the messages held during the outage"
    assert metric("wearline_ingest_db_up") == 1
    assert metric("wearline_ingest_db_retries_total") >= 1
    assert stored_rows(schema) == fleet.expected()
