"""Bad input never crashes ingest and is never silently dropped: each refusal is counted and kept with its reason."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import make_settings, unique
from tests.ingest._support import connect_db, publish, stored_rows
from wearline.db import migrate
from wearline.settings import Settings


def _msg(ts: object, values: object = None, **extra: object) -> bytes:
    return orjson.dumps({"v": 1, "ts": ts, "values": values if values is not None else {"a": 1.5}, **extra})


def _cases(prefix: str, now: int) -> list[tuple[str, bytes, str]]:
    good = f"{prefix}/acme/site1/line1/known/telemetry"
    return [
        (good, b"\xff\xfe this is not json", "not_json"),
        (good, b'{"v": 1, "samples": [{"ts": %d}]}' % now, "bad_schema"),
        (good, b"[1, 2, 3]", "bad_schema"),
        (good, _msg(now, {"a": "high"}), "bad_schema"),
        (good, _msg(now, {"a\x00b": 1.0}), "bad_schema"),
        (good, orjson.dumps({"v": 2, "ts": now, "values": {"a": 1}}), "unsupported_version"),
        (good, b'{"v": 1, "ts": %d, "values": {"a": 1e400}}' % now, "non_finite"),
        (good, _msg(now + 86_400_000), "ts_future"),
        (good, _msg(86_400_000), "ts_past"),
        (good, _msg(now, {f"s{i}": float(i) for i in range(300)}), "too_many_sensors"),
        (good, _msg(now, pad="x" * 10_000), "oversized"),
        (f"{prefix}/acme/site1/line1/bad$name/telemetry", _msg(now), "bad_topic"),
        (f"{prefix}/acme/site1/line1/stranger/telemetry", _msg(now), "unknown_machine"),
        (good, _msg(now, {"a": 1.0, "unregistered": 2.0}), "unknown_machine"),
    ]


async def _run(
    settings: Settings, messages: list[tuple[str, bytes]], expect_dead: int, expect_rows: int
) -> tuple[CollectorRegistry, ingest.IngestSummary]:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    schema = settings.database.schema_name

    def counts() -> tuple[int, int]:
        with connect_db(schema) as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM readings)").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])  # type: ignore[call-overload]

    async def drive() -> None:
        try:
            await subscribed.wait()
            await asyncio.to_thread(publish, settings.mqtt.host, settings.mqtt.port, messages)
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(counts) != (expect_dead, expect_rows) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.1)
        finally:
            stop.set()

    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        run = tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        tg.create_task(drive())
    return registry, run.result()


@pytest.mark.parametrize("auto_register", [False, True])
async def test_every_refusal_is_counted_and_kept_with_its_reason(
    schema: str, shipped_broker: tuple[str, int], auto_register: bool
) -> None:
    host, port = shipped_broker
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        mqtt={"host": host, "port": port},
        # Dead letters keep whole payloads here (the cap is tests/ingest/test_floods.py's subject).
        ingest={"max_payload_bytes": 8192, "auto_register": auto_register, "dead_letter_max_payload_bytes": 16384},
    )
    await migrate(settings.database)
    with connect_db(schema) as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site1' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name) SELECT tenant_id, line_id, 'known' FROM t, l
                          RETURNING machine_id)
               INSERT INTO sensors (machine_id, position, name) SELECT machine_id, 1, 'a' FROM m"""
        )
    now = int(time.time() * 1000)
    cases = _cases(settings.topic_prefix, now)
    if auto_register:  # then the unknown machine and the new sensor are registered and stored, not refused
        stored = [c for c in cases if c[2] == "unknown_machine"]
        cases = [c for c in cases if c[2] != "unknown_machine"]
    else:
        stored = []
    good = [(f"{settings.topic_prefix}/acme/site1/line1/known/telemetry", _msg(now - 1000 * i)) for i in range(1, 4)]
    messages = [(t, p) for t, p, _ in cases] + [(t, p) for t, p, _ in stored] + good
    expect_rows = len(good) + len(stored)

    registry, summary = await _run(settings, messages, len(cases), expect_rows)

    assert summary.dead_letters == len(cases)
    values = len(good) + (3 if auto_register else 0)
    assert registry.get_sample_value("wearline_ingest_messages_received_total") == len(messages)
    assert registry.get_sample_value("wearline_ingest_readings_received_total") == values
    assert registry.get_sample_value("wearline_ingest_readings_total") == values
    assert registry.get_sample_value("wearline_ingest_messages_total", {"outcome": "dead_letter"}) == len(cases)
    for reason in {r for _, _, r in cases}:
        n = sum(r == reason for _, _, r in cases)
        assert registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": reason}) == n, reason
    with connect_db(schema) as conn:
        kept = conn.execute(
            "SELECT topic, payload, reason, received_at > now() - interval '1 minute' FROM dead_letters"
        ).fetchall()
    assert sorted(kept) == sorted((t, p, r, True) for t, p, r in cases)
    rows = stored_rows(schema)
    assert len(rows) == expect_rows
    assert rows[("known", now - 1000)][0] == 1.5
