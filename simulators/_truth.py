"""Ground truth of a live run: to the database (``sim_runs``, ``sim_truth``, ``sim_events``) and/or a CSV file."""

from __future__ import annotations

import csv
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg

from simulators._fleet import FAULT_LABELS, Fleet, Frame
from simulators._scenario import Scenario
from wearline.db import connect
from wearline.settings import DatabaseSettings
from wearline.wire import ms_to_datetime

__all__ = ["TRUTH_CSV_COLUMNS", "TruthSink", "open_truth"]

TRUTH_CSV_COLUMNS = (
    "machine",
    "time",
    "health",
    "rul_hours",
    "fault",
    "fault_type",
    "fault_sensor",
    "fault_onset",
    "failure_mode",
    "condition",
    "running",
)


class TruthSink:
    """Receives every step's truth; rows go to the database with COPY and to the CSV file as they come."""

    def __init__(self, conn: psycopg.AsyncConnection[Any] | None, run_id: int | None, csv_file: IO[str] | None) -> None:
        self.conn = conn
        self.run_id = run_id
        self._csv = csv.writer(csv_file) if csv_file is not None else None
        self._events_written = 0
        self.rows = 0

    async def add(self, fleet: Fleet, frames: Sequence[Frame], ts_ms: int) -> None:
        """Record one step (all frames share ``ts_ms``)."""
        when = ms_to_datetime(ts_ms)
        rows: list[tuple[object, ...]] = []
        for fr in frames:
            sensors, modes, conds = fr.mtype.sensor_names, fr.mtype.modes, fr.mtype.conditions
            for r, m in enumerate(fr.machines.tolist()):
                code = int(fr.fault_code[r])
                onset_s = float(fr.fault_onset_s[r])
                sensor = int(fr.fault_sensor[r])
                rows.append(
                    (
                        str(fleet.paths[m]),
                        when,
                        round(float(fr.health[r]), 6),
                        round(float(fr.rul_h[r]), 6),
                        code > 0,
                        FAULT_LABELS[code],
                        sensors[sensor] if sensor >= 0 else "",
                        None if math.isnan(onset_s) else ms_to_datetime(fleet.start_ms + round(onset_s * 1000)),
                        modes[fr.failure_mode[r]].name,
                        conds[fr.condition[r]].name,
                        bool(fr.running[r]),
                    )
                )
        self.rows += len(rows)
        if self._csv is not None:
            for row in rows:
                self._csv.writerow(
                    [
                        row[0],
                        row[1].isoformat(),  # type: ignore[attr-defined]
                        *row[2:4],
                        int(bool(row[4])),
                        *row[5:7],
                        "" if row[7] is None else row[7].isoformat(),  # type: ignore[attr-defined]
                        *row[8:10],
                        int(bool(row[10])),
                    ]
                )
        if self.conn is not None:
            async with self.conn.cursor() as cur:
                cols = ", ".join(TRUTH_CSV_COLUMNS)
                async with cur.copy(f"COPY sim_truth (run_id, {cols}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row((self.run_id, *row))
            await self.conn.commit()
        await self.events(fleet)

    async def events(self, fleet: Fleet) -> None:
        """Record the events (failures, repairs, maintenance, fault onsets and ends) not yet written."""
        new = fleet.events[self._events_written :]
        self._events_written = len(fleet.events)
        if self.conn is None or not new:
            return
        cur = self.conn.cursor()
        async with cur, cur.copy("COPY sim_events (run_id, machine, time, kind, detail) FROM STDIN") as copy:
            for e in new:
                when = ms_to_datetime(fleet.start_ms + round(e.time_s * 1000))
                await copy.write_row((self.run_id, str(fleet.paths[e.machine]), when, e.kind, e.detail))
        await self.conn.commit()


@asynccontextmanager
async def open_truth(
    scenario: Scenario,
    *,
    seed: int,
    start_ms: int,
    database: DatabaseSettings | None = None,
    csv_path: Path | None = None,
) -> AsyncIterator[TruthSink]:
    """A sink for one run: registers the run in ``sim_runs`` (when ``database`` is given; the schema must be
    migrated) and opens ``csv_path`` (when given) with a header row."""
    csv_file = csv_path.open("w", newline="") if csv_path is not None else None
    try:
        if csv_file is not None:
            csv.writer(csv_file).writerow(TRUTH_CSV_COLUMNS)
        if database is None:
            yield TruthSink(None, None, csv_file)
            return
        async with await connect(database) as conn:
            params = orjson.dumps(asdict(scenario), default=str).decode()
            cur = await conn.execute(
                "INSERT INTO sim_runs (scenario, seed, start_time, sample_period_s, params) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING run_id",
                [scenario.name, seed, ms_to_datetime(start_ms), scenario.sample_period_s, params],
            )
            row = await cur.fetchone()
            assert row is not None
            await conn.commit()
            yield TruthSink(conn, int(row[0]), csv_file)
    finally:
        if csv_file is not None:
            csv_file.close()
