"""The README's live example, through the whole chain: the plant's last hour is stored and raises its tickets.

Issue 10, item 2: `wearline simulate --scenario deploy/scenarios/plant.toml --mode accelerated --time-scale 60`
stamped samples ahead of the wall clock, ingest kept 94 % of them as ts_future dead letters, and the pump with the
injected bearing wear never got a ticket. Here the same scenario runs ten times faster (x600) over its hour.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry

import alerts
import analytics
import ingest
import simulators
from tests.conftest import TEST_DSN
from wearline.db import connect
from wearline.settings import Settings

PLANT = Path(__file__).resolve().parents[2] / "deploy" / "scenarios" / "plant.toml"
STEPS = 3600


async def test_the_plants_hour_is_stored_and_the_faulty_pump_gets_a_ticket(migrated: Settings) -> None:
    settings = migrated
    scenario = simulators.load_scenario(PLANT)
    assert any(f.machine == "pump-002" and f.kind == "bearing_wear" for f in scenario.faults)
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    registry = CollectorRegistry()
    titles: list[str] = []
    published: list[simulators.PublishSummary] = []

    async def publish_then_wait_for_the_pump() -> None:
        try:
            await subscribed.wait()
            began = time.monotonic()
            published.append(
                await simulators.publish_fleet(
                    settings.mqtt, settings.topic_prefix, scenario, asyncio.Event(), steps=STEPS, time_scale=600
                )
            )
            print(f"published the plant's hour in {time.monotonic() - began:.1f} s")
            async with await connect(settings.database, autocommit=True) as conn:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    titles[:] = [t.title for t in await alerts.list_tickets(conn)]
                    if any("pump-002" in t for t in titles):
                        break
                    await asyncio.sleep(0.5)
        finally:
            stop.set()

    async with asyncio.timeout(110), asyncio.TaskGroup() as tg:
        tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        tg.create_task(analytics.run_analytics(settings, stop, registry=registry))
        tg.create_task(alerts.run_alerts(settings, stop, registry=registry))
        tg.create_task(publish_then_wait_for_the_pump())

    schema = settings.database.schema_name
    with psycopg.connect(TEST_DSN, options=f"-c search_path={schema}") as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()
        dead = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
    summary = published[0]
    print(
        f"published {summary.messages} messages ({summary.samples} samples, "
        f"{summary.gateways.duplicates} duplicate messages); readings {readings}; dead letters {dead}; "
        f"{len(titles)} tickets: {titles}"
    )
    assert dead == [], "no sample is stamped ahead of the wall clock, so none is a ts_future dead letter"
    assert readings == (scenario.machines * STEPS,), "every sample is one reading (duplicates land on the same row)"
    assert any("pump-002" in t for t in titles), "the pump with the injected bearing wear has a ticket"
