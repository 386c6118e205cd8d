"""The whole chain on the real broker and database: publish -> readings -> anomaly -> ticket."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from prometheus_client import CollectorRegistry

import alerts
import analytics
import ingest
import simulators
from tests.conftest import TEST_DSN
from wearline.db import connect
from wearline.settings import Settings

MACHINES = 4
FAULTY = 1
HISTORY_S = 600


def _as(settings: Settings, role: str | None) -> Settings:
    return settings.model_copy(update={"database": settings.database.model_copy(update={"role": role})})


@pytest.mark.parametrize("roles", [False, True], ids=["owner", "stage-roles"])
async def test_fault_on_one_pump_becomes_one_ticket(migrated: Settings, roles: bool) -> None:
    """With ``stage-roles`` each stage acts as its least-privilege database role (issue 14, item 3): their grants
    are enough for the whole chain."""
    settings = migrated
    spec = simulators.FleetSpec(
        tenant="acme", machines=MACHINES, faults=(simulators.Fault(FAULTY, onset_s=420),), seed=7
    )
    stop = asyncio.Event()
    registry = CollectorRegistry()
    subscribed = asyncio.Event()
    ticket: list[alerts.Ticket] = []

    async def publish_then_wait_for_ticket() -> None:
        try:
            # Publish only once ingest holds its subscription: the broker keeps nothing for a subscriber it
            # has never seen.
            await subscribed.wait()
            summary = await simulators.publish_fleet(
                settings.mqtt, settings.topic_prefix, spec, asyncio.Event(),
                steps=HISTORY_S, time_scale=200.0, start_ms=int(time.time() * 1000) - HISTORY_S * 1000,
            )  # fmt: skip
            assert summary.messages == MACHINES * HISTORY_S
            async with await connect(settings.database, autocommit=True) as conn:
                deadline = time.monotonic() + 60
                while not ticket and time.monotonic() < deadline:
                    ticket.extend(await alerts.list_tickets(conn))
                    await asyncio.sleep(0.2)
        finally:
            stop.set()

    async with asyncio.timeout(100), asyncio.TaskGroup() as tg:
        tg.create_task(
            ingest.run_ingest(
                _as(settings, "wearline_ingest" if roles else None), stop, registry=registry, subscribed=subscribed
            )
        )
        tg.create_task(
            analytics.run_analytics(_as(settings, "wearline_analytics" if roles else None), stop, registry=registry)
        )
        tg.create_task(alerts.run_alerts(_as(settings, "wearline_alerts" if roles else None), stop, registry=registry))
        tg.create_task(publish_then_wait_for_ticket())

    assert len(ticket) == 1, "expected exactly one ticket"
    assert ticket[0].machine == f"{spec.site}/{spec.line}/pump-{FAULTY:03d}"
    assert ticket[0].tenant == "acme"
    assert ticket[0].status == "open"
    assert "vibration_rms" in ticket[0].title
    schema = settings.database.schema_name
    with psycopg.connect(TEST_DSN, options=f"-c search_path={schema}") as conn:
        readings = conn.execute("SELECT count(*), sum(array_length(vals, 1)) FROM readings").fetchone()
        anomaly_machines = conn.execute(
            "SELECT DISTINCT m.name FROM anomalies a JOIN machines m USING (machine_id)"
        ).fetchall()
        events = conn.execute("SELECT kind FROM ticket_events ORDER BY event_id").fetchall()
    # Every published sample is one committed row of five sensor values (ingest stopped after the ticket, and
    # the publisher had finished before that, so nothing may be missing).
    assert readings == (MACHINES * HISTORY_S, MACHINES * HISTORY_S * 5)
    assert anomaly_machines == [(f"pump-{FAULTY:03d}",)]
    assert events[0] == ("opened",)
    assert registry.get_sample_value("wearline_ingest_readings_total") == MACHINES * HISTORY_S * 5
    assert registry.get_sample_value("wearline_alerts_tickets_opened_total") == 1
