"""The analytics worker on the real database: leases split machines, watermarks make every row scored once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from analytics import AnalyticsSummary, AnomalyModel, RulModel, read_table, run_analytics, save_model
from analytics._registry import read_model_file, register_model
from wearline.db import connect, maintain_storage, storage_mode
from wearline.settings import Settings

MACHINES = 6
SENSORS = ["vibration_rms", "bearing_temp", "flow"]
FAULTY = 2  # index of the machine whose vibration jumps in the second batch
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


async def _setup(conn: psycopg.AsyncConnection[Any], settings: Settings) -> list[int]:
    mode = await storage_mode(conn, settings.database.schema_name)
    assert mode is not None
    await maintain_storage(conn, mode, days_ahead=1, retention_days=0)
    cur = await conn.execute("INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id")
    tenant = (await cur.fetchone() or [0])[0]
    cur = await conn.execute("INSERT INTO sites (tenant_id, name) VALUES (%s, 'p1') RETURNING site_id", [tenant])
    site = (await cur.fetchone() or [0])[0]
    cur = await conn.execute("INSERT INTO lines (site_id, name) VALUES (%s, 'l1') RETURNING line_id", [site])
    line = (await cur.fetchone() or [0])[0]
    ids = []
    for i in range(MACHINES):
        cur = await conn.execute(
            "INSERT INTO machines (tenant_id, line_id, name) VALUES (%s, %s, %s) RETURNING machine_id",
            [tenant, line, f"pump-{i}"],
        )
        mid = (await cur.fetchone() or [0])[0]
        ids.append(mid)
        for p, name in enumerate(SENSORS, start=1):
            await conn.execute("INSERT INTO sensors (machine_id, position, name) VALUES (%s, %s, %s)", [mid, p, name])
    return ids


async def _readings(conn: psycopg.AsyncConnection[Any], ids: list[int], first: int, count: int) -> None:
    rng = np.random.default_rng(first)
    async with conn.cursor() as cur, cur.copy("COPY readings (machine_id, time, vals) FROM STDIN") as copy:
        for i, mid in enumerate(ids):
            for k in range(first, first + count):
                load = 0.75 + 0.1 * np.sin(k / 500.0 + i)
                vib = 1.2 + 0.8 * load + 0.05 * rng.normal()
                if i == FAULTY and k >= 500:
                    vib += 5.0
                vals = [vib, 40 + 15 * load + 0.2 * rng.normal(), 100 * load + 0.5 * rng.normal()]
                await copy.write_row([mid, START + timedelta(seconds=k), vals])
    await conn.commit()


async def _wait(conn: psycopg.AsyncConnection[Any], query: str, args: list[Any], want: Any, what: str) -> None:
    got: Any = None
    try:
        async with asyncio.timeout(60):
            while True:
                cur = await conn.execute(query, args)
                got = await cur.fetchone()
                await conn.commit()
                if got is not None and got[0] == want:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"waiting for {what}: wanted {want!r}, last saw {got!r}")


async def test_two_workers_split_machines_and_one_takes_over(migrated: Settings) -> None:
    settings = migrated
    conn = await connect(settings.database)
    async with conn:
        ids = await _setup(conn, settings)
        await conn.commit()
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        task_a = asyncio.create_task(run_analytics(settings, stop_a, registry=CollectorRegistry(), worker="A"))
        task_b = asyncio.create_task(run_analytics(settings, stop_b, registry=CollectorRegistry(), worker="B"))
        try:
            # Both workers hold half of the machines before any reading exists.
            await _wait(
                conn,
                "SELECT count(DISTINCT worker) FILTER (WHERE n = %s) FROM "
                "(SELECT worker, count(*) AS n FROM analytics_leases GROUP BY worker) w",
                [MACHINES // 2],
                2,
                "lease split",
            )
            cur = await conn.execute(
                "SELECT worker, array_agg(machine_id ORDER BY machine_id) FROM analytics_leases GROUP BY worker"
            )
            split = {w: set(m) for w, m in await cur.fetchall()}
            await conn.commit()
            await _readings(conn, ids, 0, 400)
            last1 = START + timedelta(seconds=399)
            await _wait(
                conn, "SELECT count(*) FROM analytics_watermarks WHERE last_time = %s", [last1], MACHINES, "batch 1"
            )
            stop_a.set()
            summary_a: AnalyticsSummary = await task_a
            await _readings(conn, ids, 400, 200)
            last2 = START + timedelta(seconds=599)
            await _wait(
                conn, "SELECT count(*) FROM analytics_watermarks WHERE last_time = %s", [last2], MACHINES, "batch 2"
            )
            cur = await conn.execute("SELECT count(*) FROM analytics_leases WHERE worker = 'B'")
            assert (await cur.fetchone() or [0])[0] == MACHINES, "B must take over every machine once A stopped"
        finally:
            stop_a.set()
            stop_b.set()
            summary_b: AnalyticsSummary = await task_b
            await task_a
        cur = await conn.execute(
            "SELECT m.name, count(*) FROM anomalies a JOIN machines m USING (machine_id) GROUP BY m.name"
        )
        anomalies = dict(await cur.fetchall())
        cur = await conn.execute("SELECT count(*) FROM analytics_leases")
        leases_left = (await cur.fetchone() or [0])[0]
    assert split["A"].isdisjoint(split["B"])
    assert split["A"] | split["B"] == set(ids)
    # Batch 1: each machine scored by the worker that held it, and by no other.
    assert summary_a.machines == split["A"]
    assert set(ids) == summary_b.machines
    # Every row scored exactly once across both workers (the first 60 rows of a machine only seed its detector).
    assert summary_a.rows_scored + summary_b.rows_scored == MACHINES * 600
    assert set(anomalies) == {f"pump-{FAULTY}"}
    assert leases_left == 0, "an orderly stop hands the machines back"


async def test_worker_scores_with_registered_models_and_writes_rul(migrated: Settings, tmp_path: Path) -> None:
    settings = migrated
    rng = np.random.default_rng(3)
    normal = ["vibration_rms,bearing_temp,flow"]
    for k in range(600):
        load = 0.75 + 0.1 * np.sin(k % 100 / 500.0 + k // 100)  # every machine's phase, as in _readings
        normal.append(f"{1.2 + 0.8 * load + 0.05 * rng.normal()},{40 + 15 * load + 0.2 * rng.normal()},{100 * load}")
    (tmp_path / "normal.csv").write_text("\n".join(normal) + "\n")
    runs = ["unit,time,vibration_rms,bearing_temp,flow"]
    for u in range(6):
        life = 200 + 40 * u
        for h in range(life + 1):
            wear = np.exp((h - life) / (life / 4))
            runs.append(f"u{u},{h},{1.8 + 3 * wear + 0.05 * rng.normal()},{51 + 20 * wear},{75}")
    (tmp_path / "runs.csv").write_text("\n".join(runs) + "\n")
    # The same models `wearline anomaly fit` and `wearline rul fit` write (the CLI itself is tested elsewhere;
    # here it would reconfigure logging for the whole test process).
    anomaly = AnomalyModel.fit(read_table(tmp_path / "normal.csv"))
    save_model(anomaly, tmp_path / "a.model", "anomaly", {})
    rul = RulModel.fit(read_table(tmp_path / "runs.csv"), unit="unit", time="time", model="trend")
    save_model(rul, tmp_path / "r.model", "rul", {})
    conn = await connect(settings.database)
    async with conn:
        ids = await _setup(conn, settings)
        await conn.execute("INSERT INTO machine_types (name) VALUES ('pump')")
        await conn.execute("UPDATE machines SET type_id = (SELECT type_id FROM machine_types WHERE name = 'pump')")
        versions = []
        for f in ("a.model", "r.model"):
            blob, meta = read_model_file(tmp_path / f)
            versions.append(await register_model(conn, blob, meta, "pump"))
        await conn.commit()
        await _readings(conn, ids, 0, 600)
        stop = asyncio.Event()
        task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
        try:
            await _wait(
                conn,
                "SELECT count(DISTINCT machine_id) FROM rul_estimates",
                [],
                MACHINES,
                "RUL estimates",
            )
        finally:
            stop.set()
            summary = await task
        cur = await conn.execute("SELECT DISTINCT model_version FROM rul_estimates")
        rul_versions = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT m.name, a.detector, a.sensors FROM anomalies a JOIN machines m USING (machine_id) "
            "WHERE a.detector LIKE 'mahalanobis:%'"
        )
        multivariate = await cur.fetchall()
        cur = await conn.execute(
            "SELECT bool_and(lower_hours <= rul_hours AND rul_hours <= upper_hours) FROM rul_estimates"
        )
        ordered = (await cur.fetchone() or [False])[0]
    assert summary.rul_estimates >= MACHINES
    assert rul_versions == [versions[1]]
    assert ordered
    assert {m for m, _, _ in multivariate} == {f"pump-{FAULTY}"}
    assert all(s[0] == "vibration_rms" for _, _, s in multivariate)


async def test_a_crashed_workers_machines_are_taken_over_when_its_leases_expire(migrated: Settings) -> None:
    settings = migrated
    conn = await connect(settings.database)
    async with conn:
        ids = await _setup(conn, settings)
        await conn.commit()
        stop_b = asyncio.Event()
        task_a = asyncio.create_task(run_analytics(settings, asyncio.Event(), registry=CollectorRegistry(), worker="A"))
        task_b = asyncio.create_task(run_analytics(settings, stop_b, registry=CollectorRegistry(), worker="B"))
        try:
            await _wait(conn, "SELECT count(*) FROM analytics_leases WHERE worker = 'A'", [], MACHINES // 2, "A's half")
            await _wait(conn, "SELECT count(*) FROM analytics_leases WHERE worker = 'B'", [], MACHINES // 2, "B's half")
            task_a.cancel()  # no orderly stop: A's leases stay until they expire
            with contextlib.suppress(asyncio.CancelledError):
                await task_a
            cur = await conn.execute("SELECT count(*) FROM analytics_leases WHERE worker = 'A'")
            assert (await cur.fetchone() or [0])[0] == MACHINES // 2
            await conn.commit()
            await _wait(conn, "SELECT count(*) FROM analytics_leases WHERE worker = 'B'", [], MACHINES, "takeover")
            await _readings(conn, ids, 0, 100)
            last = START + timedelta(seconds=99)
            await _wait(conn, "SELECT count(*) FROM analytics_watermarks WHERE last_time = %s", [last], MACHINES, "all")
        finally:
            stop_b.set()
            summary_b = await task_b
    assert summary_b.machines == set(ids)
    assert summary_b.rows_scored == MACHINES * 100
