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
from demo._rul import register_demo_rul
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
    """The anomaly ticket, the one the demo acknowledges."""
    seconds: float
    published: int
    interrupted: bool = False
    board: str = ""
    """The board's address, where the API served it (and serves it still with ``serve``)."""
    token: str = ""
    """A read-write token of the ticket's tenant, to sign in to the board with."""
    acknowledged: dict[str, Any] | None = None
    """The ticket as the API returned it after the demo acknowledged it."""
    complete: bool = False
    """Both tickets appeared and every remaining-life estimate of the published history was handled."""
    rul_ticket: alerts.Ticket | None = None
    """The predictive ticket: the failing pump's remaining-life interval reached under the horizon."""


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    *,
    machines: int = 5,
    faulty: int = 2,
    history_s: int = 72 * 3600,
    fault_at_s: int = 0,
    analytics_after_h: float = 24.0,
    sample_period_s: float = 300.0,
    time_scale: float = 14_400.0,
    rul_horizon_h: float = 20.0,
    timeout_s: float = 120.0,
    serve: bool = False,
) -> DemoResult:
    """Reset the demo schema, run every stage in this process, and return its tickets (None on timeout).

    A remaining-life model is fit on a small simulator export of pumps like the demo's and registered first. The
    simulated clock starts ``history_s`` before now and runs ``time_scale`` times faster, so days of hourly means
    (the RUL model's input) and a fault that takes a day to develop show up within seconds; ``rul_horizon_h`` is
    the remaining-life rule's horizon. Once the anomaly ticket, and the failing pump's remaining-life ticket, are
    there and the history is published, the API starts (on
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
    settings = settings.model_copy(
        update={
            # The history's evidence is hours to days old by the wall clock when the alerts worker sees it: a
            # ticket must not resolve as cleared just because the accelerated clock ran past its hold.
            "alerts": settings.alerts.model_copy(
                update={"rul_horizon_h": rul_horizon_h, "resolve_hold_s": float(history_s)}
            ),
            # A week of samples as the streaming detector's baseline: wear that develops over a day stands out
            # against it, where the default 300 samples (a day here) would absorb it as the new normal.
            "analytics": settings.analytics.model_copy(
                update={"baseline_rows": max(settings.analytics.baseline_rows, int(7 * 86400 / sample_period_s))}
            ),
        }
    )
    serve_metrics(settings.ingest.metrics_port, setting="ingest.metrics_port", host=settings.metrics_host)
    # One steady operating condition, so the only thing a detector can find is the injected bearing wear, which
    # runs to failure shortly after the published history ends.
    scenario = simulators.Scenario(
        name="demo",
        groups=(simulators.MachineGroup("centrifugal_pump", machines, conditions=("mid",)),),
        ambient_swing_c=0.0,
        sample_period_s=sample_period_s,
        # Bearing wear rises late (exponential damage): failing one sample after the history ends, its last hours
        # lift vibration well clear of the streaming detector's threshold and bring the pump's remaining-life
        # interval under the horizon, while the healthy pumps, days into lives of months, stay above it.
        faults=(
            simulators.FaultSpec(
                faulty, "bearing_wear", fault_at_s, duration_s=history_s - fault_at_s + sample_period_s
            ),
        ),
    )
    stage_stop = asyncio.Event()
    api_stop = asyncio.Event()
    result = DemoResult(None, 0.0, 0)
    subscribed = asyncio.Event()
    ticket: alerts.Ticket | None = None
    rul_ticket: alerts.Ticket | None = None
    published = 0
    published_all = asyncio.Event()

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
            steps=int(history_s / sample_period_s),
            time_scale=time_scale,
            start_ms=int(time.time() * 1000) - history_s * 1000,
        )
        published = fleet.messages
        published_all.set()

    async def later_analytics() -> None:
        # A plant's history arrives before analytics is switched on: the first remaining-life estimate then sees
        # hours of it, not the one hourly mean on which no model can tell a new pump from one about to fail.
        async with await connect(settings.database, autocommit=True) as aconn:
            # The model is fit while the history is published (seconds of CPU in a thread); an interrupted demo
            # leaves the thread to finish on its own.
            fitting = asyncio.ensure_future(register_demo_rul(aconn))
            stopped = asyncio.ensure_future(stage_stop.wait())
            try:
                await asyncio.wait([fitting, stopped], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if not fitting.done():
                fitting.cancel()
                return
            fitting.result()
            while await _machines_with_hours(aconn, analytics_after_h) < machines:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stage_stop.wait(), 0.2)
                if stage_stop.is_set():
                    return
        await analytics.run_analytics(settings, stage_stop)

    async def watch() -> None:
        nonlocal ticket, rul_ticket
        deadline = time.monotonic() + timeout_s
        # ingest retries an unreachable broker for ever, as a service should; the demo gives up and says why.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(timeout_s, settings.mqtt.connect_timeout_s)):
                await _first(subscribed, stop)
        if not subscribed.is_set():
            stage_stop.set()
            return
        async with await connect(settings.database, autocommit=True) as wconn:
            while time.monotonic() < deadline and not stop.is_set():
                found = await alerts.list_tickets(wconn)
                ticket = next((t for t in found if t.kind != "predictive"), None)
                rul_ticket = next((t for t in found if t.kind == "predictive"), None)
                # Every estimate of the whole history turned into tickets or not: a healthy pump's would show too.
                if ticket and rul_ticket and published_all.is_set() and not await _unhandled_estimates(wconn):
                    result.complete = True
                    break
                await asyncio.sleep(0.5)
            if result.complete and ticket is not None and not stop.is_set():
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
            tg.create_task(later_analytics())
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
    result.rul_ticket = rul_ticket
    result.interrupted = stop.is_set() and not result.complete
    return result


async def _machines_with_hours(conn: Any, hours: float) -> int:
    cur = await conn.execute(
        """SELECT count(*) FROM (SELECT machine_id FROM readings GROUP BY machine_id
           HAVING max(time) - min(time) >= make_interval(secs => %s)) m""",
        [hours * 3600],
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _unhandled_estimates(conn: Any) -> int:
    cur = await conn.execute("SELECT count(*) FROM rul_estimates WHERE handled_at IS NULL")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


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
