"""Live mode against the real broker and database: what is published arrives, and the truth is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
from pathlib import Path

import aiomqtt
import psycopg
from psycopg import sql

from simulators import (
    TRUTH_CSV_COLUMNS,
    FaultSpec,
    GatewaySpec,
    MachineGroup,
    Scenario,
    open_truth,
    publish_fleet,
)
from tests.conftest import TEST_DSN
from wearline.settings import Settings
from wearline.topics import parse_telemetry_topic, telemetry_filter
from wearline.wire import decode_message

STEPS = 20


async def test_live_publish_is_received_and_truth_recorded(migrated: Settings, tmp_path: Path) -> None:
    settings = migrated
    scenario = Scenario(
        groups=(MachineGroup("centrifugal_pump", 2), MachineGroup("electric_motor", 2, line="line2")),
        faults=(FaultSpec("motor-001", "dropout", 5, 4, sensor="current"),),
        gateways=GatewaySpec(machines_per_gateway=2, batch_samples=4, duplicate_prob=0.0),
    )
    received: dict[str, list[int]] = {}
    nulls = 0
    ready = asyncio.Event()

    async def listen() -> None:
        nonlocal nulls
        m = settings.mqtt
        async with aiomqtt.Client(m.host, m.port, identifier=f"{m.client_id}-sub") as client:
            await client.subscribe(telemetry_filter(settings.topic_prefix), qos=1)
            ready.set()
            async for message in client.messages:
                path = parse_telemetry_topic(settings.topic_prefix, str(message.topic))
                assert isinstance(message.payload, bytes)
                decoded = decode_message(
                    message.payload,
                    now_ms=int(time.time() * 1000),
                    max_bytes=1 << 20,
                    max_future_ms=60_000,
                    max_past_ms=3_600_000,
                )
                assert len(decoded.samples) == 4
                received.setdefault(path.machine, []).extend(s.ts_ms for s in decoded.samples)
                nulls += sum(v is None for s in decoded.samples for v in s.values.values())
                if sum(map(len, received.values())) == 4 * STEPS:
                    return

    start_ms = int(time.time() * 1000) - 60_000
    truth_csv = tmp_path / "truth.csv"
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        listener = tg.create_task(listen())
        await ready.wait()
        async with open_truth(
            scenario, seed=1, start_ms=start_ms, database=settings.database, csv_path=truth_csv
        ) as sink:
            summary = await publish_fleet(
                settings.mqtt,
                settings.topic_prefix,
                scenario,
                asyncio.Event(),
                steps=STEPS,
                time_scale=1000.0,
                start_ms=start_ms,
                seed=1,
                truth=sink,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(listener), 10)
    assert summary.messages == 4 * STEPS // 4
    assert sorted(received) == ["motor-000", "motor-001", "pump-000", "pump-001"]
    for ts in received.values():
        assert ts == [start_ms + 1000 * k for k in range(STEPS)]
    assert nulls == 4  # the dropout: four samples without a current reading

    with truth_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == TRUTH_CSV_COLUMNS
    assert len(rows) == 4 * STEPS
    dropped = [r for r in rows if r["fault_type"] == "dropout"]
    assert {r["machine"] for r in dropped} == {"acme/plant1/line2/motor-001"}
    assert len(dropped) == 4
    assert {r["fault_sensor"] for r in dropped} == {"current"}

    with psycopg.connect(TEST_DSN) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(settings.database.schema_name)))
        count = conn.execute("SELECT count(*), count(DISTINCT machine) FROM sim_truth").fetchone()
        faults = conn.execute("SELECT count(*) FROM sim_truth WHERE fault_type = 'dropout'").fetchone()
        events = conn.execute("SELECT kind, detail FROM sim_events ORDER BY time, kind").fetchall()
        run = conn.execute("SELECT seed, sample_period_s FROM sim_runs").fetchall()
    assert count == (4 * STEPS, 4)
    assert faults == (4,)
    assert events == [("fault_onset", "dropout:current"), ("fault_end", "dropout")]
    assert run == [(1, 1.0)]
