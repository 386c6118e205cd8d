"""The outboxes over time (issue 12, item 8 and retention): what they delivered is deleted after
``alerts.outbox_retention_days``, in chunks, and the worker's metrics count deliveries, failures and depth of every
outbox, with each target's series there before its first delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

import alerts
from alerts._retention import Purged, delete_delivered
from tests.alerts.test_cmms import cmms
from tests.conftest import make_settings, unique
from wearline.db import connect, migrate
from wearline.settings import Settings

Conn = psycopg.AsyncConnection[Any]
CHUNK = 7
RETENTION_DAYS = 1.0


@pytest.fixture
async def world(schema: str) -> AsyncIterator[tuple[Settings, Conn]]:
    """Tenants acme and beta with one pump each; beta has a webhook and a ticket whose ``events`` events are
    in both outboxes."""
    settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    async with await connect(settings.database, autocommit=True) as conn:
        for tenant in ("acme", "beta"):
            await conn.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id)
                   INSERT INTO machines (tenant_id, line_id, name)
                   SELECT (SELECT tenant_id FROM t), line_id, 'pump-1' FROM l""",
                {"t": tenant},
            )
        await alerts.add_webhook(
            conn, tenant="beta", name="beta-hook", url="http://127.0.0.1:9/hook", fmt="wearline", secret="s"
        )
        yield settings, conn


async def beta_events(conn: Conn, n: int) -> None:
    """A ticket of beta's with ``n`` events (an opening and comments), each in both outboxes by the triggers."""
    await conn.execute(
        """WITH k AS (INSERT INTO tickets (tenant_id, machine_id, line_id, reason, priority, title, first_seen,
                                           last_seen)
                      SELECT m.tenant_id, m.machine_id, m.line_id, 'anomaly', 2, 'Abnormal', now(), now()
                      FROM machines m JOIN tenants t USING (tenant_id) WHERE t.name = 'beta'
                      RETURNING ticket_id)
           INSERT INTO ticket_events (ticket_id, kind, actor, why)
           SELECT ticket_id, CASE WHEN i = 1 THEN 'opened' ELSE 'comment' END, 'ana', 'note ' || i
           FROM k, generate_series(1, %s) i""",
        [n],
    )


async def age(conn: Conn, table: str, column: str, ages_days: list[float | None]) -> None:
    """Mark the table's rows, oldest first, delivered that many days ago (None: still owed)."""
    key = "outbox_id" if table == "outbox" else "event_id"
    await conn.execute(
        f"""UPDATE {table} o SET {column} = now() - make_interval(secs => u.d * 86400)
            FROM (SELECT {key} AS id, row_number() OVER (ORDER BY {key}) AS n FROM {table}) r
            JOIN unnest(%s::float8[]) WITH ORDINALITY AS u(d, n) USING (n)
            WHERE o.{key} = r.id""",
        [ages_days],
    )


async def ids(conn: Conn, table: str) -> list[int]:
    key = "outbox_id" if table == "outbox" else "event_id"
    cur = await conn.execute(f"SELECT {key} FROM {table} ORDER BY {key}")
    return [r[0] for r in await cur.fetchall()]


async def test_delivered_rows_past_retention_go_in_chunks_and_nothing_still_owed_or_failed(
    world: tuple[Settings, Conn],
) -> None:
    _, conn = world
    expired, recent, owed, failed = 10 * CHUNK, 4, 3, 2
    await beta_events(conn, expired + recent + owed + failed)
    # Ten chunks' worth delivered ten times the retention ago; some delivered within it; some never delivered
    # (created long ago); some given up on long ago: only the first kind goes.
    ages: list[float | None] = [10 * RETENTION_DAYS] * expired + [RETENTION_DAYS / 2] * recent + [None] * owed
    await age(conn, "outbox", "delivered_at", ages + [None] * failed)
    await conn.execute("UPDATE outbox SET created_at = now() - interval '30 days'")
    await conn.execute(
        """UPDATE outbox SET failed_at = now() - interval '30 days'
           WHERE outbox_id IN (SELECT outbox_id FROM outbox ORDER BY outbox_id DESC LIMIT %s)""",
        [failed],
    )
    await age(conn, "mqtt_outbox", "published_at", ages + [None] * failed)
    outbox, mqtt = await ids(conn, "outbox"), await ids(conn, "mqtt_outbox")

    assert await delete_delivered(conn, 0, chunk=CHUNK) == Purged(0, 0), "0 keeps everything"
    purged = await delete_delivered(conn, RETENTION_DAYS, chunk=CHUNK)
    print(f"{purged} with chunks of {CHUNK}")
    assert purged == Purged(expired, expired)
    assert await ids(conn, "outbox") == outbox[expired:], "kept: delivered within retention, pending, failed"
    assert await ids(conn, "mqtt_outbox") == mqtt[expired:]
    cur = await conn.execute("SELECT count(*) FROM ticket_events")
    assert await cur.fetchone() == (len(mqtt),), "the history itself is not the outbox's to delete"
    assert await delete_delivered(conn, RETENTION_DAYS, chunk=CHUNK) == Purged(0, 0)


async def test_the_worker_deletes_expired_rows_and_counts_every_outbox(world: tuple[Settings, Conn]) -> None:
    settings, conn = world
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"outbox_retention_days": RETENTION_DAYS})}
    )
    old = 3 * CHUNK
    await beta_events(conn, old)
    await age(conn, "outbox", "delivered_at", [10 * RETENTION_DAYS] * old)
    await age(conn, "mqtt_outbox", "published_at", [10 * RETENTION_DAYS] * old)
    cur = await conn.execute("SELECT max(event_id) FROM ticket_events")
    mark = (await cur.fetchone() or (0,))[0]
    with cmms(down=1) as acme_cmms:
        await alerts.add_cmms_adapter(conn, tenant="acme", name="maximo", url=acme_cmms.url, secret="s")
        await alerts.add_cmms_adapter(conn, tenant="beta", name="fiix", url=acme_cmms.url, secret="s")
        await conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               SELECT machine_id, now(), 'zscore', 30, 6, '{vibration_rms}' FROM machines m
               JOIN tenants t USING (tenant_id) WHERE t.name = 'acme'"""
        )
        registry = CollectorRegistry()
        stop = asyncio.Event()
        task = asyncio.create_task(alerts.run_alerts(settings, stop, registry=registry))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cur = await conn.execute(
                """SELECT (SELECT count(*) FROM cmms_requests WHERE filed_at IS NULL),
                          (SELECT count(*) FROM mqtt_outbox WHERE published_at IS NULL),
                          (SELECT count(*) FROM mqtt_outbox WHERE event_id <= %s)""",
                [mark],
            )
            if await cur.fetchone() == (0, 0, 0):
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
    cur = await conn.execute("SELECT count(*) FROM ticket_events WHERE event_id > %s", [mark])
    new_events = (await cur.fetchone() or (0,))[0]
    cur = await conn.execute("SELECT count(*) FROM outbox")
    left = (await cur.fetchone() or (0,))[0]
    codes = [code for code, _, _ in acme_cmms.requests]
    print(f"{new_events} new event(s); CMMS answered {codes}; {left} webhook row(s) left")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert new_events >= 1, "the anomaly opened a ticket"
    assert value("wearline_alerts_outbox_deleted_total", outbox="webhooks") == old
    assert value("wearline_alerts_outbox_deleted_total", outbox="mqtt") == old
    assert left == 0, "beta's old deliveries are gone, and acme has no webhook"
    assert value("wearline_alerts_mqtt_publications_total", outcome="published") == new_events
    assert value("wearline_alerts_mqtt_publications_total", outcome="failed") == 0
    assert value("wearline_alerts_mqtt_outbox_pending") == 0
    assert value("wearline_alerts_cmms_filings_total", adapter="maximo", outcome="retry") == codes.count(500)
    assert value("wearline_alerts_cmms_filings_total", adapter="maximo", outcome="filed") == codes.count(201) == 1
    assert value("wearline_alerts_cmms_outbox_pending") == 0
    # Series of targets with nothing to deliver yet exist at 0, so a rate() or an alert on them works from the start.
    for outcome in ("filed", "retry", "failed"):
        assert value("wearline_alerts_cmms_filings_total", adapter="fiix", outcome=outcome) == 0
    assert value("wearline_alerts_cmms_filings_total", adapter="maximo", outcome="failed") == 0
    for outcome in ("delivered", "retry", "failed"):
        assert value("wearline_alerts_webhook_deliveries_total", webhook="beta-hook", outcome=outcome) == 0
    assert value("wearline_alerts_outbox_pending") == 0
