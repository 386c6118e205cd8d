"""Running the demo: reset its schema, run every stage in this process, publish a fleet with one fault."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg import sql

import alerts
import analytics
import ingest
import simulators
from wearline.db import connect, migrate
from wearline.errors import WearlineError
from wearline.lifecycle import serve_metrics
from wearline.settings import Settings

__all__ = ["DemoError", "DemoResult", "run_demo"]

log = logging.getLogger(__name__)


class DemoError(WearlineError):
    """The demo could not run: the broker or the database is out of reach."""


@dataclass
class DemoResult:
    ticket: alerts.Ticket | None
    seconds: float
    published: int
    interrupted: bool = False
    board: str = ""
    """The board's address, where the API served it (and serves it still with ``serve``)."""
    token: str = ""
    """A read-write token of the ticket's tenant, to sign in to the board with."""
    acknowledged: dict[str, Any] | None = None
    """The ticket as the API returned it after the demo acknowledged it."""


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
    serve: bool = False,
) -> DemoResult:
    """Reset the demo schema, run every stage in this process, and return the first ticket (or None on timeout).

    The simulated clock starts ``history_s`` before now and runs ``time_scale`` times faster, so a fault that
    takes ten simulated minutes to develop shows up within seconds. Once the ticket is there, the API starts (on
    ``api.host``/``api.port``), a token is made for the ticket's tenant and the ticket is acknowledged through the
    API, as a maintenance team's tool would; with ``serve`` the API and the stages go on until ``stop``. Raises
    :class:`DemoError` when ingest cannot subscribe within the broker's connect timeout (ingest itself would go on
    retrying) or the API's port is taken.
    """
    started = time.monotonic()
    conn = await connect(settings.database, autocommit=True)
    async with conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.database.schema_name))
        )
    await migrate(settings.database)
    serve_metrics(settings.ingest.metrics_port, setting="ingest.metrics_port", host=settings.metrics_host)
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
    api_stop = asyncio.Event()
    result = DemoResult(None, 0.0, 0)
    subscribed = asyncio.Event()
    ticket: alerts.Ticket | None = None
    published = 0

    async def publish() -> None:
        nonlocal published
        # The broker keeps messages only for subscriptions it knows: start once ingest has subscribed.
        await _first(subscribed, stage_stop)
        if stage_stop.is_set():
            return
        fleet = await simulators.publish_fleet(
            settings.mqtt,
            settings.topic_prefix,
            scenario,
            stage_stop,
            steps=int(history_s / scenario.sample_period_s),
            time_scale=time_scale,
            start_ms=int(time.time() * 1000) - history_s * 1000,
        )
        published = fleet.messages

    async def watch() -> None:
        nonlocal ticket
        deadline = time.monotonic() + timeout_s
        # ingest retries an unreachable broker for ever, as a service should; the demo gives up and says why.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(timeout_s, settings.mqtt.connect_timeout_s)):
                await _first(subscribed, stop)
        if not subscribed.is_set():
            stage_stop.set()
            return
        async with await connect(settings.database, autocommit=True) as wconn:
            while ticket is None and time.monotonic() < deadline and not stop.is_set():
                found = await alerts.list_tickets(wconn)
                if found:
                    ticket = found[0]
                    break
                await asyncio.sleep(0.5)
            if ticket is not None and not stop.is_set():
                await through_the_api(wconn, ticket)
        stage_stop.set()

    async def through_the_api(wconn: Any, t: alerts.Ticket) -> None:
        _, result.token = await alerts.create_token(wconn, tenant=t.tenant, name="demo", can_write=True)
        api = asyncio.create_task(alerts.serve_api(settings, api_stop))
        base = f"http://{settings.api.host}:{settings.api.port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                await _until_up(http, api)
                answer = await http.post(
                    f"/api/v1/tickets/{t.ticket_id}/acknowledge",
                    headers={"Authorization": f"Bearer {result.token}"},
                    json={"by": "demo", "why": "acknowledged through the API by the demo"},
                )
                answer.raise_for_status()
                result.acknowledged = answer.json()
            result.board = f"{base}/board"
            if serve:
                log.info("serving the board on %s until Ctrl-C", result.board)
                await stop.wait()
        finally:
            api_stop.set()
            await api

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ingest.run_ingest(settings, stage_stop, subscribed=subscribed))
            tg.create_task(analytics.run_analytics(settings, stage_stop))
            tg.create_task(alerts.run_alerts(settings, stage_stop))
            tg.create_task(publish())
            tg.create_task(watch())
    except* WearlineError as group:
        # One line for the user (a taken API port), not a task group's traceback.
        raise group.exceptions[0] from None
    if not subscribed.is_set() and not stop.is_set():
        m = settings.mqtt
        raise DemoError(
            f"the MQTT broker at {m.host}:{m.port} is unreachable: ingest could not subscribe within "
            f"{min(timeout_s, m.connect_timeout_s):.0f} s (start it, or set WEARLINE_MQTT__HOST / WEARLINE_MQTT__PORT)"
        )
    result.ticket, result.published, result.seconds = ticket, published, time.monotonic() - started
    result.interrupted = stop.is_set() and ticket is None
    return result


async def _until_up(http: httpx.AsyncClient, api: asyncio.Task[None]) -> None:
    """Wait until the API answers; its own error (a taken port) if it ended instead."""
    for _ in range(100):
        if api.done():
            api.result()  # raises what ended it
            raise DemoError("the API stopped before it answered")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise DemoError(f"the API did not answer on {http.base_url} within 10 s")


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
