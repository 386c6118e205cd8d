"""Measuring the readings layout: narrow rows (one per sensor value) against wide rows (one per sample).

This is the measurement behind the readings table's shape (docs/architecture.md); ``wearline bench layout``
runs it in a scratch schema that it drops afterwards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["LayoutFigures", "measure_layouts"]

Sample = tuple[datetime, int, list[float]]


@dataclass(frozen=True)
class LayoutFigures:
    layout: str
    method: str
    readings: int
    seconds: float
    bytes_on_disk: int

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds


def _narrow_rows(samples: list[Sample]) -> Any:
    for t, m, vals in samples:
        for j, v in enumerate(vals):
            yield (t, m, j, v)


def measure_layouts(dsn: str, *, samples: int = 100_000, sensors: int = 10, seed: int = 1) -> list[LayoutFigures]:
    """COPY the same readings both ways, plain and through a staging table with ON CONFLICT (the idempotent
    write ingest needs); returns readings per second and table size for each."""
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    data = [
        (t0 + timedelta(milliseconds=10 * i), i % 1000, [rng.random() for _ in range(sensors)]) for i in range(samples)
    ]
    schema = f"wearline_layout_bench_{rng.randrange(1 << 30)}"
    figures = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        try:
            conn.execute(
                "CREATE TABLE narrow (time timestamptz NOT NULL, machine_id int NOT NULL, sensor_id smallint NOT NULL,"
                " value float8, PRIMARY KEY (machine_id, sensor_id, time));"
                "CREATE TABLE wide (time timestamptz NOT NULL, machine_id int NOT NULL, vals float8[] NOT NULL,"
                " PRIMARY KEY (machine_id, time))"
            )
            layouts: dict[str, tuple[str, list[str], Callable[[list[Sample]], Any]]] = {
                "narrow": (
                    "(time, machine_id, sensor_id, value)",
                    ["timestamptz", "int4", "int2", "float8"],
                    _narrow_rows,
                ),
                "wide": ("(time, machine_id, vals)", ["timestamptz", "int4", "float8[]"], iter),
            }
            for name, (cols, types, rows) in layouts.items():
                for method in ("copy", "copy+merge"):
                    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(name)))
                    start = time.perf_counter()
                    with conn.transaction():
                        target = name if method == "copy" else "stage"
                        if method != "copy":
                            conn.execute(
                                sql.SQL("CREATE TEMP TABLE stage (LIKE {}) ON COMMIT DROP").format(sql.Identifier(name))
                            )
                        with conn.cursor().copy(f"COPY {target} {cols} FROM STDIN (FORMAT BINARY)".encode()) as copy:
                            copy.set_types(types)
                            for row in rows(data):
                                copy.write_row(row)
                        if method != "copy":
                            conn.execute(
                                sql.SQL("INSERT INTO {} SELECT * FROM stage ON CONFLICT DO NOTHING").format(
                                    sql.Identifier(name)
                                )
                            )
                    seconds = time.perf_counter() - start
                    size_row = conn.execute("SELECT pg_total_relation_size(%s)", [f"{schema}.{name}"]).fetchone()
                    figures.append(
                        LayoutFigures(name, method, samples * sensors, seconds, int(size_row[0]) if size_row else 0)
                    )
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return figures
