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
    plan_live,
    publish_fleet,
)
from tests.conftest import TEST_DSN, make_settings, unique
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


async def _receive_all(settings: Settings, ready: asyncio.Event, out: list[tuple[int, int]], expect: int) -> None:
    """Each received sample as (its timestamp, the receiving wall clock), both ms; refuses none on the way."""
    m = settings.mqtt
    async with aiomqtt.Client(m.host, m.port, identifier=f"{m.client_id}-sub") as client:
        await client.subscribe(telemetry_filter(settings.topic_prefix), qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            now_ms = int(time.time() * 1000)
            decoded = decode_message(
                message.payload, now_ms=now_ms, max_bytes=1 << 20, max_future_ms=10**9, max_past_ms=10**9
            )
            out.extend((s.ts_ms, now_ms) for s in decoded.samples)
            if len(out) >= expect:
                return


async def test_an_accelerated_run_never_stamps_a_sample_ahead_of_the_wall_clock() -> None:
    # Issue 10, item 2: at x60 the README's run stamped samples hours ahead; ingest kept 94 % as ts_future.
    settings = make_settings(unique("wlt_"), unique("wlt/"))
    steps, scale = 200, 1000.0
    scenario = Scenario(
        groups=(MachineGroup("centrifugal_pump", 4),),
        gateways=GatewaySpec(machines_per_gateway=2, batch_samples=5, clock_skew_ms=250),
    )
    received: list[tuple[int, int]] = []
    ready = asyncio.Event()
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        listener = tg.create_task(_receive_all(settings, ready, received, 4 * steps))
        await ready.wait()
        began = time.time()
        summary = await publish_fleet(
            settings.mqtt, settings.topic_prefix, scenario, asyncio.Event(), steps=steps, time_scale=scale, seed=2
        )
        wall = time.time() - began
        await listener
    ahead = [ts - now for ts, now in received if ts > now]
    print(
        f"{len(received)} samples over {summary.steps} steps in {wall:.2f} s; "
        f"{len(ahead)} stamped ahead of the wall clock (most {max(ahead, default=0)} ms)"
    )
    assert len(received) == 4 * steps
    assert ahead == []
    # The stretch ends at now: the newest sample is a fresh one, not hours old, and the run kept its pace.
    assert max(ts for ts, _ in received) >= int(time.time() * 1000) - 3_000
    assert wall < steps / scale + 5


async def test_an_open_ended_run_slows_to_real_time_once_it_reaches_now() -> None:
    settings = make_settings(unique("wlt_"), unique("wlt/"))
    stop = asyncio.Event()
    history_s, run_s = 30.0, 2.5
    start_ms = plan_live(Scenario(), time_scale=1000, history_s=history_s).start_ms
    loop = asyncio.get_running_loop()
    loop.call_later(run_s, stop.set)
    summary = await publish_fleet(
        settings.mqtt,
        settings.topic_prefix,
        Scenario(groups=(MachineGroup("electric_motor", 2),)),
        stop,
        time_scale=1000,
        start_ms=start_ms,
        seed=4,
    )
    print(f"{summary.steps} steps in {run_s} s after a {history_s:.0f} s stretch at x1000")
    # 31 steps of history in 30 ms, then one per wall second: x1000 throughout would have made about 2,500.
    assert history_s + 1 <= summary.steps <= history_s + run_s + 2
    assert summary.last_ts_ms <= int(time.time() * 1000)
