"""Retention that applies (issue 15): the running ingest process keeps readings for ``database.retention_days``
and dead letters for ``ingest.dead_letter_retention_days``, in both storage modes, and a restart with another value
applies that one: raised, lowered (past the window tenfold), turned off. With TimescaleDB the scheduler's own runs of
the policy jobs are what is checked, and failed compression and rollup-refresh runs show in ingest's metrics.

Ingest runs as the ``wearline_ingest`` role, as deployed: the policy is changed through ``set_readings_retention``
and partitions are dropped through ``drop_partitions_before``, both run with the owner's rights."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

import ingest
from ingest._housekeeping import Housekeeping, StorageUpkeep
from ingest._metrics import IngestMetrics
from ingest._surge import SurgeLog
from tests.conftest import (
    HAS_TIMESCALEDB,
    NO_TIMESCALEDB,
    drop_schema,
    make_settings,
    timescaledb_job_failures,
    unique,
)
from tests.ingest._support import connect_db
from wearline.db import migrate, open_pool
from wearline.settings import Settings

AGES = range(41)
"""Days back from today that hold a reading per machine and a dead letter: ten times the shortest retention tried."""
MACHINES = 3
READINGS = "readings partitions and retention"
DEAD_LETTERS = "dead-letter retention"
WAIT_S = 60.0


def _readings_kept(age: int, days: int) -> bool:
    # Whole days go: native drops a daily partition once it ends before today - days, TimescaleDB a daily chunk
    # once it ends before now - days. Either way the day `days` back is the oldest kept.
    return days == 0 or age <= days


def _dead_letter_kept(age: int, days: int) -> bool:
    # Each dead letter is seeded an hour older than its age in days; one received more than `days` ago goes.
    return days == 0 or age < days


def _settings(schema: str, prefix: str, storage: str, days: int) -> Settings:
    return make_settings(
        schema,
        prefix,
        storage,
        database={"retention_days": days, "role": "wearline_ingest"},
        ingest={"dead_letter_retention_days": days},
    )


def _seed(schema: str, storage: str, today: date) -> None:
    """A reading per machine a second after each day's midnight (UTC) and one dead letter per day, for every age;
    readings already there stay (a backfill), dead letters start over."""
    with connect_db(schema) as conn:
        if conn.execute("SELECT count(*) FROM machines").fetchone() == (0,):
            conn.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site1' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id)
                   INSERT INTO machines (tenant_id, line_id, name)
                   SELECT (SELECT tenant_id FROM t), line_id, 'm' || g FROM l, generate_series(1, %s) g""",
                [MACHINES],
            )
        if storage == "native":
            conn.execute("SELECT ensure_partitions(%s, %s)", [today - timedelta(days=max(AGES)), today])
        conn.execute(
            """INSERT INTO readings (machine_id, time, vals)
               SELECT machine_id, (%s::date - age)::timestamp AT TIME ZONE 'UTC' + interval '1 second', ARRAY[age]
               FROM machines, unnest(%s::int[]) age
               ON CONFLICT DO NOTHING""",
            [today, list(AGES)],
        )
        conn.execute("DELETE FROM dead_letters")
        conn.execute(
            """INSERT INTO dead_letters (received_at, topic, reason, detail, payload)
               SELECT now() - make_interval(days => age, hours => 1), 't', 'not_json', '', ''
               FROM unnest(%s::int[]) age""",
            [list(AGES)],
        )


def _reading_ages(schema: str, today: date) -> list[int]:
    with connect_db(schema) as conn:
        rows = conn.execute(
            "SELECT DISTINCT %s::date - (time AT TIME ZONE 'UTC')::date FROM readings ORDER BY 1", [today]
        ).fetchall()
        per_age = conn.execute("SELECT count(*) FROM readings GROUP BY time HAVING count(*) <> %s", [MACHINES])
        assert per_age.fetchall() == [], "every machine keeps or loses a day together"
    return [int(str(r[0])) for r in rows]


def _dead_letter_count(schema: str) -> int:
    with connect_db(schema) as conn:
        row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert row is not None
    return int(str(row[0]))


def _runs(registry: CollectorRegistry, chore: str) -> float:
    return registry.get_sample_value("wearline_ingest_housekeeping_runs_total", {"chore": chore, "outcome": "ok"}) or 0


async def _until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"waited {WAIT_S:.0f} s for {what}"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def _ingest(settings: Settings) -> AsyncIterator[CollectorRegistry]:
    """Ingest in this process until the block ends: a start of the service as ``wearline ingest`` runs it."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
        tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        await subscribed.wait()
        try:
            yield registry
        finally:
            stop.set()


def _retention_jobs(schema: str) -> list[tuple[int, str | None, int]]:
    """The schema's readings retention jobs: id, drop_after, successful runs by the scheduler."""
    with connect_db(schema) as conn:
        rows = conn.execute(
            """SELECT j.job_id, j.config->>'drop_after', coalesce(s.total_successes, 0)
               FROM timescaledb_information.jobs j LEFT JOIN timescaledb_information.job_stats s USING (job_id)
               WHERE j.proc_name = 'policy_retention' AND j.hypertable_schema = %s AND j.hypertable_name = 'readings'""",
            [schema],
        ).fetchall()
    return [(int(str(j)), None if d is None else str(d), int(str(n))) for j, d, n in rows]


def _job(schema: str, proc: str) -> int:
    with connect_db(schema) as conn:
        row = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s AND hypertable_schema = %s",
            [proc, schema],
        ).fetchone()
    assert row is not None, f"no {proc} job for {schema}"
    return int(str(row[0]))


def _job_stats(schema: str, job: int) -> tuple[int, int, str | None]:
    """Runs, successes and last status of a job, as the scheduler recorded them."""
    with connect_db(schema) as conn:
        row = conn.execute(
            "SELECT coalesce(total_runs, 0), coalesce(total_successes, 0), last_run_status "
            "FROM timescaledb_information.job_stats WHERE job_id = %s",
            [job],
        ).fetchone()
    return (
        (0, 0, None) if row is None else (int(str(row[0])), int(str(row[1])), None if row[2] is None else str(row[2]))
    )


def _first_runs_done(schema: str) -> None:
    """Wait for the scheduler's first runs of the new schema's policies (they run at once, a few seconds later on a
    busy server), so that what the test seeds next is not compressed or refreshed behind its back."""
    with connect_db(schema) as conn:
        assert timescaledb_job_failures(conn, schema) == []


async def _scheduler_runs(schema: str, job: int, status: str, max_runtime: str | None = None) -> None:
    """Make ``job`` due now (and give it ``max_runtime``) and wait for the background scheduler, not ``run_job``,
    to run it and record ``status``."""
    runs_before = _job_stats(schema, job)[0]
    with connect_db(schema) as conn:
        conn.execute(
            "SELECT public.alter_job(%s::int, max_runtime => coalesce(%s::interval, max_runtime), next_start => now()) "
            "FROM timescaledb_information.jobs WHERE job_id = %s",
            [job, max_runtime, job],
        )
    await _until(
        f"job {job} run by the scheduler ({status})",
        lambda: (s := _job_stats(schema, job))[0] > runs_before and s[2] == status,
    )


async def test_ingest_applies_retention_and_a_restart_changes_it(schema: str, storage: str) -> None:
    prefix = unique("wlt/")
    await migrate(make_settings(schema, prefix, storage).database)
    today = datetime.now(UTC).date()
    if storage == "timescaledb":
        _first_runs_done(schema)
    _seed(schema, storage, today)
    if storage == "timescaledb":
        # Compressed chunks are what retention meets in production (the compression policy takes chunks older
        # than 7 days): let the scheduler compress the seeded ones first.
        await _scheduler_runs(schema, _job(schema, "policy_compression"), "Success")
        with connect_db(schema) as conn:
            compressed = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_schema = %s AND hypertable_name = 'readings' AND is_compressed",
                [schema],
            ).fetchone()
        print(f"chunks compressed by the policy: {compressed}")
        assert compressed is not None
        assert int(str(compressed[0])) > 0
    for step, days in enumerate((20, 40, 3, 0)):  # set, raised, lowered, turned off
        if step:
            _seed(schema, storage, today)  # what a late backfill brings back in: kept or dropped again
        before = _reading_ages(schema, today)
        assert before == list(AGES)
        async with _ingest(_settings(schema, prefix, storage, days)) as registry:
            await _until("readings housekeeping", lambda: _runs(registry, READINGS) >= 1)
            if days:
                await _until("dead-letter housekeeping", lambda: _runs(registry, DEAD_LETTERS) >= 1)
            if storage == "timescaledb":
                jobs = _retention_jobs(schema)
                if days:
                    assert [d for _, d, _ in jobs] == [f"{days} days"], jobs
                    await _until(f"the {days}-day retention job's run", lambda: _retention_jobs(schema)[0][2] >= 1)
                else:
                    assert jobs == [], "retention turned off removes the policy"
            ages = _reading_ages(schema, today)
            dead_letters = _dead_letter_count(schema)
            gauge = {
                table: registry.get_sample_value("wearline_storage_retention_days", {"table": table})
                for table in ("readings", "dead_letters")
            }
            dropped = registry.get_sample_value("wearline_storage_partitions_dropped_total")
        print(
            f"retention {days} d: reading days kept {len(ages)} of {len(before)} (oldest {max(ages)} d), "
            f"dead letters kept {dead_letters} of {len(AGES)}, partitions dropped {dropped}"
        )
        assert ages == [a for a in AGES if _readings_kept(a, days)]
        assert dead_letters == sum(_dead_letter_kept(a, days) for a in AGES)
        assert gauge == {"readings": days, "dead_letters": days}
        assert dropped == (len(before) - len(ages) if storage == "native" else 0)


@pytest.mark.timescaledb
async def test_failed_compression_and_refresh_runs_show_in_ingest_metrics() -> None:
    if not HAS_TIMESCALEDB:
        pytest.skip(NO_TIMESCALEDB)
    schema = unique("wlt_")  # its jobs fail on purpose: dropped without the check every other schema gets
    try:
        await _failing_jobs_are_exported(schema)
    finally:
        drop_schema(schema, jobs_must_succeed=False)


async def _failing_jobs_are_exported(schema: str) -> None:
    settings = _settings(schema, unique("wlt/"), "timescaledb", 0)
    await migrate(make_settings(schema, settings.topic_prefix, "timescaledb").database)
    today = datetime.now(UTC).date()
    _first_runs_done(schema)
    _seed(schema, "timescaledb", today)  # chunks older than the compression policy's 7 days
    compress, refresh = _job(schema, "policy_compression"), _job(schema, "policy_refresh_continuous_aggregate")
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)

    def failed(kind: str) -> float | None:
        return registry.get_sample_value("wearline_storage_job_last_run_failed", {"kind": kind})

    def failures(kind: str) -> float:
        return registry.get_sample_value("wearline_storage_job_failures", {"kind": kind}) or 0

    def last_success(kind: str) -> float:
        return registry.get_sample_value("wearline_storage_job_last_success_timestamp_seconds", {"kind": kind}) or 0

    pool = await open_pool(settings.database)
    try:
        upkeep = StorageUpkeep("timescaledb", settings.database.partition_days_ahead, 0)
        async with Housekeeping(
            pool, SurgeLog(60), retention_days=0, storage=upkeep, metrics=metrics, jobs_every_s=0.2
        ):
            await _until("job metrics", lambda: failed("compression") == 0 and failed("refresh") == 0)
            assert failed("retention") is None, "retention is off: no policy, no series"
            # The rollup's refresh fails on data: two readings of one hour whose sum overflows float8.
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
            with connect_db(schema) as conn:
                conn.execute(
                    "INSERT INTO readings SELECT machine_id, %s + k * interval '1 minute', '{1e308}' "
                    "FROM machines, generate_series(1, 2) k",
                    [hour],
                )
            await _scheduler_runs(schema, refresh, "Failed")
            # Compression fails when a long transaction holds a chunk past the job's max_runtime.
            with connect_db(schema) as holder:
                holder.autocommit = False
                chunk = holder.execute(
                    "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                    "WHERE hypertable_schema = %s AND hypertable_name = 'readings' AND NOT is_compressed "
                    "AND range_end < now() - interval '8 days' ORDER BY range_start LIMIT 1",
                    [schema],
                ).fetchone()
                assert chunk is not None
                holder.execute(f"LOCK TABLE {chunk[0]} IN ACCESS EXCLUSIVE MODE")
                await _scheduler_runs(schema, compress, "Failed", "1 second")
                # Still holding the lock: the scheduler retries a failed job, and a retry after the release succeeds.
                await _until("both failures in the metrics", lambda: failed("compression") == failed("refresh") == 1)
                seen = {kind: failures(kind) for kind in ("compression", "refresh")}
                holder.rollback()
            print(f"after the failed runs: last_run_failed 1 and failures {seen}")
            assert all(n >= 1 for n in seen.values())
            fixed_at = time.time()
            with connect_db(schema) as conn:
                conn.execute("DELETE FROM readings WHERE vals = '{1e308}'")
            await _scheduler_runs(schema, refresh, "Success")
            await _scheduler_runs(schema, compress, "Success", "0")
            await _until(
                "both recoveries in the metrics",
                lambda: all(
                    failed(kind) == 0 and last_success(kind) >= fixed_at - 1 for kind in ("compression", "refresh")
                ),
            )
            # TimescaleDB's count of failed runs is the job's whole life: recovered, it does not go back.
            assert all(failures(kind) >= n for kind, n in seen.items())
    finally:
        await pool.close()
