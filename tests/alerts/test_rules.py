"""Alert rules on the real database (issue 12, item 1): anomaly duration and hysteresis, sensor thresholds and
vibration zones, machines and whole gateways gone silent, dead-letter surges, escalation per site.

Evidence goes in as ingest and analytics write it (readings, anomalies, dead letters); the rule passes run as the
worker runs them, with ``now`` in the test's hands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

import alerts
from alerts._watch import silent_machines
from tests.alerts.conftest import machine
from wearline.db import connect
from wearline.settings import AlertsSettings, Settings

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
Conn = psycopg.AsyncConnection[Any]
PREFIX = "wlt"


@pytest.fixture
async def conn(migrated: Settings) -> AsyncIterator[Conn]:
    """Tenant acme: plant-a with line-1 (pump-1a, pump-1b) and line-2 (pump-2), plant-b with line-9 (fan-9);
    every machine has the sensors vibration_rms (position 1) and bearing_temp_c (2)."""
    async with await connect(migrated.database) as c:
        await c.set_autocommit(True)
        await c.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    ty AS (INSERT INTO machine_types (name) VALUES ('pump'), ('fan') RETURNING type_id, name),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, n FROM t,
                          unnest(array['plant-a', 'plant-b']) n RETURNING site_id, name),
                    l AS (INSERT INTO lines (site_id, name)
                          SELECT site_id, n FROM s, unnest(array['line-1', 'line-2']) n WHERE s.name = 'plant-a'
                          UNION ALL SELECT site_id, 'line-9' FROM s WHERE s.name = 'plant-b'
                          RETURNING line_id, name),
                    m AS (INSERT INTO machines (tenant_id, line_id, name, type_id)
                          SELECT (SELECT tenant_id FROM t), l.line_id, mn,
                                 (SELECT type_id FROM ty WHERE ty.name = CASE WHEN mn LIKE 'fan%%' THEN 'fan'
                                                                             ELSE 'pump' END)
                          FROM l JOIN (VALUES ('line-1', 'pump-1a'), ('line-1', 'pump-1b'), ('line-2', 'pump-2'),
                                              ('line-9', 'fan-9')) v(ln, mn) ON v.ln = l.name
                          RETURNING machine_id)
               INSERT INTO sensors (machine_id, position, name)
               SELECT machine_id, p, (array['vibration_rms', 'bearing_temp_c'])[p] FROM m, generate_series(1, 2) p"""
        )
        yield c


async def readings(conn: Conn, machine_id: int, start: datetime, step_s: float, values: list[float]) -> datetime:
    """Readings as ingest writes them (vibration, then a steady bearing temperature); returns the last time."""
    times = [start + timedelta(seconds=i * step_s) for i in range(len(values))]
    await conn.execute("SELECT ensure_partitions(%s, %s)", [times[0].date(), times[-1].date() + timedelta(days=1)])
    await conn.execute(
        """INSERT INTO readings (machine_id, time, vals)
           SELECT %s, t, ARRAY[v, 60.0] FROM unnest(%s::timestamptz[], %s::float8[]) AS u(t, v)""",
        [machine_id, times, values],
    )
    return times[-1]


def rules_from(tmp_path: Path, text: str, **settings: Any) -> tuple[AlertsSettings, alerts.RuleSet]:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    s = AlertsSettings(rules=[path], resolve_hold_s=600, **settings)
    return s, alerts.load_rules(s)


async def watch(conn: Conn, s: AlertsSettings, rules: alerts.RuleSet, now: datetime) -> alerts.WatchSummary:
    async with conn.transaction():
        done = await alerts.watch_readings(conn, s, rules, now=now)
        resolved = await alerts.resolve_cleared(conn, s, now=now)
    print(f"pass at {now:%H:%M:%S}: {done}, resolved {resolved}")
    return done


async def all_tickets(conn: Conn) -> list[alerts.Ticket]:
    return await alerts.list_tickets(conn, live_only=False)


async def kinds(conn: Conn, ticket_id: int) -> list[str]:
    _, history = await alerts.ticket_history(conn, ticket_id)
    return [e.kind for e in history]


THRESHOLD = """
[[rule]]
name = "vibration-high"
kind = "threshold"
where = { machine_type = "pump" }
sensor = "vibration_rms"
above = 8.0
critical = 11.0
clear_at = 6.0
for_s = 300
priority = 3
"""


async def test_a_threshold_opens_after_its_duration_rises_to_critical_holds_by_hysteresis_and_clears(
    conn: Conn, tmp_path: Path
) -> None:
    s, rules = rules_from(tmp_path, THRESHOLD)
    pump = await machine(conn, "pump-1a")
    t = await readings(conn, pump, T0, 10, [5.0] * 60)
    await watch(conn, s, rules, T0)
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [9.0] * 20)  # 190 s above: under for_s
    await watch(conn, s, rules, T0)
    assert await all_tickets(conn) == [], "a breach shorter than for_s opens nothing"
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [9.0] * 12)  # 310 s above
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert (ticket.reason, ticket.priority, ticket.status, ticket.machine) == (
        "vibration-high",
        3,
        "open",
        "plant-a/line-1/pump-1a",
    )
    assert ticket.details["sensor"] == "vibration_rms"
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [9.5] * 30)
    await watch(conn, s, rules, T0)
    assert await kinds(conn, ticket.ticket_id) == ["opened"], "a breach that goes on is not an event per pass"
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [12.0] * 3)
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert ticket.priority == 1, "past critical the same ticket becomes urgent"
    assert await kinds(conn, ticket.ticket_id) == ["opened", "occurrence"]
    # 7.0 is under `above` but over `clear_at`: hysteresis keeps the breach, and with it the ticket, alive.
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [7.0] * 90)
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert ticket.status == "open"
    assert ticket.last_seen == t, "the ongoing breach keeps the ticket's evidence current"
    t = await readings(conn, pump, t + timedelta(seconds=10), 10, [5.0] * 30)  # cleared, 300 s < hold 600 s
    await watch(conn, s, rules, T0)
    assert (await all_tickets(conn))[0].status == "open"
    await readings(conn, pump, t + timedelta(seconds=10), 10, [5.0] * 40)  # 700 s clear
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert ticket.status == "resolved"
    other = await machine(conn, "fan-9")
    await readings(conn, other, T0, 10, [20.0] * 100)
    await watch(conn, s, rules, T0)
    assert len(await all_tickets(conn)) == 1, "the rule is for pumps: a fan at 20 mm/s is not its business"


async def test_a_backlog_ten_times_the_rows_per_pass_is_read_once_across_passes(conn: Conn, tmp_path: Path) -> None:
    """Each pass reads at most 2,000 new readings per machine; 25,000 waiting take 13 passes and are each looked at
    exactly once, and the breach at their end is found."""
    s, rules = rules_from(tmp_path, THRESHOLD)
    pump = await machine(conn, "pump-2")
    await readings(conn, pump, T0 - timedelta(hours=2), 1, [5.0])  # seen first: the machine's watch starts here
    await watch(conn, s, rules, T0)
    await readings(conn, pump, T0, 1, [5.0] * 24_000 + [9.0] * 1_000)
    seen, passes = 0, 0
    while (done := await watch(conn, s, rules, T0)).readings:
        seen += done.readings
        passes += 1
    print(f"{seen} readings in {passes} passes")
    assert (seen, passes) == (25_000, 13)
    [ticket] = await all_tickets(conn)
    assert ticket.reason == "vibration-high"
    assert ticket.details["since"] == (T0 + timedelta(seconds=24_000)).isoformat()


async def test_vibration_zones_open_in_zone_c_and_turn_urgent_in_zone_d(conn: Conn, tmp_path: Path) -> None:
    s, rules = rules_from(
        tmp_path,
        """
[[rule]]
name = "vibration-zone"
kind = "vibration_zone"
sensor = "vibration_rms"
machine_class = "II"
for_s = 60
""",
    )
    fan = await machine(conn, "fan-9")
    t = await readings(conn, fan, T0, 10, [1.0] * 10 + [2.5] * 10)  # zone B: fine
    await watch(conn, s, rules, T0)
    assert await all_tickets(conn) == []
    t = await readings(conn, fan, t + timedelta(seconds=10), 10, [3.0] * 8)  # zone C for 70 s
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert (ticket.priority, ticket.reason) == (3, "vibration-zone")
    await readings(conn, fan, t + timedelta(seconds=10), 10, [7.5])  # zone D
    await watch(conn, s, rules, T0)
    [ticket] = await all_tickets(conn)
    assert ticket.priority == 1
    assert ticket.details["critical"] == 7.1


SILENCE = """
[[rule]]
name = "no-data"
kind = "silence"
factor = 10
min_s = 300
"""


async def test_a_silent_machine_gets_a_ticket_and_a_silent_gateway_one_for_its_line(conn: Conn, tmp_path: Path) -> None:
    s, rules = rules_from(tmp_path, SILENCE)
    now = T0 + timedelta(hours=1)
    ids = {n: await machine(conn, n) for n in ("pump-1a", "pump-1b", "pump-2", "fan-9")}
    for name, stops in [("pump-1a", 40), ("pump-1b", 35), ("pump-2", 57), ("fan-9", 60)]:
        await readings(conn, ids[name], T0, 10, [1.0] * (stops * 6))
    await watch(conn, s, rules, now)
    found = {t.machine: t for t in await all_tickets(conn)}
    print(sorted(found))
    # line-1's two machines are both silent (20 and 25 min > 10 x their 10 s): one ticket for the gateway, none
    # per machine; pump-2 stopped 3 min ago (under min_s); fan-9 is live.
    assert set(found) == {"plant-a/line-1/"}
    gateway = found["plant-a/line-1/"]
    assert (gateway.reason, gateway.details["machines"]) == ("no-data", 2)
    assert await silent_machines(conn) == 2, "the gateway's ticket counts both of its machines"
    assert alerts.ticket_json(gateway)["machine"] is None
    await watch(conn, s, rules, now + timedelta(minutes=2))
    found = {t.machine: t for t in await all_tickets(conn)}
    assert set(found) == {"plant-a/line-1/", "plant-a/line-2/pump-2"}, "pump-2 is silent too now (5 min 10 s)"
    assert found["plant-a/line-1/"].occurrences == 1, "still dark is not new evidence"
    assert await silent_machines(conn) == 3
    # The gateway comes back: readings resume and run past the hold period, and its ticket resolves.
    back = now + timedelta(minutes=3)
    for name in ("pump-1a", "pump-1b"):
        await readings(conn, ids[name], back, 10, [1.0] * 80)
    await watch(conn, s, rules, back + timedelta(seconds=800))
    status = {t.machine: t.status for t in await all_tickets(conn)}
    # fan-9, whose data stopped at T0 + 1 h, is now 16 minutes behind line-1's newest reading: silent in turn.
    assert status == {"plant-a/line-1/": "resolved", "plant-a/line-2/pump-2": "open", "plant-b/line-9/fan-9": "open"}
    assert await silent_machines(conn) == 2, "a resolved ticket covers nobody"


async def offline(conn: Conn, machine_id: int, since: datetime | None) -> None:
    """What ingest writes on a Sparkplug DDEATH or NDEATH (the time of the death), and clears on the next birth."""
    await conn.execute("UPDATE machines SET offline_since = %s WHERE machine_id = %s", [since, machine_id])


async def test_a_sparkplug_death_is_silence_at_once_until_data_flows_again(conn: Conn, tmp_path: Path) -> None:
    """Every machine sends every 10 s up to the pass: by the interval rule none is silent. Then, as ingest records
    them in offline_since: pump-2's device dies, both devices of line-1 die (its edge node lives on), line-2's edge
    node dies. Each ticket opens at the next pass naming the death; readings while still marked dead keep them open;
    they resolve once the births cleared the marks and readings ran past the hold. fan-9 (JSON) sends on, no ticket."""
    s, rules = rules_from(tmp_path, SILENCE)
    ids = {n: await machine(conn, n) for n in ("pump-1a", "pump-1b", "pump-2", "fan-9")}
    for machine_id in ids.values():
        await readings(conn, machine_id, T0, 10, [1.0] * 360)
    # Each edge node's own machine, named after its line, as its NBIRTH registers it (no values: never watched).
    cur = await conn.execute(
        """INSERT INTO machines (tenant_id, line_id, name)
           SELECT tenant_id, line_id, l.name FROM machines m JOIN lines l USING (line_id)
           WHERE m.name IN ('pump-1a', 'pump-2') RETURNING name, machine_id"""
    )
    nodes = {str(name): int(i) for name, i in await cur.fetchall()}
    now = T0 + timedelta(seconds=3600)
    await watch(conn, s, rules, now)
    assert await all_tickets(conn) == [], "10 s of quiet is not silence"
    died = T0 + timedelta(seconds=3595)
    await offline(conn, ids["pump-2"], died)
    await watch(conn, s, rules, now + timedelta(seconds=1))
    [ticket] = await all_tickets(conn)
    assert (ticket.machine, ticket.reason, ticket.kind) == ("plant-a/line-2/pump-2", "no-data", "corrective")
    assert "Sparkplug device pump-2 reported its death at 2026-06-01 08:59:55" in ticket.title
    assert ticket.details["sparkplug_death"] == {"reported_by": "device", "name": "pump-2", "at": died.isoformat()}
    _, history = await alerts.ticket_history(conn, ticket.ticket_id)
    assert "reported its death" in history[0].why
    # Both devices of line-1 die, its edge node does not: one ticket for the gateway, naming the devices.
    for k, name in enumerate(("pump-1a", "pump-1b")):
        await offline(conn, ids[name], died + timedelta(seconds=3 - k))
    # line-2's edge node dies: its own machine and pump-2 (which keeps its device's earlier time).
    await offline(conn, nodes["line-2"], died + timedelta(seconds=4))
    await watch(conn, s, rules, now + timedelta(seconds=2))
    found = {t.machine: t for t in await all_tickets(conn)}
    assert set(found) == {"plant-a/line-2/pump-2", "plant-a/line-1/", "plant-a/line-2/"}
    devices = found["plant-a/line-1/"]
    assert "Sparkplug devices of edge node line-1 reported their deaths, the first at 2026-06-01 08:59:57" in (
        devices.title
    )
    assert devices.details["machines"] == 2
    node = found["plant-a/line-2/"]
    assert "Sparkplug edge node line-2 reported its death at 2026-06-01 08:59:59" in node.title
    assert (node.details["machines"], node.details["last_reading"]) == (2, (now - timedelta(seconds=10)).isoformat())
    assert await silent_machines(conn) == 5
    # Readings of pump-2 over ten times the hold while it is still marked dead (fan-9 sends on): no resolution, no
    # new ticket, no occurrence per pass.
    hold = timedelta(seconds=s.resolve_hold_s)
    for k in range(10):
        start = now + k * hold + timedelta(seconds=10)
        for name in ("pump-2", "fan-9"):
            await readings(conn, ids[name], start, 10, [1.0] * 60)
        await watch(conn, s, rules, start + hold - timedelta(seconds=10))
    found = {t.machine: t for t in await all_tickets(conn)}
    assert {m: (t.status, t.occurrences) for m, t in found.items()} == {
        "plant-a/line-2/pump-2": ("open", 1),
        "plant-a/line-1/": ("open", 1),
        "plant-a/line-2/": ("open", 1),
    }
    # The births clear the marks; once readings run past the hold, every ticket resolves as plain silence does.
    later = now + 10 * hold
    for machine_id in [*ids.values(), *nodes.values()]:
        await offline(conn, machine_id, None)
    for machine_id in ids.values():
        await readings(conn, machine_id, later + timedelta(seconds=10), 10, [1.0] * 70)
    await watch(conn, s, rules, later + timedelta(seconds=700))
    assert {t.machine: t.status for t in await all_tickets(conn)} == dict.fromkeys(found, "resolved")
    assert await silent_machines(conn) == 0


async def test_the_worker_exports_how_many_machines_are_silent(migrated: Settings, conn: Conn, tmp_path: Path) -> None:
    """wearline_alerts_silent_machines, what Prometheus's WearlineMachinesSilent reads: line-1's gateway (two
    machines) and pump-2 went quiet 20 minutes ago, fan-9 still sends."""
    s, _ = rules_from(tmp_path, SILENCE, poll_interval_s=0.2)
    ids = {n: await machine(conn, n) for n in ("pump-1a", "pump-1b", "pump-2", "fan-9")}
    now = datetime.now(UTC)
    for name in ("pump-1a", "pump-1b", "pump-2"):
        await readings(conn, ids[name], now - timedelta(minutes=30), 10, [1.0] * 60)
    await readings(conn, ids["fan-9"], now - timedelta(minutes=30), 10, [1.0] * 180)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run_alerts(migrated.model_copy(update={"alerts": s}), stop, registry=registry))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if registry.get_sample_value("wearline_alerts_silent_machines") == 3:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    print({t.machine: t.details.get("machines") for t in await all_tickets(conn)})
    assert registry.get_sample_value("wearline_alerts_silent_machines") == 3


async def test_a_surge_of_dead_letters_from_one_gateway_opens_one_ticket_on_its_line(
    conn: Conn, tmp_path: Path
) -> None:
    s, rules = rules_from(
        tmp_path,
        """
[[rule]]
name = "bad-data"
kind = "dead_letters"
per_minute = 60
window_s = 300
""",
    )
    now = datetime.now(UTC)

    async def dead(topic: str, n: int, reason: str = "bad_json") -> None:
        await conn.execute(
            """INSERT INTO dead_letters (received_at, topic, reason, detail, payload)
               SELECT %s - g * interval '100 ms', %s, %s, 'x', '\\x00' FROM generate_series(1, %s) g""",
            [now, topic, reason, n],
        )

    await dead(f"{PREFIX}/acme/plant-a/line-1/pump-1a/telemetry", 500)
    await dead(f"{PREFIX}/acme/plant-a/line-1/pump-1b/telemetry", 250, "ts_future")
    await dead(f"{PREFIX}/acme/plant-a/line-2/pump-2/telemetry", 250)  # 50/min: under the rate
    await dead(f"{PREFIX}/intruder/x/y/z/telemetry", 5000)  # no such tenant: nobody's ticket
    await dead("other/acme/plant-b/line-9/fan-9/telemetry", 5000)  # not under this installation's prefix
    async with conn.transaction():
        opened = await alerts.watch_dead_letters(conn, s, rules, PREFIX, now=now)
    [ticket] = await all_tickets(conn)
    assert opened == 1
    assert (ticket.machine, ticket.reason, ticket.priority) == ("plant-a/line-1/", "bad-data", 2)
    assert ticket.details["dead_letters"] == 750
    assert ticket.details["reasons"] == ["bad_json", "ts_future"]
    async with conn.transaction():
        assert await alerts.watch_dead_letters(conn, s, rules, PREFIX, now=now + timedelta(seconds=5)) == 0
    [ticket] = await all_tickets(conn)
    assert ticket.occurrences == 1


async def anomaly(conn: Conn, machine_id: int, at: datetime, ratio: float) -> None:
    await conn.execute(
        """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
           VALUES (%s, %s, 'zscore', %s, 6.0, '{vibration_rms}')""",
        [machine_id, at, 6.0 * ratio],
    )


async def test_an_anomaly_rule_needs_its_duration_and_then_holds_by_hysteresis(conn: Conn, tmp_path: Path) -> None:
    s, rules = rules_from(
        tmp_path,
        """
[[rule]]
name = "anomaly"
kind = "anomaly"
open_ratio = 1.5
hold_ratio = 1.1
for_s = 600
max_gap_s = 120
""",
    )
    pump = await machine(conn, "pump-2")

    async def run() -> int:
        opened, _ = await alerts.process_anomalies(conn, s, now=T0, rules=rules)
        return opened

    for i in range(6):  # 5 minutes at twice the threshold: under for_s
        await anomaly(conn, pump, T0 + timedelta(minutes=i), 2.0)
    await anomaly(conn, pump, T0 + timedelta(minutes=9), 1.3)  # weaker than open_ratio, and a gap over max_gap_s
    assert await run() == 0
    for i in range(10, 21):  # a new run of 10 minutes: the gap broke the first one
        await anomaly(conn, pump, T0 + timedelta(minutes=i), 2.0)
    assert await run() == 1
    [ticket] = await all_tickets(conn)
    assert ticket.first_seen == T0 + timedelta(minutes=20), "opened when the run reached 10 minutes, not before"
    await anomaly(conn, pump, T0 + timedelta(minutes=40), 1.2)  # under open_ratio, over hold_ratio: appended
    await anomaly(conn, pump, T0 + timedelta(minutes=41), 1.05)  # under hold_ratio: not evidence
    assert await run() == 0
    [ticket] = await all_tickets(conn)
    assert (ticket.occurrences, ticket.last_seen) == (2, T0 + timedelta(minutes=40))


async def test_escalation_follows_the_sites_policy(conn: Conn, tmp_path: Path) -> None:
    s, rules = rules_from(
        tmp_path,
        """
[[escalation]]
where = { site = "plant-b" }
ack_timeout_s = 600
levels = ["line lead", "plant manager"]
""",
        ack_timeout_s=1800,
        escalation_levels=["shift supervisor"],
    )
    for name in ("pump-2", "fan-9"):
        await anomaly(conn, await machine(conn, name), T0, 3.0)
    await alerts.process_anomalies(conn, s, now=T0, rules=rules)
    async with conn.transaction():
        early = await alerts.escalate_unacknowledged(conn, s, now=T0 + timedelta(minutes=11), rules=rules)
    fan = {t.machine: t.ticket_id for t in await all_tickets(conn)}["plant-b/line-9/fan-9"]
    assert early == [(fan, 1, "line lead")], "plant-b escalates after 10 minutes, plant-a not yet"
    async with conn.transaction():
        later = await alerts.escalate_unacknowledged(conn, s, now=T0 + timedelta(minutes=31), rules=rules)
    assert sorted(n for _, _, n in later) == ["plant manager", "shift supervisor"]


async def test_the_worker_pass_applies_the_settings_rule_files(migrated: Settings, conn: Conn, tmp_path: Path) -> None:
    """alerts_pass, as the worker calls it, reads the files of alerts.rules: a threshold rule there opens a ticket
    from readings alone."""
    s, _ = rules_from(tmp_path, THRESHOLD.replace("for_s = 300", "for_s = 0"))
    pump = await machine(conn, "pump-1b")
    await readings(conn, pump, datetime.now(UTC) - timedelta(minutes=5), 10, [5.0, 9.0, 9.5])
    done = await alerts.alerts_pass(conn, s, topic_prefix=PREFIX)
    assert (done.tickets_opened, done.readings_watched) == (1, 3)
    [ticket] = await all_tickets(conn)
    assert ticket.reason == "vibration-high"


async def test_one_worker_at_a_time_reads_new_readings(migrated: Settings, conn: Conn, tmp_path: Path) -> None:
    """A second alerts worker skips the readings step while the first holds it: each reading is looked at once."""
    s, rules = rules_from(tmp_path, THRESHOLD)
    await readings(conn, await machine(conn, "pump-1a"), T0, 10, [5.0] * 50)
    async with await connect(migrated.database) as other:
        async with conn.transaction():
            first = await alerts.watch_readings(conn, s, rules, now=T0)
            async with other.transaction():
                second = await alerts.watch_readings(other, s, rules, now=T0)
        assert (first.readings, second.readings, second.machines) == (50, 0, 0)
        async with other.transaction():
            assert (await alerts.watch_readings(other, s, rules, now=T0)).readings == 0, "already seen"
