"""Ticket events on MQTT through the transactional outbox, against real brokers (issue 12, item 5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry

import alerts
from alerts._ticket_mqtt import TicketPublisher
from tests.conftest import make_settings, unique
from tests.ingest._fault_support import broker
from wearline.db import connect, migrate
from wearline.settings import Settings

Conn = psycopg.AsyncConnection[Any]
RETRY_S = 0.2


class Subscriber:
    """A paho subscriber on a thread of its own, QoS 1 with a persistent session (what the broker holds for it
    while it reconnects is not lost), recording every message as it arrives."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=unique("wlt-sub-"),
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        self._client.reconnect_delay_set(1, 1)

        def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, json.loads(msg.payload)))

        self._client.on_connect = on_connect
        self._client.on_subscribe = on_subscribe
        self._client.on_message = on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the subscription was not granted"

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, n: int, timeout_s: float = 20) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout_s
        while len(self.received()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond n (a duplicate) has a moment to arrive too
        return self.received()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextlib.contextmanager
def subscribed(host: str, port: int, topic: str) -> Iterator[Subscriber]:
    sub = Subscriber(host, port, topic)
    try:
        yield sub
    finally:
        sub.close()


@contextlib.asynccontextmanager
async def fleet(settings: Settings, tickets_per_tenant: int) -> AsyncIterator[Conn]:
    """Tenants acme and beta, each with ``tickets_per_tenant`` machines and a live ticket on each."""
    await migrate(settings.database)
    async with await connect(settings.database) as c:
        await c.set_autocommit(True)
        for tenant in ("acme", "beta"):
            await c.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id),
                        m AS (INSERT INTO machines (tenant_id, line_id, name)
                              SELECT (SELECT tenant_id FROM t), line_id, 'pump-' || i
                              FROM l, generate_series(1, %(n)s) i RETURNING machine_id, tenant_id)
                   INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
                   SELECT tenant_id, machine_id, 'anomaly', 2, 'Abnormal vibration_rms', now(), now() FROM m""",
                {"t": tenant, "n": tickets_per_tenant},
            )
        yield c


async def comments(conn: Conn, rounds: int, tag: str) -> list[int]:
    """``rounds`` comments on every ticket, round-robin, one transaction each; returns the new event ids."""
    cur = await conn.execute("SELECT ticket_id FROM tickets ORDER BY ticket_id")
    ids = [r[0] for r in await cur.fetchall()]
    for n in range(rounds):
        for ticket_id in ids:
            async with conn.transaction():
                await alerts.comment(conn, ticket_id, f"{tag} {n}", actor="ana", now=datetime.now(UTC))
    cur = await conn.execute("SELECT event_id FROM mqtt_outbox WHERE published_at IS NULL ORDER BY event_id")
    return [r[0] for r in await cur.fetchall()]


def check(messages: list[tuple[str, dict[str, Any]]], prefix: str, expected: list[int]) -> None:
    """Every expected event exactly once, each ticket's in order, on its tenant's topic."""
    ids = [m["event_id"] for _, m in messages]
    dupes = len(ids) - len(set(ids))
    print(f"expected {len(expected)} events, received {len(ids)}, duplicates {dupes}")
    assert sorted(ids) == sorted(expected), "every event, nothing else"
    assert dupes == 0
    per_ticket: dict[int, list[int]] = {}
    for topic, m in messages:
        ticket = m["ticket"]
        assert topic == f"{prefix}/{ticket['tenant']}/tickets/{ticket['id']}"
        assert m["id"] == f"{ticket['external_id']}-event-{m['event_id']}"
        per_ticket.setdefault(ticket["id"], []).append(m["event_id"])
    for ticket_id, events in per_ticket.items():
        assert events == sorted(events), f"ticket #{ticket_id}'s events out of order: {events}"


async def test_every_event_once_in_order_under_its_tenant_and_nothing_rolled_back(schema: str) -> None:
    settings = make_settings(schema, unique("wlt/"), "native")
    prefix = settings.topic_prefix
    async with fleet(settings, 10) as conn:
        publisher = TicketPublisher(settings.mqtt, prefix, retry_s=RETRY_S)
        with subscribed(settings.mqtt.host, settings.mqtt.port, f"{prefix}/+/tickets/#") as sub:
            cur = await conn.execute("SELECT ticket_id FROM tickets ORDER BY ticket_id LIMIT 1")
            first = await cur.fetchone()
            assert first is not None
            with contextlib.suppress(RuntimeError):
                async with conn.transaction():
                    await alerts.comment(conn, first[0], "never committed", actor="ana", now=datetime.now(UTC))
                    raise RuntimeError("the change fails after its event was written")
            await comments(conn, 3, "note")
            async with conn.transaction():
                await alerts.set_status(conn, first[0], "acknowledged", actor="bo", now=datetime.now(UTC))
            cur = await conn.execute("SELECT event_id FROM mqtt_outbox WHERE published_at IS NULL ORDER BY event_id")
            expected = [r[0] for r in await cur.fetchall()]
            assert len(expected) == 20 * 3 + 1
            # Batches of 7 (far under the 61 events) cross the batch boundary many times.
            while await publisher.drain(conn, limit=7):
                pass
            messages = sub.wait_for(len(expected))
        await publisher.aclose()
    check(messages, prefix, expected)
    assert {t.split("/")[-3] for t, _ in messages} == {"acme", "beta"}
    assert "never committed" not in json.dumps([m for _, m in messages])
    last = messages[-1][1]
    assert (last["event"]["kind"], last["ticket"]["status"]) == ("status", "acknowledged")
    assert messages[0][1]["ticket"]["status"] == "open", "each event carries the ticket as that event left it"


@pytest.mark.timeout(180)
async def test_events_wait_out_a_broker_outage_of_ten_retry_intervals_then_arrive_once_in_order(schema: str) -> None:
    with broker() as mosquitto:
        settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": "127.0.0.1", "port": mosquitto.port})
        prefix = settings.topic_prefix
        async with fleet(settings, 5) as conn:
            publisher = TicketPublisher(settings.mqtt, prefix, retry_s=RETRY_S, max_retry_s=RETRY_S)
            with subscribed("127.0.0.1", mosquitto.port, f"{prefix}/+/tickets/#") as sub:
                before = await comments(conn, 2, "before")
                while await publisher.drain(conn):
                    pass
                assert len(sub.wait_for(len(before))) == len(before)

                mosquitto.stop()
                during = await comments(conn, 4, "during")
                outage_start = time.monotonic()
                tries = 0
                while time.monotonic() - outage_start < 10 * RETRY_S:
                    assert await publisher.drain(conn) == 0, "nothing is published while the broker is away"
                    tries += 1
                    await asyncio.sleep(RETRY_S / 4)
                cur = await conn.execute("SELECT count(*), min(attempts) FROM mqtt_outbox WHERE published_at IS NULL")
                pending = await cur.fetchone()
                print(f"outage {time.monotonic() - outage_start:.1f} s, {tries} drains, pending {pending}")
                assert pending is not None
                assert pending[0] == len(during)

                mosquitto.start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    await publisher.drain(conn)
                    cur = await conn.execute("SELECT count(*) FROM mqtt_outbox WHERE published_at IS NULL")
                    if await cur.fetchone() == (0,):
                        break
                    await asyncio.sleep(RETRY_S / 4)
                messages = sub.wait_for(len(before) + len(during))
            await publisher.aclose()
        assert mosquitto.saved_ok()
    check(messages, prefix, before + during)
    assert [m["event_id"] for _, m in messages[: len(before)]] == before


async def test_the_alerts_worker_publishes_a_new_tickets_opening(schema: str) -> None:
    settings = make_settings(schema, unique("wlt/"), "native")
    prefix = settings.topic_prefix
    async with fleet(settings, 1) as conn:
        await conn.execute("DELETE FROM tickets")  # the fixture's tickets are not the point here
        await conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               SELECT machine_id, now(), 'zscore', 30, 6, '{vibration_rms}' FROM machines m
               JOIN tenants t USING (tenant_id) WHERE t.name = 'acme'"""
        )
        with subscribed(settings.mqtt.host, settings.mqtt.port, f"{prefix}/+/tickets/#") as sub:
            stop = asyncio.Event()
            task = asyncio.create_task(alerts.run_alerts(settings, stop, registry=CollectorRegistry()))
            deadline = time.monotonic() + 30
            # The subscriber runs on a thread of its own: polling its list is the simple way to wait for it.
            while not sub.received() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stop.set()
            await task
            messages = sub.wait_for(1)
    [(topic, body)] = messages
    assert topic == f"{prefix}/acme/tickets/{body['ticket']['id']}"
    assert (body["event"]["kind"], body["ticket"]["priority"]) == ("opened", 1)
