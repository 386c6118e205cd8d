"""Every SQL query of every shipped Grafana dashboard (panels, template variables, annotations) runs against a
migrated schema with data, as the read-only role Grafana logs in with, after the substitutions Grafana itself makes
(template variables, then the PostgreSQL data source's macros: :mod:`wearline.grafana`), and returns rows of the
shape its panel needs.

A query that names a column a migration renamed, a table the role may not read, or a row-level security policy that
hides every row from the dashboards fails here rather than as an empty panel in front of an operator.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.adapt import AdaptersMap

from wearline.db import connect
from wearline.grafana import (
    DATASOURCE_UID,
    DashboardQuery,
    GrafanaError,
    Substitution,
    Variable,
    load_dashboards,
    relative_time,
    resolve_variables,
)
from wearline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
PROVISIONING = ROOT / "deploy/grafana/provisioning/datasources"
READER = "wearline_readonly"

NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}
TIMES = {"timestamptz", "timestamp"}
TEXT = {"text", "varchar", "name", "bpchar"}


def _datasources() -> dict[str, dict[str, Any]]:
    out = {}
    for path in PROVISIONING.glob("*.yml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            out[ds["uid"]] = ds
    return out


# --- data: two tenants, readings, scores, remaining life, tickets, dead letters, ingest members ------------------

SENSORS = [("vibration_rms", "mm/s"), ("bearing_temp", "degC"), ("motor_current", "A")]
MACHINES = [("acme", "plant1", "line1", f"pump-00{i}") for i in (1, 2, 3)] + [("rival", "works", "hall", "fan-001")]


async def _fill(conn: psycopg.AsyncConnection[Any], now: datetime) -> None:
    cur = await conn.execute("SELECT to_regprocedure('ensure_partitions(date, date)') IS NOT NULL")
    if (await cur.fetchone() or [False])[0]:
        await conn.execute("SELECT ensure_partitions(%s, %s)", [(now - timedelta(days=8)).date(), now.date()])
    ids = {}
    for tenant, site, line, name in MACHINES:
        cur = await conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) ON CONFLICT (name) DO UPDATE SET name = excluded.name
                          RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, %(s)s FROM t
                          ON CONFLICT (tenant_id, name) DO UPDATE SET name = excluded.name RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, %(l)s FROM s
                          ON CONFLICT (site_id, name) DO UPDATE SET name = excluded.name RETURNING line_id)
               INSERT INTO machines (tenant_id, line_id, name) SELECT (SELECT tenant_id FROM t), line_id, %(m)s FROM l
               RETURNING machine_id""",
            {"t": tenant, "s": site, "l": line, "m": name},
        )
        ids[name] = (await cur.fetchone() or [0])[0]
        for position, (sensor, unit) in enumerate(SENSORS, 1):
            await conn.execute(
                "INSERT INTO sensors (machine_id, position, name, unit) VALUES (%s, %s, %s, %s)",
                [ids[name], position, sensor, unit],
            )
    # A day of readings every five minutes; fan-001 went silent three hours ago.
    async with conn.cursor().copy("COPY readings (machine_id, time, vals) FROM STDIN") as copy:
        for name, mid in ids.items():
            last = now - timedelta(hours=3) if name == "fan-001" else now
            t = now - timedelta(days=1)
            while t <= last:
                phase = (t - now).total_seconds() / 3600
                await copy.write_row([mid, t, [2.0 + 0.3 * math.sin(phase), 55.0 + math.cos(phase), 11.5]])
                t += timedelta(minutes=5)
    for name, when, detector, score in [
        ("pump-001", now - timedelta(hours=5), "ewma_mad", 9.1),
        ("pump-002", now - timedelta(hours=3), "ewma_mad", 12.4),
        ("pump-002", now - timedelta(hours=2), "knn:20261204-1", 4.2),
    ]:
        await conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            [ids[name], when, detector, score, score / 2, ["vibration_rms", "bearing_temp"]],
        )
    for name, mid in ids.items():
        rul = 100.0 if name == "pump-002" else 2000.0  # pump-002's lower bound is inside the week's horizon
        for h in range(24):
            await conn.execute(
                """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours,
                   upper_hours) VALUES (%s, %s, 'GbmRul', 'v1', %s, %s, %s)""",
                [mid, now - timedelta(hours=24 - h), rul - h, (rul - h) * 0.6, (rul - h) * 1.5],
            )
    for name, status, priority, opened, resolved in [
        ("pump-001", "resolved", 3, now - timedelta(hours=20), now - timedelta(hours=10)),
        ("pump-002", "open", 2, now - timedelta(hours=3), None),
        ("fan-001", "acknowledged", 3, now - timedelta(hours=2), None),
    ]:
        cur = await conn.execute(
            """INSERT INTO tickets (tenant_id, machine_id, reason, priority, status, title, first_seen, last_seen,
                                    opened_at, resolved_at)
               SELECT tenant_id, machine_id, 'anomaly', %s, %s, name || ' abnormal vibration', %s, %s, %s, %s
               FROM machines WHERE machine_id = %s RETURNING ticket_id""",
            [priority, status, opened, opened, opened, resolved, ids[name]],
        )
        ticket = (await cur.fetchone() or [0])[0]
        await conn.execute(
            "INSERT INTO ticket_events (ticket_id, at, kind, why) VALUES (%s, %s, 'opened', 'anomaly')",
            [ticket, opened],
        )
        if resolved is not None:
            await conn.execute(
                """INSERT INTO ticket_events (ticket_id, at, kind, actor, why, data)
                   VALUES (%s, %s, 'status', 'ana', 'bearing replaced', '{"from": "open", "to": "resolved"}')""",
                [ticket, resolved],
            )
    for minutes, topic, reason in [(30, "acme/plant1/line1/pump-009/telemetry", "not_json")] * 3 + [
        (90, "acme/plant1/line1/pump-001/telemetry", "bad_schema")
    ] * 2:
        await conn.execute(
            """INSERT INTO dead_letters (received_at, topic, reason, detail, payload)
               VALUES (%s, %s, %s, 'refused', '\\x00')""",
            [now - timedelta(minutes=minutes), topic, reason],
        )
    for identity, beat in [("wearline-0of2", now), ("wearline-1of2", now - timedelta(minutes=10))]:
        await conn.execute(
            """INSERT INTO ingest_members (identity, scheme, share, host, pid, started_at, heartbeat_at, heartbeat_s)
               VALUES (%s, 'partitioned', %s, 'host-a', 4242, %s, %s, 5)""",
            [identity, identity[-4:], now - timedelta(hours=1), beat],
        )
    await conn.commit()


# --- shapes ------------------------------------------------------------------------------------------------------


def _types(cur: psycopg.AsyncCursor[Any], adapters: AdaptersMap) -> list[tuple[str, str]]:
    out = []
    for col in cur.description or []:
        info = adapters.types.get(col.type_code)
        out.append((col.name, info.name if info else str(col.type_code)))
    return out


def _check_shape(q: DashboardQuery, cols: list[tuple[str, str]], rows: list[tuple[Any, ...]]) -> None:
    where = f"{q.dashboard}: {q.where}"
    assert rows, f"{where}: no rows from the test data"
    names = [n for n, _ in cols]
    assert len(set(names)) == len(names), f"{where}: duplicate column names {names}"
    kinds = dict(cols)

    def numeric_with_values(names: list[str]) -> None:
        assert names, f"{where}: no value column in {cols}"
        for n in names:
            assert kinds[n] in NUMERIC, f"{where}: column {n!r} is {kinds[n]}, a panel needs a number"
            i = [c for c, _ in cols].index(n)
            assert any(r[i] is not None for r in rows), f"{where}: column {n!r} has no value at all"

    if q.kind == "annotation":
        assert kinds.get("time") in TIMES | NUMERIC, f"{where}: an annotation needs a time column: {cols}"
        assert kinds.get("text") in TEXT, f"{where}: an annotation needs a text column: {cols}"
        return
    if q.fmt == "time_series":
        assert kinds.get("time") in TIMES | NUMERIC, f"{where}: a time series needs a 'time' column: {cols}"
        times = [r[names.index("time")] for r in rows]
        assert times == sorted(times), f"{where}: rows must come in time order"
        if "metric" in kinds:
            assert kinds["metric"] in TEXT, f"{where}: 'metric' names a series, so it must be text"
        numeric_with_values([n for n in names if n not in {"time", "metric"}])
    elif q.kind == "barchart":
        x = q.options.get("xField", names[0])
        assert kinds.get(x) in TEXT, f"{where}: the bars' field {x!r} must be text: {cols}"
        numeric_with_values([n for n in names if n != x])
    elif q.kind in {"histogram", "stat", "gauge", "bargauge"}:
        numeric_with_values(names)
    else:
        assert q.kind == "table", f"{where}: panel type {q.kind} has no expected shape here"


# --- tests -------------------------------------------------------------------------------------------------------


def test_every_dashboard_datasource_is_provisioned() -> None:
    provisioned = _datasources()
    assert {ds["type"] for ds in provisioned.values()} >= {"prometheus", "postgres"}
    assert [uid for uid, ds in provisioned.items() if ds["type"] == "postgres"] == [DATASOURCE_UID]
    for board in load_dashboards(DASHBOARDS):
        stack = list(board.model["panels"])
        used = set()
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            used |= {(t.get("datasource") or panel["datasource"])["uid"] for t in panel.get("targets", [])}
        used |= {v["datasource"]["uid"] for v in board.model["templating"]["list"] if "datasource" in v}
        assert used <= set(provisioned), f"{board.path.name} uses data sources nobody provisions"


@pytest.mark.timeout(120)
async def test_every_sql_query_of_every_dashboard_returns_rows_of_its_shape_as_the_readonly_role(
    migrated: Settings,
) -> None:
    uid = DATASOURCE_UID
    now = datetime.now(UTC).replace(microsecond=0)
    async with await connect(migrated.database) as owner:
        await _fill(owner, now)
    reader = migrated.model_copy(update={"database": migrated.database.model_copy(update={"role": READER})})
    ran: dict[str, int] = {}
    async with await connect(reader.database, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == (READER,)
        # Each dashboard at its own time range, then zoomed out to a month (a coarser $__interval; the machine's
        # sensors then come from the hourly rollup).
        for board, since in [(b, f) for b in load_dashboards(DASHBOARDS) for f in (None, "now-30d")]:
            time_range = board.model["time"]
            sub = Substitution(relative_time(since or time_range["from"], now), relative_time(time_range["to"], now))
            # Variables in their order, each query variable's rows its options (GrafanaError when there are none).
            variables = await resolve_variables(conn, board, sub, uid)
            ran[board.uid] = ran.get(board.uid, 0) + len(variables)
            for q in board.queries(uid):
                sql = sub.expand(q.sql)
                try:
                    cur = await conn.execute(sql)
                except psycopg.Error as exc:
                    raise AssertionError(f"{q.dashboard}: {q.where} fails: {exc}\n{sql}") from exc
                _check_shape(q, _types(cur, conn.adapters), await cur.fetchall())
                ran[board.uid] = ran.get(board.uid, 0) + 1
    print("SQL queries run per dashboard (two time ranges):", ran)
    assert set(ran) >= {"wearline-fleet", "wearline-machine", "wearline-ingest"}


def test_the_substitution_expands_as_grafana_does() -> None:
    """The substitutions the test above relies on, checked against Grafana's documented expansions."""
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    sub = Substitution(start, end, {"t": Variable("t", ["a", "o'b"], True), "m": Variable("m", ["7"], False)})
    assert sub.expand("x IN ($t) AND y = $m AND z = '${m}'") == "x IN ('a','o''b') AND y = 7 AND z = '7'"
    assert sub.expand("$__timeFilter(time)") == "time BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-02T00:00:00Z'"
    assert sub.expand("$__timeGroupAlias(time, '5m')") == 'floor(extract(epoch from time)/300)*300 AS "time"'
    assert sub.interval_s == 300  # a day over about a thousand points, rounded up to a round step
    assert sub.expand("$__timeGroup(time, $__interval)") == "floor(extract(epoch from time)/300)*300"
    with pytest.raises(GrafanaError, match="neither a variable"):
        sub.expand("$nope")
    with pytest.raises(GrafanaError, match="not emulated"):
        sub.expand("$__unixEpochFilter(t)")
    with pytest.raises(GrafanaError, match="not emulated"):
        sub.expand("$__timeGroup(time, '5m', 0)")
