"""The analytics worker on the real database: leases split machines, watermarks make every row scored once, RUL
models read the hourly rollup (``readings_hourly``) over each machine's history."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

import analytics._store
from analytics import (
    DETECTORS,
    AnalyticsSummary,
    AnomalyModel,
    RulEstimator,
    RulModel,
    RulPrediction,
    RunHistory,
    read_table,
    run_analytics,
    save_model,
)
from analytics import _worker as worker_module
from analytics._registry import ModelCache, read_model_file, register_model
from analytics._worker import MACHINE_REFRESH_S, _Scorer
from wearline.db import connect, ensure_partitions, maintain_storage, storage_mode
from wearline.db.migrations.v0006_readings_hourly import POSITIONS
from wearline.settings import Settings

MACHINES = 6
SENSORS = ["vibration_rms", "bearing_temp", "flow"]
FAULTY = 2  # index of the machine whose vibration jumps in the second batch
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
Row = tuple[int, datetime, list[float | None]]
Hourly = dict[tuple[int, datetime], tuple[int, list[float | None]]]


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


def _wear(hour: float, life: float) -> float:
    return float(np.exp((hour - life) / (life / 4)))


def _rul_model(tmp_path: Path, rng: np.random.Generator) -> RulModel:
    """An RUL model fitted on hourly run-to-failure rows, as the offline simulator writes them; saved to r.model."""
    runs = ["unit,time," + ",".join(SENSORS)]
    for u in range(6):
        life = 200 + 40 * u
        for h in range(life + 1):
            wear = _wear(h, life)
            runs.append(f"u{u},{h},{1.8 + 3 * wear + 0.05 * rng.normal()},{51 + 20 * wear},{75}")
    (tmp_path / "runs.csv").write_text("\n".join(runs) + "\n")
    rul = RulModel.fit(read_table(tmp_path / "runs.csv"), unit="unit", time="time")
    save_model(rul, tmp_path / "r.model", "rul", {})
    return rul


@pytest.fixture
def probe_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe below is this module's class: model loading trusts only Wearline's, scikit-learn's, numpy's and
    scipy's types, so tests that register it add their own module to the trusted ones."""
    monkeypatch.setattr("analytics._store._TRUSTED_MODULES", (*analytics._store._TRUSTED_MODULES, "tests."))


class _Probe(RulEstimator):
    """An RUL model that keeps every history it is asked about: what the worker hands models, exactly, whatever
    the real models make of it. Its RUL is the history's row count, so the written estimate shows it was used."""

    seen: ClassVar[list[RunHistory]] = []

    def fit(self, runs: Sequence[RunHistory], feature_names: Sequence[str]) -> _Probe:
        self.feature_names = list(feature_names)
        return self

    def predict(self, runs: Sequence[RunHistory]) -> list[RulPrediction]:
        self.seen.extend(runs)
        return [RulPrediction(r.unit, float(r.time[-1]), float(len(r.time)), 0.0, 1e6) for r in runs]


async def _type_with_models(conn: psycopg.AsyncConnection[Any], tmp_path: Path, files: Sequence[str]) -> list[str]:
    """Every machine becomes a 'pump'; the model files are registered for that type. Returns their versions."""
    await conn.execute("INSERT INTO machine_types (name) VALUES ('pump')")
    await conn.execute("UPDATE machines SET type_id = (SELECT type_id FROM machine_types WHERE name = 'pump')")
    versions = []
    for f in files:
        blob, meta = read_model_file(tmp_path / f)
        versions.append(await register_model(conn, blob, meta, "pump"))
    await conn.commit()
    return versions


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


def _level(i: int) -> float:
    """Machine ``i``'s own vibration level: machines differ a little."""
    return 0.05 * (i % 4)


def _hourly_normal(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Hourly normal operation of eight machines with levels of their own: the shape `wearline anomaly fit` is
    given (a unit column, one row per hour)."""
    lines = ["unit,vibration_rms,bearing_temp,flow"]
    for u in range(8):
        for h in range(120):
            load = 0.75 + 0.1 * np.sin(h / 7.0 + u)
            vib = 1.2 + _level(u + 1) + 0.8 * load + 0.02 * rng.normal()
            lines.append(f"u{u},{vib},{40 + 15 * load + 0.1 * rng.normal()},{100 * load + 0.2 * rng.normal()}")
    path = tmp_path / "normal.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _hours_of_readings(conn: psycopg.AsyncConnection[Any], ids: list[int], start: datetime, hours: range) -> None:
    """A reading every 10 minutes; machine FAULTY's vibration rises by 0.6 mm/s from hour FAULT_HOUR on."""
    rng = np.random.default_rng(hours.start)
    async with conn.cursor() as cur, cur.copy("COPY readings (machine_id, time, vals) FROM STDIN") as copy:
        for i, mid in enumerate(ids):
            for h in hours:
                load = 0.75 + 0.1 * np.sin(h / 7.0 + i)
                for k in range(6):
                    vib = (
                        1.2
                        + _level(i)
                        + 0.8 * load
                        + 0.05 * rng.normal()
                        + (0.6 if i == FAULTY and h >= FAULT_HOUR else 0)
                    )
                    vals = [vib, 40 + 15 * load + 0.2 * rng.normal(), 100 * load + 0.5 * rng.normal()]
                    await copy.write_row([mid, start + timedelta(hours=h, minutes=10 * k), vals])
    await conn.commit()


FAULT_HOUR = 20


async def test_worker_scores_complete_hours_with_registered_models_and_writes_rul(
    migrated: Settings, tmp_path: Path, storage: str
) -> None:
    settings = migrated
    rng = np.random.default_rng(3)
    # Fit as `wearline anomaly fit --unit unit` does: the detector also sees each sensor's hourly change.
    anomaly = AnomalyModel.fit(read_table(_hourly_normal(tmp_path, rng)), unit="unit", persistence=2)
    save_model(anomaly, tmp_path / "a.model", "anomaly", {})
    _rul_model(tmp_path, rng)
    start = _hour(datetime.now(UTC)) - timedelta(hours=70)
    conn = await connect(settings.database)
    async with conn:
        await _days_back_to(conn, settings, start)
        ids = await _setup(conn, settings)
        versions = await _type_with_models(conn, tmp_path, ["a.model", "r.model"])
        cur = await conn.execute(
            "INSERT INTO machines (tenant_id, line_id, name) SELECT tenant_id, line_id, 'other' FROM machines "
            "WHERE machine_id = %s RETURNING machine_id",
            [ids[0]],
        )
        other = (await cur.fetchone() or [0])[0]
        await conn.commit()
        stop = asyncio.Event()
        registry = CollectorRegistry()
        task = asyncio.create_task(run_analytics(settings, stop, registry=registry, worker="solo"))
        try:
            # Two batches: the second pass continues from the hourly watermark the first one left.
            for hours in (range(30), range(30, 60)):
                if storage == "timescaledb":
                    # Another machine's recent hour, materialized as the refresh policy does: each batch then
                    # arrives behind the rollup's watermark, as a backlog from a gateway that was offline does, and
                    # shows in the rollup only after the policy's next run. Hours are scored once, so they must be
                    # computed from the readings.
                    await _copy(conn, [(other, datetime.now(UTC) - timedelta(hours=1, minutes=30), [1.0])])
                    await _refresh(settings, datetime.now(UTC) - timedelta(hours=1))
                await _hours_of_readings(conn, ids, start, hours)
                last_complete = start + timedelta(hours=hours.stop - 2)  # the last hour has no reading after it
                await _wait(
                    conn,
                    "SELECT count(*) FROM analytics_watermarks WHERE detector = 'hourly' AND last_time = %s",
                    [last_complete],
                    MACHINES,
                    f"hours up to {hours.stop - 2}",
                )
            await _wait(conn, "SELECT count(DISTINCT machine_id) FROM rul_estimates", [], MACHINES, "RUL estimates")
        finally:
            stop.set()
            summary = await task
        cur = await conn.execute("SELECT DISTINCT model_version FROM rul_estimates")
        rul_versions = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT m.name, a.time, a.sensors FROM anomalies a JOIN machines m USING (machine_id) "
            "WHERE a.detector = %s",
            [f"knn:{versions[0]}"],
        )
        multivariate = await cur.fetchall()
        cur = await conn.execute(
            "SELECT bool_and(lower_hours <= rul_hours AND rul_hours <= upper_hours) FROM rul_estimates"
        )
        ordered = (await cur.fetchone() or [False])[0]
        cur = await conn.execute("SELECT split_part(detector, ':', 1), count(*) FROM anomalies GROUP BY 1")
        stored = dict(await cur.fetchall())
    # The metric names the detector that found each anomaly (the model's kind, not its version), and every kind reads
    # 0 before its first: a rate() over it is never empty.
    counted = {
        detector: registry.get_sample_value("wearline_analytics_anomalies_total", {"detector": detector})
        for detector in ("ewma_mad", *DETECTORS)
    }
    assert counted == {detector: float(stored.get(detector, 0)) for detector in counted}, (counted, stored)
    assert counted["knn"] == 2
    assert summary.rul_estimates >= MACHINES
    assert rul_versions == [versions[1]]
    assert ordered
    assert {m for m, _, _ in multivariate} == {f"pump-{FAULTY}"}, multivariate
    # One anomaly row per pass: in the first batch from the fault on, in the second at its first hour (an hour
    # the first pass scored is context only, never scored again).
    times = sorted(t for _, t, _ in multivariate)
    assert len(times) == 2, times
    assert start + timedelta(hours=FAULT_HOUR) <= times[0] < start + timedelta(hours=29)
    assert times[1] == start + timedelta(hours=29), "the second pass starts at the first hour it had not scored"
    assert all(s[0] == "vibration_rms" for _, _, s in multivariate)


def _load(unit: int, hour: int) -> float:
    """Two operating regimes in blocks of five hours, at an offset of the unit's own."""
    return 0.4 if (hour + 3 * unit) // 5 % 2 == 0 else 0.9


def _regime_rows(
    unit: int, hour: int, noise: float, rng: np.random.Generator, faulty: bool = False
) -> list[float | None]:
    """One row of a machine whose every sensor moves with its load regime: vibration by 1.0 mm/s between the two,
    more than the 0.6 mm/s of the fault (on ``faulty`` machines), which is only abnormal within a regime."""
    load = _load(unit, hour)
    vib = 1.2 + _level(unit) + 2.0 * load + noise * rng.normal() + (0.6 if faulty else 0.0)
    return [vib, 40 + 15 * load + 5 * noise * rng.normal(), 100 * load + 10 * noise * rng.normal(), load]


async def test_registered_models_read_their_condition_columns_from_the_readings(
    migrated: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, storage: str, probe_trusted: None
) -> None:
    """A model fit with ``--condition load`` gets the machine's hourly ``load`` as its condition: the anomaly
    model normalises per regime (a change of regime is no anomaly, a shift within one is), the RUL model gets the
    regime codes. A machine that does not report the condition is skipped, with one warning per model."""
    settings = migrated
    rng = np.random.default_rng(11)
    lines = ["unit,vibration_rms,bearing_temp,flow,load"]
    lines += [f"u{u}," + ",".join(map(str, _regime_rows(u, h, 0.02, rng))) for u in range(8) for h in range(120)]
    (tmp_path / "normal.csv").write_text("\n".join(lines) + "\n")
    anomaly = AnomalyModel.fit(
        read_table(tmp_path / "normal.csv"), unit="unit", condition=["load"], detector="mahalanobis", persistence=2
    )
    save_model(anomaly, tmp_path / "a.model", "anomaly", {})
    runs = ["unit,time,vibration_rms,bearing_temp,flow,load"]
    runs += [f"u{u},{h}," + ",".join(map(str, _regime_rows(u, h, 0.02, rng))) for u in range(4) for h in range(150)]
    (tmp_path / "runs.csv").write_text("\n".join(runs) + "\n")
    rul = RulModel.fit(read_table(tmp_path / "runs.csv"), unit="unit", time="time", condition=["load"])
    save_model(dataclasses.replace(rul, estimators={"all": _Probe()}), tmp_path / "r.model", "rul", {})
    _Probe.seen.clear()
    hours = 40
    start = _hour(datetime.now(UTC)) - timedelta(hours=hours + 1)
    conn = await connect(settings.database)
    async with conn:
        await _days_back_to(conn, settings, start)
        ids = await _setup(conn, settings)
        for mid in ids[1:]:  # machine 0 does not report its load
            await conn.execute("INSERT INTO sensors (machine_id, position, name) VALUES (%s, 4, 'load')", [mid])
        versions = await _type_with_models(conn, tmp_path, ["a.model", "r.model"])
        rows: list[Row] = []
        for i, mid in enumerate(ids):
            for h in range(hours):
                for k in range(6):
                    vals = _regime_rows(i, h, 0.05, rng, faulty=i == FAULTY and h >= FAULT_HOUR)
                    rows.append((mid, start + timedelta(hours=h, minutes=10 * k), vals if i else vals[:3]))
        await _copy(conn, rows)
        await _backfilled(settings, storage)
        stop = asyncio.Event()
        with caplog.at_level("WARNING", logger="analytics._worker"):
            task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
            try:
                await _wait(
                    conn,
                    "SELECT count(*) FROM analytics_watermarks WHERE detector = 'hourly' AND last_time = %s",
                    [start + timedelta(hours=hours - 2)],
                    MACHINES - 1,
                    "every machine that reports its load scored to its last complete hour",
                )
                await _wait(conn, "SELECT count(*) FROM rul_estimates", [], MACHINES - 1, "RUL estimates")
                await asyncio.sleep(1.0)  # more passes: the skipped machine must not be warned about again
            finally:
                stop.set()
                summary = await task
        cur = await conn.execute(
            "SELECT DISTINCT machine_id FROM anomalies WHERE detector = %s", [f"mahalanobis:{versions[0]}"]
        )
        flagged = {r[0] for r in await cur.fetchall()}
        cur = await conn.execute("SELECT machine_id FROM analytics_watermarks WHERE detector = 'hourly'")
        scored = {r[0] for r in await cur.fetchall()}
    assert summary.passes > 3
    assert flagged == {ids[FAULTY]}, "regime changes are not anomalies; the fault within a regime is"
    assert scored == set(ids[1:]), "a machine without the condition sensor is not scored by the model"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert sorted(skipped) == sorted(
        f"machine {ids[0]}: model {v} skipped: needs sensors the hourly rollup lacks: load" for v in versions
    )
    assert {h.unit for h in _Probe.seen} == {str(m) for m in ids[1:]}
    for got in _Probe.seen:
        unit = ids.index(int(got.unit))
        loads = np.array([[_load(unit, h)] for h in range(len(got.time))])
        want = rul.conditions.codes_of(loads)
        assert got.condition is not None
        assert want is not None
        assert len(set(want.tolist())) == 2
        np.testing.assert_array_equal(got.condition, want, err_msg=f"machine {got.unit}: regime codes per hour")


async def test_persistence_carries_across_passes_of_one_row(migrated: Settings) -> None:
    """A worker that keeps up scores a row or two a pass: ``min_flagged`` consecutive rows must still add up."""
    settings = migrated
    conn = await connect(settings.database)
    async with conn:
        ids = await _setup(conn, settings)
        await _readings(conn, ids, 0, 300)  # the detectors' baseline, no fault yet
        stop = asyncio.Event()
        task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
        try:
            for k in range(300, 312):
                # A moderate rise (above the threshold after a row or two, never three times it) on one machine,
                # one row per pass: only a run counted across passes reaches min_flagged.
                async with conn.cursor() as cur, cur.copy("COPY readings (machine_id, time, vals) FROM STDIN") as copy:
                    for i, mid in enumerate(ids):
                        load = 0.75 + 0.1 * np.sin(k / 500.0 + i)
                        vib = 1.2 + 0.8 * load + (0.5 if i == FAULTY else 0.0)
                        await copy.write_row([mid, START + timedelta(seconds=k), [vib, 40 + 15 * load, 100 * load]])
                await conn.commit()
                await _wait(
                    conn,
                    "SELECT count(*) FROM analytics_watermarks WHERE detector = 'ewma_mad' AND last_time = %s",
                    [START + timedelta(seconds=k)],
                    MACHINES,
                    f"row {k}",
                )
        finally:
            stop.set()
            await task
        cur = await conn.execute(
            "SELECT m.name, a.details FROM anomalies a JOIN machines m USING (machine_id) WHERE a.detector = 'ewma_mad'"
        )
        found = await cur.fetchall()
    assert {m for m, _ in found} == {f"pump-{FAULTY}"}, found
    assert all(d["scored_rows"] == 1 for _, d in found), "each pass scored one row"


def _no_min_history(settings: Settings) -> Settings:
    return settings.model_copy(update={"analytics": settings.analytics.model_copy(update={"rul_min_history_h": 0.0})})


async def test_one_rul_estimate_per_machine_and_hour(migrated: Settings, tmp_path: Path) -> None:
    """Passes that each score a few readings of the same hour write that hour's RUL estimate once."""
    settings = _no_min_history(migrated)  # the machines are 40 minutes old
    _rul_model(tmp_path, np.random.default_rng(5))
    start = _hour(datetime.now(UTC)) - timedelta(hours=1)
    conn = await connect(settings.database)
    async with conn:
        ids = await _setup(conn, settings)
        await _type_with_models(conn, tmp_path, ["r.model"])
        stop = asyncio.Event()
        task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
        try:
            for batch in range(4):  # four passes, all within one hour
                vals: list[float | None] = [2.0, 50.0, 75.0]
                rows = [(mid, start + timedelta(minutes=10 * batch + k), vals) for mid in ids for k in range(3)]
                await _copy(conn, rows)
                await _wait(
                    conn,
                    "SELECT count(*) FROM analytics_watermarks WHERE detector = 'ewma_mad' AND last_time = %s",
                    [start + timedelta(minutes=10 * batch + 2)],
                    MACHINES,
                    f"batch {batch}",
                )
        finally:
            stop.set()
            await task
        cur = await conn.execute("SELECT machine_id, count(*) FROM rul_estimates GROUP BY machine_id")
        per_machine = dict(await cur.fetchall())
    assert per_machine == dict.fromkeys(ids, 1)


async def test_no_rul_estimate_before_the_minimum_history(migrated: Settings, tmp_path: Path, storage: str) -> None:
    """``analytics.rul_min_history_h`` (24 h by default): a machine first seen 25 h ago gets its estimate, one first
    seen 23 h ago does not, though both report in the same hour; with the minimum at 0 both do."""
    _rul_model(tmp_path, np.random.default_rng(5))
    now = datetime.now(UTC)
    ages = [25.0, 23.0]
    results: list[list[int]] = []
    for settings in (migrated, _no_min_history(migrated)):
        async with await connect(settings.database) as conn:
            if not results:
                ids = await _setup(conn, settings)
                await _type_with_models(conn, tmp_path, ["r.model"])
                await _days_back_to(conn, settings, now - timedelta(hours=max(ages)))
                vals: list[float | None] = [2.0, 50.0, 75.0]
                rows = [(mid, now - timedelta(hours=age), vals) for mid, age in zip(ids, ages, strict=False)]
                rows += [(mid, now - timedelta(minutes=k), vals) for mid in ids[: len(ages)] for k in (20, 10)]
                await _copy(conn, rows)
                await _backfilled(settings, storage)
            await conn.execute("DELETE FROM analytics_watermarks")
            await conn.execute("DELETE FROM rul_estimates")
            await conn.commit()
            stop = asyncio.Event()
            task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
            try:
                await _wait(
                    conn,
                    "SELECT count(*) FROM analytics_watermarks WHERE detector = 'ewma_mad' AND last_time = %s",
                    [now - timedelta(minutes=10)],
                    len(ages),
                    "both machines scored",
                )
            finally:
                stop.set()
                await task
            cur = await conn.execute("SELECT machine_id FROM rul_estimates ORDER BY machine_id")
            results.append([r[0] for r in await cur.fetchall()])
    assert results == [ids[:1], ids[: len(ages)]], results


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


# -- the hourly rollup and the RUL history read from it ------------------------------------------------------


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hourly(rows: Sequence[Row]) -> Hourly:
    """What ``readings_hourly`` must hold, computed here: per machine and UTC hour, the row count and the mean of
    each position over the elements present and not NULL."""
    groups: dict[tuple[int, datetime], list[list[float | None]]] = {}
    for mid, t, vals in rows:
        groups.setdefault((mid, _hour(t)), []).append(vals)
    out: Hourly = {}
    for key, rows_of_hour in groups.items():
        means: list[float | None] = []
        for p in range(POSITIONS):
            present = [x for x in (v[p] for v in rows_of_hour if p < len(v)) if x is not None]
            means.append(statistics.fmean(present) if present else None)
        out[key] = (len(rows_of_hour), means)
    return out


def _rounded(hourly: Hourly) -> Hourly:
    # The server sums in another order than fmean: equal to 9 places is equal.
    return {k: (n, [None if m is None else round(m, 9) for m in means]) for k, (n, means) in hourly.items()}


async def _read_rollup(conn: psycopg.AsyncConnection[Any]) -> Hourly:
    means = ", ".join(f"mean_{p}" for p in range(1, POSITIONS + 1))
    cur = await conn.execute(f"SELECT machine_id, bucket, n_readings, {means} FROM readings_hourly")
    got = {(r[0], r[1]): (r[2], list(r[3:])) for r in await cur.fetchall()}
    await conn.commit()
    return _rounded(got)


async def _copy(conn: psycopg.AsyncConnection[Any], rows: Sequence[Row]) -> None:
    async with conn.cursor() as cur, cur.copy("COPY readings (machine_id, time, vals) FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)
    await conn.commit()


async def _days_back_to(conn: psycopg.AsyncConnection[Any], settings: Settings, first: datetime) -> None:
    """Native mode has partitions only around today: add the days back to ``first``."""
    if await storage_mode(conn, settings.database.schema_name) == "native":
        await ensure_partitions(conn, first.date(), datetime.now(UTC).date())
        await conn.commit()


def _hour_rows(rng: np.random.Generator, mid: int, hour: datetime, now: datetime) -> list[Row]:
    """Up to 8 rows in ``hour`` (none after ``now``), of 2 to 4 values, a quarter of them NULL."""
    rows: list[Row] = []
    for m in range(8):
        t = hour + timedelta(minutes=7 * m, seconds=int(rng.integers(60)))
        width = int(rng.choice([2, 3, 3, 4]))
        vals = [None if rng.random() < 0.25 else float(rng.normal(10 * (p + 1), 1)) for p in range(width)]
        if t <= now:
            rows.append((mid, t, vals))
    return rows


async def test_hourly_rollup_counts_rows_and_averages_each_position_ignoring_nulls(
    migrated: Settings, storage: str
) -> None:
    settings = migrated
    now = datetime.now(UTC)
    base = _hour(now) - timedelta(hours=40)
    rng = np.random.default_rng(5)
    async with await connect(settings.database) as conn:
        ids = await _setup(conn, settings)
        await _days_back_to(conn, settings, base)
        hours = [base + timedelta(hours=h) for h in (0, 1, 2, 38, 39, 40)]  # 40: the current hour
        rows = [r for mid in ids[:2] for h in hours for r in _hour_rows(rng, mid, h, now)]
        rows.append((ids[0], base + timedelta(minutes=30), [None, None, None]))  # counted, in no mean
        await _copy(conn, rows)
        if storage == "timescaledb":
            # Hours before base + 39 h come from the materialization, the newer ones from real-time aggregation.
            await _refresh(settings, base + timedelta(hours=39))
        assert await _read_rollup(conn) == _rounded(_hourly(rows))
        # Late rows, as an ingest backlog replays them, into hours already materialized (one 39 h old).
        late: list[Row] = [
            (ids[0], base + timedelta(hours=1, minutes=59), [100.0, None, 7.0]),
            (ids[1], hours[3], [50.0]),
        ]
        await _copy(conn, late)
        if storage == "timescaledb":
            await _run_refresh_policy(conn, settings)
        assert await _read_rollup(conn) == _rounded(_hourly(rows + late))


async def _refresh(settings: Settings, until: datetime) -> None:
    async with await connect(settings.database, autocommit=True) as auto:  # a refresh cannot run in a transaction
        await auto.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, %s::timestamptz)", [until])


async def _backfilled(settings: Settings, storage: str) -> None:
    """After a backfill: with TimescaleDB, the rollup's refresh policy runs right after the migration, so rows
    older than its watermark show only after its next run (30 minutes later). Refresh now, as that run would."""
    if storage == "timescaledb":
        await _refresh(settings, datetime.now(UTC))


async def _run_refresh_policy(conn: psycopg.AsyncConnection[Any], settings: Settings) -> None:
    cur = await conn.execute(
        """SELECT j.job_id, c.materialized_only FROM timescaledb_information.jobs j
           JOIN timescaledb_information.continuous_aggregates c
             ON c.view_schema = j.hypertable_schema AND c.view_name = j.hypertable_name
           WHERE c.view_schema = %s AND c.view_name = 'readings_hourly'
             AND j.proc_name = 'policy_refresh_continuous_aggregate'""",
        [settings.database.schema_name],
    )
    found = await cur.fetchall()
    await conn.commit()
    assert len(found) == 1, f"one refresh policy on readings_hourly, found {found}"
    job, materialized_only = found[0]
    assert materialized_only is False, "real-time aggregation must be on: the current hour comes from it"
    async with await connect(settings.database, autocommit=True) as auto:
        await auto.execute("CALL run_job(%s)", [job])


async def test_worker_gives_rul_models_hourly_means_since_the_first_reading(
    migrated: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: str, probe_trusted: None
) -> None:
    """An RUL model gets the machine's hourly means (NULLs left out) from its first hour, or the newest
    ``RUL_HISTORY_HOURS``, to its newest, at the bucket starts, aged from its first reading."""
    settings = migrated
    cap = 48  # so that one machine's 91 hours are cut and its age must come from its first reading
    monkeypatch.setattr(worker_module, "RUL_HISTORY_HOURS", cap)
    rul = dataclasses.replace(_rul_model(tmp_path, np.random.default_rng(3)), estimators={"all": _Probe()})
    save_model(rul, tmp_path / "r.model", "rul", {})
    _Probe.seen.clear()
    rng = np.random.default_rng(8)
    now = datetime.now(UTC)
    rows: list[Row] = []
    spans = [40, 90]  # hours of history per machine: within the cap, and past it
    async with await connect(settings.database) as conn:
        ids = await _setup(conn, settings)
        await _type_with_models(conn, tmp_path, ["r.model"])
        for span, mid in zip(spans, ids, strict=False):
            first = now - timedelta(hours=span, minutes=23)
            for k in range(int((now - first).total_seconds() // 600) + 1):  # a row every 10 minutes
                t = first + timedelta(minutes=10 * k)
                h = (t - first).total_seconds() / 3600
                wear = _wear(h, span + 60.0)
                temp = None if k % 4 == 0 or int(h) == 30 else 51 + 20 * wear + 0.5 * rng.normal()
                vals: list[float | None] = [1.8 + 3 * wear + 0.3 * rng.normal(), temp, 75.0 + rng.normal()]
                rows.append((mid, t, vals if k % 9 else vals[:2]))  # some rows lack the last sensor
        await _days_back_to(conn, settings, min(t for _, t, _ in rows))
        await _copy(conn, rows)
        await _backfilled(settings, storage)
        stop = asyncio.Event()
        task = asyncio.create_task(run_analytics(settings, stop, registry=CollectorRegistry(), worker="solo"))
        try:
            await _wait(conn, "SELECT count(DISTINCT machine_id) FROM rul_estimates", [], len(spans), "RUL estimates")
        finally:
            stop.set()
            await task
        cur = await conn.execute("SELECT machine_id, time, rul_hours FROM rul_estimates ORDER BY machine_id")
        written = await cur.fetchall()
    hourly = _hourly(rows)
    position = [SENSORS.index(f) for f in rul.features]
    seen = {h.unit: h for h in _Probe.seen}
    assert len(_Probe.seen) == len(spans), "one estimate per machine: all its rows came in one pass"
    for (mid, at, rul_hours), span in zip(written, spans, strict=True):
        mine = [t for m, t, _ in rows if m == mid]
        buckets = sorted(b for m, b in hourly if m == mid)
        assert (len(buckets) > cap) == (span > cap), "one whole history within the cap, one cut"
        buckets = buckets[-cap:]
        got = seen[str(mid)]
        assert (at, rul_hours) == (max(mine), len(buckets)), "the model's estimate, at the newest reading"
        assert got.time.tolist() == [b.timestamp() / 3600 for b in buckets], f"machine {mid}: one row per hour"
        want = np.array([[hourly[mid, b][1][p] for p in position] for b in buckets], dtype=np.float64)
        np.testing.assert_allclose(got.values, want, rtol=1e-12, err_msg=f"machine {mid}: hourly means")
        assert got.start == min(mine).timestamp() / 3600, f"machine {mid}: aged from its first reading"
        assert not got.failed


async def test_machine_metadata_is_read_once_and_again_for_a_wider_reading_or_when_old(migrated: Settings) -> None:
    settings = migrated
    async with await connect(settings.database) as conn:
        ids = await _setup(conn, settings)
        await _readings(conn, ids[:1], 0, 10)
        scorer = _Scorer(settings, ModelCache())
        known = await scorer._machine(conn, ids[0], 3)
        assert (known.sensors, known.machine_type, known.first) == (tuple(SENSORS), None, START)
        await conn.execute("INSERT INTO sensors (machine_id, position, name) VALUES (%s, 4, 'pressure')", [ids[0]])
        await conn.execute("INSERT INTO machine_types (name) VALUES ('pump')")
        await conn.execute("UPDATE machines SET type_id = (SELECT type_id FROM machine_types WHERE name = 'pump')")
        await conn.commit()
        assert await scorer._machine(conn, ids[0], 3) is known, "cached: no read on every pass"
        wider = await scorer._machine(conn, ids[0], 4)
        assert (wider.sensors[-1], wider.machine_type) == ("pressure", "pump")
        await conn.execute("UPDATE machine_types SET name = 'pump-v2'")
        await conn.commit()
        scorer.machines[ids[0]] = dataclasses.replace(wider, read_at=wider.read_at - MACHINE_REFRESH_S - 1)
        assert (await scorer._machine(conn, ids[0], 4)).machine_type == "pump-v2", "read again when old"
