"""Running the demo: reset its schema, run every stage in this process, publish a fleet with one fault."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from psycopg import sql

import alerts
import analytics
import ingest
import simulators
from wearline.db import connect, migrate
from wearline.lifecycle import serve_metrics
from wearline.settings import Settings

__all__ = ["DemoResult", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    ticket: alerts.Ticket | None
    seconds: float
    published: int


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    *,
    machines: int = 5,
    faulty: int = 2,
    history_s: int = 900,
    fault_at_s: int = 700,
    time_scale: float = 60.0,
    timeout_s: float = 120.0,
) -> DemoResult:
    """Reset the demo schema, run every stage in this process, and return the first ticket (or None on timeout).

    The simulated clock starts ``history_s`` before now and runs ``time_scale`` times faster, so a fault that
    takes ten simulated minutes to develop shows up within seconds.
    """
    started = time.monotonic()
    conn = await connect(settings.database, autocommit=True)
    async with conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.database.schema_name))
        )
    await migrate(settings.database)
    serve_metrics(settings.ingest.metrics_port, setting="ingest.metrics_port")
    # One steady operating condition, so the only thing a detector can find is the injected bearing wear, which
    # runs to failure shortly after the published history ends.
    scenario = simulators.Scenario(
        name="demo",
        groups=(simulators.MachineGroup("centrifugal_pump", machines, conditions=("mid",)),),
        ambient_swing_c=0.0,
        # Bearing wear rises late (exponential damage): failing 10 s after the history ends, the last minute of it
        # lifts vibration well clear of the streaming detector's threshold.
        faults=(simulators.FaultSpec(faulty, "bearing_wear", fault_at_s, duration_s=history_s - fault_at_s + 10),),
    )
    stage_stop = asyncio.Event()
    subscribed = asyncio.Event()
    ticket: alerts.Ticket | None = None
    published = 0

    async def publish() -> None:
        nonlocal published
        # The broker keeps messages only for subscriptions it knows: start once ingest has subscribed.
        await subscribed.wait()
        result = await simulators.publish_fleet(
            settings.mqtt,
            settings.topic_prefix,
            scenario,
            stage_stop,
            steps=int(history_s / scenario.sample_period_s),
            time_scale=time_scale,
            start_ms=int(time.time() * 1000) - history_s * 1000,
        )
        published = result.messages

    async def watch() -> None:
        nonlocal ticket
        deadline = time.monotonic() + timeout_s
        async with await connect(settings.database, autocommit=True) as wconn:
            while ticket is None and time.monotonic() < deadline and not stop.is_set():
                found = await alerts.list_tickets(wconn)
                if found:
                    ticket = found[0]
                    break
                await asyncio.sleep(0.5)
        stage_stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(ingest.run_ingest(settings, stage_stop, subscribed=subscribed))
        tg.create_task(analytics.run_analytics(settings, stage_stop))
        tg.create_task(alerts.run_alerts(settings, stage_stop))
        tg.create_task(publish())
        tg.create_task(watch())
    return DemoResult(ticket, time.monotonic() - started, published)
