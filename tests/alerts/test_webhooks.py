"""Webhooks through the transactional outbox, against a real HTTP receiver (issue 12, items 5 and 9)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

import alerts
from wearline.db import connect
from wearline.settings import AlertsSettings, Settings

Conn = psycopg.AsyncConnection[Any]
RULES = AlertsSettings(webhook_max_attempts=4, webhook_timeout_s=5)


@dataclass
class Receiver:
    """An HTTP endpoint that answers 500 to its first ``fail`` requests (or to all, with ``fail=-1``)."""

    fail: int = 0
    requests: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, json.loads(b)) for code, h, b in self.requests if code == 200]


@contextlib.contextmanager
def receiving(fail: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(fail)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                failing = receiver.fail < 0 or len(receiver.requests) < receiver.fail
                code = 500 if failing else 200
                receiver.requests.append((code, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"receiver down" if failing else b"ok")

        def log_message(self, *args: object) -> None:
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
async def conn(migrated: Settings) -> AsyncIterator[Conn]:
    async with await connect(migrated.database) as c:
        await c.set_autocommit(True)
        for tenant in ("acme", "beta"):
            await c.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id),
                        m AS (INSERT INTO machines (tenant_id, line_id, name)
                              SELECT (SELECT tenant_id FROM t), line_id, 'pump-1' FROM l RETURNING machine_id, tenant_id)
                   INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
                   SELECT tenant_id, machine_id, 'anomaly', 2, 'Abnormal vibration_rms', now(), now() FROM m""",
                {"t": tenant},
            )
        yield c


async def ticket_of(conn: Conn, tenant: str) -> int:
    cur = await conn.execute("SELECT ticket_id FROM tickets JOIN tenants USING (tenant_id) WHERE name = %s", [tenant])
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def work(conn: Conn, ticket_id: int) -> None:
    """Three events, as a maintenance team makes them."""
    now = datetime.now(UTC)
    async with conn.transaction():
        await alerts.set_status(conn, ticket_id, "acknowledged", actor="ana", why="on it", now=now)
    async with conn.transaction():
        await alerts.comment(conn, ticket_id, "bearing ordered", actor="bo", now=now)
    async with conn.transaction():
        await alerts.set_status(conn, ticket_id, "resolved", actor="bo", why="replaced", now=now)


async def drain(conn: Conn, settings: AlertsSettings, hours: int = 24) -> list[alerts.Delivery]:
    """Deliver with the clock moved on a minute at a time, so every backoff comes due."""
    done: list[alerts.Delivery] = []
    start = datetime.now(UTC)
    async with httpx.AsyncClient() as client:
        for minute in range(hours * 60):
            done += await alerts.deliver_due(conn, client, settings, now=start + timedelta(minutes=minute))
            cur = await conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL")
            if await cur.fetchone() == (0,):
                break
    return done


async def test_a_receiver_that_fails_then_succeeds_gets_each_event_once_signed_and_in_order(conn: Conn) -> None:
    with receiving(fail=3) as acme_rx, receiving() as beta_rx:
        async with conn.transaction():
            _, secret = await alerts.add_webhook(
                conn, tenant="acme", name="cmms", url=acme_rx.url, fmt="wearline", secret=None
            )
            await alerts.add_webhook(conn, tenant="beta", name="cmms", url=beta_rx.url, fmt="wearline", secret="b")
        acme, beta = await ticket_of(conn, "acme"), await ticket_of(conn, "beta")
        await work(conn, acme)
        async with conn.transaction():
            await alerts.comment(conn, beta, "beta's own note", actor="cy", now=datetime.now(UTC))
        done = await drain(conn, RULES)
        outcomes = [d.status for d in done]
        print(f"acme receiver: {len(acme_rx.requests)} requests, {len(acme_rx.accepted())} accepted; {outcomes}")
        accepted = acme_rx.accepted()
        keys = [h["idempotency-key"] for h, _ in accepted]
        assert len(keys) == len(set(keys)) == 3, "each event accepted exactly once"
        assert [b["event"]["kind"] for _, b in accepted] == ["status", "comment", "status"], "in order"
        assert [b["event"]["actor"] for _, b in accepted] == ["ana", "bo", "bo"]
        # Each carries the ticket as its event left it, though all were delivered after the last change.
        assert [b["ticket"]["status"] for _, b in accepted] == ["acknowledged", "acknowledged", "resolved"]
        assert {b["ticket"]["tenant"] for _, b in accepted} == {"acme"}
        assert len(acme_rx.requests) == 3 + 3, "3 failures, then each event once"
        retried = {h["idempotency-key"] for code, h, _ in acme_rx.requests if code == 500}
        assert retried == {keys[0]}, "a failing event blocks the ones after it on the same ticket"
        for code, headers, body in acme_rx.requests:
            t, v1 = (part.split("=", 1)[1] for part in headers["x-wearline-signature"].split(","))
            expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(v1, expected), f"signature of a {code} request"
        assert [json.loads(b)["event"]["why"] for _, _, b in beta_rx.requests] == ["beta's own note"]


async def test_gives_up_after_its_attempts_keeps_the_row_and_does_not_block_the_next(conn: Conn) -> None:
    with receiving(fail=-1) as rx:
        async with conn.transaction():
            await alerts.add_webhook(conn, tenant="acme", name="down", url=rx.url, fmt="wearline", secret="s")
        acme = await ticket_of(conn, "acme")
        await work(conn, acme)
        done = await drain(conn, RULES)
    assert [d.status for d in done].count("failed") == 3
    assert len(rx.requests) == 3 * RULES.webhook_max_attempts
    cur = await conn.execute("SELECT attempts, last_error FROM outbox ORDER BY outbox_id")
    assert await cur.fetchall() == [(4, "HTTP 500: receiver down")] * 3
    listed = {w.name: w for w in await alerts.list_webhooks(conn)}
    assert (listed["down"].pending, listed["down"].delivered, listed["down"].failed) == (0, 0, 3)


async def test_a_rolled_back_change_sends_nothing_and_a_crash_after_the_post_resends_the_same_key(conn: Conn) -> None:
    with receiving() as rx:
        async with conn.transaction():
            await alerts.add_webhook(conn, tenant="acme", name="cmms", url=rx.url, fmt="wearline", secret="s")
        acme = await ticket_of(conn, "acme")
        with contextlib.suppress(RuntimeError):
            async with conn.transaction():
                await alerts.comment(conn, acme, "never committed", actor="ana", now=datetime.now(UTC))
                raise RuntimeError("the change fails after its event was written")
        cur = await conn.execute("SELECT count(*) FROM outbox")
        assert await cur.fetchone() == (0,), "no outbox row without its committed event"
        async with conn.transaction():
            await alerts.comment(conn, acme, "committed", actor="ana", now=datetime.now(UTC))
        # The worker dies after the receiver accepted but before its commit: the row is still pending.
        with contextlib.suppress(RuntimeError):
            async with conn.transaction(), httpx.AsyncClient() as client:
                assert len(await alerts.deliver_due(conn, client, RULES)) == 1
                raise RuntimeError("killed before commit")
        await drain(conn, RULES)
    keys = [h["idempotency-key"] for h, _ in rx.accepted()]
    assert len(keys) == 2
    assert keys[0] == keys[1], "the re-sent request carries the same key, for the receiver to drop"


async def test_alertmanager_format_fires_and_resolves(conn: Conn) -> None:
    with receiving() as rx:
        async with conn.transaction():
            await alerts.add_webhook(conn, tenant="acme", name="am", url=rx.url, fmt="alertmanager", secret="s")
        await work(conn, await ticket_of(conn, "acme"))
        await drain(conn, RULES)
    bodies = [b for _, b in rx.accepted()]
    assert [b["status"] for b in bodies] == ["firing", "firing", "resolved"]
    first = bodies[0]
    assert first["version"] == "4"
    assert first["receiver"] == "am"
    alert = first["alerts"][0]
    assert alert["labels"]["alertname"] == "wearline_anomaly"
    assert alert["labels"]["severity"] == "major"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert bodies[2]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert len({b["alerts"][0]["fingerprint"] for b in bodies}) == 1, "one alert, the ticket's, through its life"


async def test_the_alerts_worker_delivers_a_new_ticket(migrated: Settings, conn: Conn) -> None:
    with receiving(fail=1) as rx:
        async with conn.transaction():
            await alerts.add_webhook(conn, tenant="acme", name="cmms", url=rx.url, fmt="wearline", secret="s")
        await conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               SELECT machine_id, now(), 'zscore', 30, 6, '{vibration_rms}' FROM machines m
               JOIN tenants t USING (tenant_id) WHERE t.name = 'acme'"""
        )
        await conn.execute("DELETE FROM tickets")  # the fixture's tickets are not the point here
        registry = CollectorRegistry()
        stop = asyncio.Event()
        task = asyncio.create_task(alerts.run_alerts(migrated, stop, registry=registry))
        deadline = asyncio.get_running_loop().time() + 30
        # The receiver answers on a thread of its own: polling its list is the simple way to wait for it.
        while not rx.accepted() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        stop.set()
        await task
    [(_, body)] = rx.accepted()
    assert body["event"]["kind"] == "opened"
    assert body["ticket"]["priority"] == 1
    assert (
        registry.get_sample_value("wearline_alerts_webhook_deliveries_total", {"webhook": "cmms", "outcome": "retry"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "wearline_alerts_webhook_deliveries_total", {"webhook": "cmms", "outcome": "delivered"}
        )
        == 1
    )
