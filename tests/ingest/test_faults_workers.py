"""kill -9 of the analytics worker and of the alerts worker mid-run (issue 11, item 6): the restarted worker resumes
where the last commit left off (analytics: its watermarks and leases; alerts: the anomalies not yet marked handled),
no reading is scored twice, no anomaly is recorded or folded into a ticket twice, and there is one live ticket per
machine and failure mode."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import TEST_DSN, make_settings, unique
from tests.ingest._fault_support import wait_until
from tests.ingest._support import worker
from wearline.db import migrate
from wearline.settings import Settings

PASS_ROWS = 5000  # analytics._worker.MAX_ROWS_PER_PASS: rows of one machine scored (and committed) per pass
BURST_EVERY, BURST_AT, BURST_ROWS = 1000, 500, 10  # vibration +20 for 10 rows in every 1,000: each pass flags


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEARLINE_")}
    env.update(
        {
            "WEARLINE_DATABASE__DSN": settings.database.dsn,
            "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name,
            "WEARLINE_ANALYTICS__POLL_INTERVAL_S": "0.2",
            "WEARLINE_ANALYTICS__METRICS_PORT": "0",
            "WEARLINE_ALERTS__POLL_INTERVAL_S": "0.2",
            "WEARLINE_ALERTS__METRICS_PORT": "0",
        }
    )
    return env


def _db(schema: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(TEST_DSN, autocommit=True, options=f"-c search_path={schema} -c timezone=UTC")


def _one(schema: str, query: str, args: list[object] | None = None) -> int:
    with _db(schema) as conn:
        row = conn.execute(query, args or []).fetchone()
        return int(str(row[0])) if row and row[0] is not None else 0


def _fleet(schema: str, machines: int, sensors: list[str]) -> None:
    """One tenant, site and line with ``machines`` machines (m0000, ...) of ``sensors``."""
    with _db(schema) as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site1' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id)
               INSERT INTO machines (tenant_id, line_id, name)
               SELECT t.tenant_id, l.line_id, 'm' || lpad(i::text, 4, '0') FROM t, l, generate_series(0, %s - 1) i""",
            [machines],
        )
        conn.execute(
            """INSERT INTO sensors (machine_id, position, name)
               SELECT m.machine_id, p, (%s::text[])[p] FROM machines m, generate_series(1, %s) p""",
            [sensors, len(sensors)],
        )


def _summary(log: Path, pattern: str) -> list[int]:
    """The numbers of the stop summary lines matching ``pattern`` (one group per number wanted)."""
    return [int(m.group(1)) for m in re.finditer(pattern, log.read_text())]


@pytest.mark.faults
@pytest.mark.timeout(150)
def test_analytics_kill_9_resumes_at_its_watermarks_and_scores_every_reading_once(schema: str, tmp_path: Path) -> None:
    machines, rows = 20, 20_000
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    _fleet(schema, machines, ["vib", "temp", "flow"])
    start = (datetime.now(UTC) - timedelta(seconds=rows + 3600)).replace(microsecond=0)
    with _db(schema) as conn:
        conn.execute("SELECT ensure_partitions(%s, %s)", [start.date(), datetime.now(UTC).date()])
        # Readings one second apart, written before the worker starts, so every pass takes PASS_ROWS rows and
        # pass boundaries fall at the same rows whether or not the worker is killed in between.
        conn.execute(
            """INSERT INTO readings (machine_id, time, vals)
               SELECT m.machine_id, %(start)s + k * interval '1 second',
                      ARRAY[1.8 + 0.05 * random() + CASE WHEN k %% %(every)s >= %(at)s
                                AND k %% %(every)s < %(at)s + %(n)s THEN 20 ELSE 0 END,
                            55 + 0.3 * random(), 75 + 0.5 * random()]
               FROM machines m, generate_series(0, %(rows)s - 1) k""",
            {"start": start, "every": BURST_EVERY, "at": BURST_AT, "n": BURST_ROWS, "rows": rows},
        )
    total = machines * rows
    scored = (
        "SELECT count(*) FROM readings r JOIN analytics_watermarks w USING (machine_id) "
        "WHERE w.detector = 'ewma_mad' AND r.time <= w.last_time"
    )
    log = tmp_path / "analytics.log"
    env = _env(settings)

    with worker(env, log, wait_for=None, command="analytics --worker A") as first:
        # Past the first pass over every machine and into the second: some machines are a pass ahead of others.
        wait_until(lambda: _one(schema, scored) >= machines * PASS_ROWS + 2 * PASS_ROWS, 60, "a pass and a bit")
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = _one(schema, scored)
    anomalies_at_kill = _one(schema, "SELECT count(*) FROM anomalies")
    leases_at_kill = _one(schema, "SELECT count(*) FROM analytics_leases WHERE worker = 'A'")

    started = time.monotonic()
    with worker(env, log, wait_for=None, command="analytics --worker A") as second:
        wait_until(lambda: _one(schema, scored) == total, 90, "every reading scored")
        resume_s = time.monotonic() - started
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    after = _summary(log, r"analytics A stopped: \d+ passes, (\d+) rows scored")
    with _db(schema) as conn:
        cur: psycopg.Cursor[tuple[str, list[int], int, int]] = conn.execute(  # type: ignore[assignment]
            """SELECT m.name, array_agg(extract(epoch FROM a.time - %s)::int ORDER BY a.time),
                      sum((a.details->>'scored_rows')::int), count(*) - count(DISTINCT (a.detector, a.time))
               FROM anomalies a JOIN machines m USING (machine_id) GROUP BY m.name ORDER BY m.name""",
            [start],
        )
        # (machine, anomaly offsets in s from the first reading, rows of the passes that recorded them, duplicates)
        found = [(str(n), [int(o) for o in offs], int(str(r)), int(str(d))) for n, offs, r, d in cur.fetchall()]
        leases_left = _one(schema, "SELECT count(*) FROM analytics_leases")
    anomalies = sum(len(r[1]) for r in found)
    print(
        f"\nanalytics kill -9: {total} readings on {machines} machines; scored {at_kill} and recorded "
        f"{anomalies_at_kill} anomalies before the kill ({leases_at_kill} leases held by A); the restarted A scored "
        f"{after} in {resume_s:.1f} s; anomalies {anomalies}, duplicates {sum(r[3] for r in found)}"
    )
    assert at_kill % (machines * PASS_ROWS) != 0, f"the kill landed between passes ({at_kill} scored)"
    assert 0 < at_kill < total, "the kill did not land mid-run"
    assert leases_at_kill == machines
    # The restarted worker scored exactly what its predecessor had not committed: no reading twice, none skipped.
    assert after == [total - at_kill]
    # One anomaly per pass, each pass of PASS_ROWS rows flags: every machine, killed mid-pass or not, has the same
    # anomalies at the same offsets as every other, and its recorded passes cover each of its readings once.
    passes = rows // PASS_ROWS
    assert len(found) == machines
    offsets = {tuple(r[1]) for r in found}
    assert len(offsets) == 1, offsets
    assert len(next(iter(offsets))) == passes
    assert {r[2] for r in found} == {rows}
    assert anomalies == machines * passes
    assert all(r[3] == 0 for r in found)
    assert leases_left == 0, "a clean stop hands the machines back"
    assert "Traceback" not in log.read_text()


@pytest.mark.faults
@pytest.mark.timeout(150)
def test_alerts_kill_9_folds_every_anomaly_into_one_live_ticket_once(schema: str, tmp_path: Path) -> None:
    machines, per_machine = 100, 40
    total = machines * per_machine
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    _fleet(schema, machines, ["vib"])
    first_at = datetime.now(UTC) - timedelta(hours=2)
    with _db(schema) as conn:
        # Interleaved by time across machines, as analytics records them; a minute apart, so within every hold and
        # reopen window: each machine's anomalies belong on one live ticket.
        conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               SELECT m.machine_id, %s + k * interval '1 minute', 'ewma_mad', 6 + (k %% 20), 6, '{vib}'
               FROM generate_series(0, %s - 1) k, machines m ORDER BY k, m.machine_id""",
            [first_at, per_machine],
        )
    handled = "SELECT count(*) FROM anomalies WHERE handled_at IS NOT NULL"
    log = tmp_path / "alerts.log"
    env = _env(settings)

    with worker(env, log, wait_for=None, command="alerts") as first:
        wait_until(lambda: _one(schema, handled) >= total // 5, 60, "a fifth of the anomalies handled")
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = _one(schema, handled)

    started = time.monotonic()
    with worker(env, log, wait_for=None, command="alerts") as second:
        wait_until(lambda: _one(schema, handled) == total, 90, "every anomaly handled")
        resume_s = time.monotonic() - started
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    after = _summary(log, r"alerts stopped: \d+ tickets opened, (\d+) anomalies")
    tickets = _one(schema, "SELECT count(*) FROM tickets")
    live = _one(schema, "SELECT count(*) FROM tickets WHERE status IN ('open', 'acknowledged', 'in_progress')")
    per_key = _one(schema, "SELECT max(n) FROM (SELECT count(*) n FROM tickets GROUP BY machine_id, reason) c")
    occurrences = _one(schema, "SELECT sum(occurrences) FROM tickets")
    events = _one(schema, "SELECT count(*) FROM ticket_events WHERE kind IN ('opened', 'occurrence')")
    on_own = _one(
        schema, "SELECT count(*) FROM anomalies a JOIN tickets k USING (ticket_id) WHERE k.machine_id = a.machine_id"
    )
    print(
        f"\nalerts kill -9: {total} anomalies on {machines} machines; {at_kill} handled before the kill, the "
        f"restarted worker handled {after} in {resume_s:.1f} s; tickets {tickets} (live {live}, at most {per_key} "
        f"per machine and reason), occurrences {occurrences}, evidence events {events}"
    )
    assert 0 < at_kill < total, "the kill did not land mid-run"
    assert after == [total - at_kill], "the restarted worker handled an anomaly twice or skipped one"
    assert (tickets, live, per_key) == (machines, machines, 1)
    assert occurrences == events == on_own == total
    assert "Traceback" not in log.read_text()
