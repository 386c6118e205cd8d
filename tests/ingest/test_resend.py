"""Re-sends cannot rewrite history: the value stored first for a sensor at an instant stays; a re-send that
disagrees is kept as a ``conflict`` dead letter and counted per tenant; an identical re-send leaves no trace; a
NULL (a sensor the first message did not send) is filled by a later message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import make_settings, unique
from tests.ingest._support import connect_db, publish, stored_rows
from wearline.db import migrate
from wearline.settings import Settings


def _msg(ts: int, values: dict[str, float | None]) -> bytes:
    return orjson.dumps({"v": 1, "samples": [{"ts": ts, "values": values}]})


def _handled(registry: CollectorRegistry) -> int:
    return int(
        sum(
            registry.get_sample_value("wearline_ingest_messages_total", {"outcome": o}) or 0
            for o in ("written", "dead_letter")
        )
    )


@asynccontextmanager
async def _ingest(
    settings: Settings,
) -> AsyncIterator[tuple[CollectorRegistry, Callable[[list[tuple[str, bytes]]], Awaitable[None]]]]:
    """Ingest in this process; yields its registry and ``send(messages)``, which returns once all are handled."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    sent = 0

    async def send(messages: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        await asyncio.to_thread(publish, settings.mqtt.host, settings.mqtt.port, messages)
        sent += len(messages)
        deadline = time.monotonic() + 30
        while _handled(registry) < sent:
            assert time.monotonic() < deadline, f"handled {_handled(registry)} of {sent}"
            await asyncio.sleep(0.05)

    async with asyncio.timeout(90), asyncio.TaskGroup() as tg:
        run = tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        await subscribed.wait()
        try:
            yield registry, send
        finally:
            stop.set()
    assert run.done()


def _dead(schema: str) -> list[tuple[str, str, bytes]]:
    with connect_db(schema) as conn:
        rows = conn.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY dead_letter_id").fetchall()
    return [(str(r), str(d), bytes(p)) for r, d, p in rows]  # type: ignore[call-overload]


async def test_a_conflicting_resend_keeps_the_first_value_and_one_conflict_dead_letter(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    await migrate(settings.database)
    topic = f"{settings.topic_prefix}/acme/site1/line1/pump-1/telemetry"
    t0 = int(time.time() * 1000) - 60_000
    first = _msg(t0, {"a": 1.5, "b": 2.5})
    conflicting = _msg(t0, {"a": 9.0, "b": 2.5, "c": 3.5})  # a disagrees; c is new at this instant: filled

    async with _ingest(settings) as (registry, send):
        await send([(topic, first)])
        assert stored_rows(schema) == {("pump-1", t0): [1.5, 2.5]}
        await send([(topic, first)])  # identical: silent
        after_identical = _dead(schema)
        readings_before = registry.get_sample_value("wearline_ingest_readings_total")
        await send([(topic, conflicting)])
        # b (the same) and c (new) are committed; a, which disagrees, is not.
        readings_added = (registry.get_sample_value("wearline_ingest_readings_total") or 0) - (readings_before or 0)
        after_conflict = _dead(schema)
        rows = stored_rows(schema)
        conflicts = registry.get_sample_value("wearline_ingest_conflicts_total", {"tenant": "acme"})
        by_reason = registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": "conflict"})
    print(f"published 3, rows {rows}, dead letters {len(after_conflict)}, conflicts metric {conflicts}")
    assert after_identical == []
    assert rows == {("pump-1", t0): [1.5, 2.5, 3.5]}
    assert len(after_conflict) == 1
    reason, detail, payload = after_conflict[0]
    assert (reason, payload) == ("conflict", conflicting)
    assert "a at" in detail, detail
    assert "kept 1.5 sent 9.0" in detail, detail
    assert "b at" not in detail, detail
    assert conflicts == 1
    assert by_reason == 1
    assert readings_added == 2


async def test_within_one_batch_the_first_message_wins_and_a_null_is_filled(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    # A long batch delay puts the messages of one publish into one batch.
    settings = make_settings(
        schema, unique("wlt/"), "native", mqtt={"host": host, "port": port}, ingest={"batch_max_delay_ms": 1000}
    )
    await migrate(settings.database)
    topic = f"{settings.topic_prefix}/acme/site1/line1/pump-2/telemetry"
    t0 = int(time.time() * 1000) - 60_000
    messages = [
        (topic, _msg(t0, {"a": 1.0, "b": None})),  # b: no value yet
        (topic, _msg(t0, {"a": 1.0, "b": 4.0})),  # same a, fills b: not a conflict
        (topic, _msg(t0, {"a": 7.0})),  # disagrees with the first a
        (topic, _msg(t0, {"b": 4.0})),  # agrees
        (topic, _msg(t0 + 1000, {"a": 5.0, "b": 6.0})),  # another instant
    ]
    async with _ingest(settings) as (registry, send):
        await send(messages)
        readings = registry.get_sample_value("wearline_ingest_readings_total")
        # And once stored, a later message that disagrees with the filled value is a conflict too.
        await send([(topic, _msg(t0, {"b": 8.0}))])
        readings_added = (registry.get_sample_value("wearline_ingest_readings_total") or 0) - (readings or 0)
    rows = stored_rows(schema)
    dead = _dead(schema)
    print(f"published 6, rows {rows}, dead letters {[(r, d) for r, d, _ in dead]}")
    assert rows == {("pump-2", t0): [1.0, 4.0], ("pump-2", t0 + 1000): [5.0, 6.0]}
    assert [(r, p) for r, _, p in dead] == [("conflict", messages[2][1]), ("conflict", _msg(t0, {"b": 8.0}))]
    assert "kept 1.0 sent 7.0" in dead[0][1]
    assert "kept 4.0 sent 8.0" in dead[1][1]
    assert readings_added == 0  # the disagreeing value is not a committed reading
