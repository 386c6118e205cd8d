"""Fixtures over the real services: PostgreSQL and Mosquitto, never mocks.

The server addresses come from WEARLINE_TEST_DSN and WEARLINE_TEST_MQTT (host:port); each test gets its own
database schema and MQTT topic prefix, dropped or abandoned when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ingest._bench import own_broker
from wearline.db import migrate
from wearline.settings import Settings, load_settings

# Property tests check what the code does with each input, not how fast inputs are made or checked: on a loaded
# 2-core machine (CI runs next to PostgreSQL and brokers) generation alone can trip hypothesis' timing checks.
hypothesis_settings.register_profile("wearline", suppress_health_check=[HealthCheck.too_slow], deadline=None)
hypothesis_settings.load_profile("wearline")

TEST_DSN = os.environ.get("WEARLINE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_MQTT = os.environ.get("WEARLINE_TEST_MQTT", "127.0.0.1:1883")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A command run in process (``wearline ...`` through its entry point) points the root logger at the stderr pytest
    captured for that test; later tests would log into a closed file ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_report_header() -> list[str]:
    """Which servers this run tests against (the DSN without its password): a run may target another cluster."""
    info = conninfo_to_dict(TEST_DSN)
    where = f"{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
    return [f"wearline: database {where} (WEARLINE_TEST_DSN), broker {TEST_MQTT} (WEARLINE_TEST_MQTT)"]


def _timescaledb_available() -> bool:
    with psycopg.connect(TEST_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        if row is None:
            return False
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        return preload is not None and "timescaledb" in preload[0]


HAS_TIMESCALEDB = _timescaledb_available()
NO_TIMESCALEDB = (
    "TimescaleDB is not installed on the test server (it is in no package registry here); the native "
    "partitioning path is tested instead"
)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_settings(schema: str, prefix: str, storage: str = "auto", **overrides: object) -> Settings:
    host, port = TEST_MQTT.rsplit(":", 1)
    base: dict[str, object] = {
        "topic_prefix": prefix,
        "mqtt": {"host": host, "port": int(port), "client_id": unique("wlt-")},
        "database": {"dsn": TEST_DSN, "schema": schema, "storage": storage},
        "ingest": {"metrics_port": 0, "batch_max_delay_ms": 50},
        "analytics": {"metrics_port": 0, "poll_interval_s": 0.2},
        "alerts": {"metrics_port": 0, "poll_interval_s": 0.2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}  # type: ignore[dict-item]
        else:
            base[key] = value
    return load_settings(None, needs=None, **base)


# A schema's TimescaleDB jobs, how their runs went, and whether one is running or due: the scheduler runs a new
# policy at once (the rollup's refresh right after the migration), so a test that ends soon after must wait for it.
_JOB_STATE = """
SELECT j.job_id, j.proc_name, coalesce(s.total_runs, 0), coalesce(s.total_failures, 0), s.last_run_status,
       j.scheduled AND (s.job_status = 'Running' OR coalesce(s.next_start, '-infinity') <= now()) AS pending
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
WHERE j.hypertable_schema = %s
ORDER BY j.job_id
"""

JOBS_WAIT_S = 60.0


def timescaledb_job_failures(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[str]:
    """Every failed run of the schema's TimescaleDB background jobs, as the scheduler recorded it (job_stats and
    job_errors), once no job is running or due (waiting at most ``JOBS_WAIT_S``); empty when all went well."""
    deadline = time.monotonic() + JOBS_WAIT_S
    while True:
        jobs = conn.execute(_JOB_STATE, [schema]).fetchall()
        pending = [f"{job} {proc}" for job, proc, _, _, _, due in jobs if due]
        if not pending:
            break
        if time.monotonic() > deadline:
            return [f"still running or due after {JOBS_WAIT_S:.0f} s: {', '.join(pending)}"]
        time.sleep(0.2)
    failures = [
        f"job {job} {proc}: {failed} of {runs} run(s) failed (last {status})"
        for job, proc, runs, failed, status, _ in jobs
        if failed or status == "Failed"
    ]
    if jobs:
        errors = conn.execute(
            "SELECT job_id, proc_name, err_message FROM timescaledb_information.job_errors "
            "WHERE job_id = ANY(%s) ORDER BY start_time",
            [[job for job, *_ in jobs]],
        ).fetchall()
        failures += [f"job {job} {proc}: {message}" for job, proc, message in errors]
    return failures


def drop_schema(schema: str, *, jobs_must_succeed: bool = True) -> None:
    """Drop a test's schema. Where TimescaleDB runs its policies, first check that none of their background runs
    failed: a test passing while the jobs behind it fail proves little (the scheduler, not ``run_job``, is what
    production relies on)."""
    failures: list[str] = []
    with psycopg.connect(TEST_DSN, autocommit=True) as conn:
        # A DROP that removes several TimescaleDB jobs while one runs can fail ("tuple concurrently deleted", or a
        # deadlock; timescale/timescaledb#8636), and a new schema's policies run right after its migration:
        # delete the jobs one at a time first.
        jobs_view = conn.execute("SELECT to_regclass('timescaledb_information.jobs')").fetchone()
        if jobs_view is not None and jobs_view[0] is not None:
            if jobs_must_succeed:
                failures = timescaledb_job_failures(conn, schema)
            jobs = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = %s", [schema]
            ).fetchall()
            for (job,) in jobs:
                conn.execute("SELECT delete_job(%s)", [job])
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    assert not failures, f"TimescaleDB background jobs of schema {schema} failed: " + "; ".join(failures)


@pytest.fixture(params=["native", pytest.param("timescaledb", marks=pytest.mark.timescaledb)])
def storage(request: pytest.FixtureRequest) -> str:
    """Both storage modes; the TimescaleDB one skips, saying why, where the extension is missing."""
    if request.param == "timescaledb" and not HAS_TIMESCALEDB:
        pytest.skip(NO_TIMESCALEDB)
    return str(request.param)


@pytest.fixture
def schema() -> Iterator[str]:
    name = unique("wlt_")
    yield name
    drop_schema(name)


@pytest.fixture
def settings(schema: str, storage: str) -> Settings:
    """Settings for one test: its own schema and topic prefix, in each storage mode."""
    return make_settings(schema, unique("wlt/"), storage)


@pytest.fixture
async def migrated(settings: Settings) -> Settings:
    await migrate(settings.database)
    if settings.database.storage == "timescaledb":
        # The scheduler runs the new policies a few seconds after the migration. A test that refreshes the rollup
        # itself meanwhile makes that run fail ("concurrent refresh"): start once the first runs are done, and good.
        await asyncio.to_thread(_first_runs_succeeded, settings.database.schema_name)
    return settings


def _first_runs_succeeded(schema: str) -> None:
    with psycopg.connect(TEST_DSN, autocommit=True) as conn:
        failures = timescaledb_job_failures(conn, schema)
    assert not failures, f"TimescaleDB background jobs of schema {schema} failed after its migration: {failures}"


@pytest.fixture(scope="session")
def shipped_broker() -> Iterator[tuple[str, int]]:
    """A Mosquitto of our own with the configuration Wearline ships (deploy/mosquitto/wearline.conf).

    The machine's broker runs Debian's defaults, which drop messages for a slow subscriber; tests about
    delivery guarantees must run against what we tell users to deploy. The benchmark starts the same broker.
    """
    with own_broker() as (port, _):
        yield "127.0.0.1", port
