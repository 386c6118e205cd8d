"""The ticket lifecycle on the real database, with the clock in the test's hands (issue 12, items 2 and 9).

Evidence goes in as the analytics worker writes it (anomalies, remaining-life estimates, watermarks); the alerts
pass and the lifecycle functions run as the worker and the CLI run them, with ``now`` moved by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import alerts
from tests.alerts.conftest import machine
from wearline.db import connect
from wearline.settings import AlertsSettings, Settings

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
RULES = AlertsSettings(
    resolve_hold_s=3600,
    reopen_window_s=6 * 3600,
    ack_timeout_s=1800,
    rul_horizon_h=100,
    escalation_levels=["supervisor", "manager"],
    teams={"acme/plant-a": "mechanics", "acme/plant-a/line-2": "line-2 crew"},
)

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def conn(migrated: Settings) -> AsyncIterator[Conn]:
    async with await connect(migrated.database) as c:
        await c.set_autocommit(True)
        await c.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, n FROM s, unnest(array['line-1', 'line-2']) n
                          RETURNING line_id, name)
               INSERT INTO machines (tenant_id, line_id, name)
               SELECT (SELECT tenant_id FROM t), line_id, 'pump-' || right(name, 1) FROM l"""
        )
        yield c


async def anomaly(conn: Conn, machine_id: int, at: datetime, score: float = 9.0) -> None:
    """An anomaly as analytics records it, with its watermark moved to the anomaly's time."""
    await conn.execute(
        """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
           VALUES (%s, %s, 'zscore', %s, 6.0, '{vibration_rms}')""",
        [machine_id, at, score],
    )
    await watched(conn, machine_id, at)


async def watched(conn: Conn, machine_id: int, through: datetime) -> None:
    """Analytics scored the machine's readings up to ``through`` (and found nothing new)."""
    await conn.execute(
        """INSERT INTO analytics_watermarks (machine_id, detector, last_time) VALUES (%s, 'zscore', %s)
           ON CONFLICT (machine_id, detector) DO UPDATE SET last_time = greatest(analytics_watermarks.last_time,
                                                                                 excluded.last_time)""",
        [machine_id, through],
    )


async def run_pass(conn: Conn, now: datetime) -> tuple[int, list[tuple[int, int, str]], list[int]]:
    opened, _ = await alerts.process_anomalies(conn, RULES, now=now)
    opened_r, _ = await alerts.process_rul(conn, RULES, now=now)
    async with conn.transaction():
        escalated = await alerts.escalate_unacknowledged(conn, RULES, now=now)
        resolved = await alerts.resolve_cleared(conn, RULES, now=now)
    return opened + opened_r, escalated, resolved


async def tickets(conn: Conn) -> list[alerts.Ticket]:
    return await alerts.list_tickets(conn, live_only=False)


async def events(conn: Conn, ticket_id: int) -> list[tuple[str, str, str]]:
    _, history = await alerts.ticket_history(conn, ticket_id)
    return [(e.kind, e.actor, e.why) for e in history]


async def test_new_evidence_appends_to_the_live_ticket_never_a_second_one(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    for i in range(5):
        await anomaly(conn, pump, T0 + timedelta(minutes=i), score=7.0 + 18 * (i == 3))  # 25 / 6 > 4: urgent
    assert (await run_pass(conn, T0))[0] == 1
    [t] = await tickets(conn)
    assert (t.occurrences, t.status, t.kind, t.team) == (5, "open", "corrective", "mechanics")
    assert t.priority == 1, "the strongest evidence sets the priority"
    kinds = [k for k, _, _ in await events(conn, t.ticket_id)]
    assert kinds == ["opened", "assigned", "occurrence", "occurrence", "occurrence", "occurrence"]


async def test_two_workers_racing_on_the_same_evidence_file_one_ticket(migrated: Settings, conn: Conn) -> None:
    """Each worker holds its own anomalies (SKIP LOCKED), all of one machine: without the per-machine lock both
    would find no live ticket and the second insert would fail on the unique index."""
    pump = await machine(conn, "pump-1")
    for i in range(400):
        await conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold)
               VALUES (%s, %s, 'zscore', 8, 6)""",
            [pump, T0 + timedelta(seconds=i)],
        )

    async def worker() -> tuple[int, int]:
        async with await connect(migrated.database) as c:
            return await alerts.process_anomalies(c, RULES, now=T0, limit=50)

    results: list[tuple[int, int]] = []
    for _ in range(4):
        results += await asyncio.gather(worker(), worker())
    print(f"(opened, handled) per worker pass: {results}")
    assert sum(h for _, h in results) == 400, "every anomaly handled exactly once"
    assert sum(o for o, _ in results) == 1, "one ticket opened"
    [t] = await tickets(conn)
    assert t.occurrences == 400


async def test_people_move_a_ticket_through_its_life_and_every_change_says_who_and_why(conn: Conn) -> None:
    pump = await machine(conn, "pump-2")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    [t] = await tickets(conn)
    assert t.team == "line-2 crew", "the line's team wins over the site's"
    async with conn.transaction():
        await alerts.set_status(conn, t.ticket_id, "acknowledged", actor="ana", why="seen on the board", now=T0)
        await alerts.assign(conn, t.ticket_id, team=None, assignee="bo", actor="ana", why="bearing expert", now=T0)
        await alerts.comment(conn, t.ticket_id, "ordered bearing 6204", actor="bo", now=T0)
        await alerts.set_status(conn, t.ticket_id, "in_progress", actor="bo", now=T0)
        await alerts.set_status(conn, t.ticket_id, "resolved", actor="bo", why="bearing replaced", now=T0)
        await alerts.set_status(conn, t.ticket_id, "closed", actor="ana", why="vibration back to normal", now=T0)
    with pytest.raises(alerts.TicketError, match=r"#\d+ is closed: it cannot become open; it can become nothing"):
        async with conn.transaction():
            await alerts.set_status(conn, t.ticket_id, "open", actor="ana", now=T0)
    with pytest.raises(alerts.TicketError, match=r"no ticket #999999"):
        async with conn.transaction():
            await alerts.set_status(conn, 999999, "acknowledged", actor="ana", now=T0)
    history = await events(conn, t.ticket_id)
    assert history[2:] == [
        ("status", "ana", "seen on the board"),
        ("assigned", "ana", "bearing expert"),
        ("comment", "bo", "ordered bearing 6204"),
        ("status", "bo", ""),
        ("status", "bo", "bearing replaced"),
        ("status", "ana", "vibration back to normal"),
    ]
    [t] = await tickets(conn)
    assert (t.status, t.assignee, t.team) == ("closed", "bo", "line-2 crew")


@pytest.mark.parametrize(
    ("start", "to"), [("open", "closed"), ("acknowledged", "open"), ("in_progress", "acknowledged")]
)
async def test_a_transition_the_status_does_not_allow_is_refused_and_changes_nothing(
    conn: Conn, start: str, to: str
) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    [t] = await tickets(conn)
    if start != "open":
        async with conn.transaction():
            await alerts.set_status(conn, t.ticket_id, start, actor="ana", now=T0)  # type: ignore[arg-type]
    before = await events(conn, t.ticket_id)
    with pytest.raises(alerts.TicketError, match=f"is {start}: it cannot become {to}"):
        async with conn.transaction():
            await alerts.set_status(conn, t.ticket_id, to, actor="ana", now=T0)  # type: ignore[arg-type]
    assert await events(conn, t.ticket_id) == before
    assert (await tickets(conn))[0].status == start


async def test_auto_resolve_waits_for_the_hold_period_of_watched_readings(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    await watched(conn, pump, T0 + timedelta(minutes=59))
    assert (await run_pass(conn, T0 + timedelta(hours=5)))[2] == [], "59 min watched: not yet clear"
    # The machine went quiet (no readings): the wall clock moving on does not make it clear.
    assert (await tickets(conn))[0].status == "open"
    await watched(conn, pump, T0 + timedelta(minutes=60))
    [t] = await tickets(conn)
    assert (await run_pass(conn, T0 + timedelta(hours=5)))[2] == [t.ticket_id]
    [t] = await tickets(conn)
    assert t.status == "resolved"
    assert (await events(conn, t.ticket_id))[-1] == (
        "status",
        "wearline",
        "condition clear: no new evidence for 1 h of readings",
    )


async def test_recurrence_within_the_window_reopens_after_it_opens_a_new_ticket(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    await watched(conn, pump, T0 + timedelta(hours=1))
    await run_pass(conn, T0)
    [first] = await tickets(conn)
    assert first.status == "resolved"
    await anomaly(conn, pump, T0 + timedelta(hours=5, minutes=59))  # within 6 h of the last evidence
    assert (await run_pass(conn, T0 + timedelta(hours=6)))[0] == 1
    [t] = await tickets(conn)
    assert (t.ticket_id, t.status, t.reopened, t.occurrences) == (first.ticket_id, "open", 1, 2)
    assert (await events(conn, t.ticket_id))[-1][0] == "reopened"
    # Resolved again, then a recurrence after the window: a new ticket; the old one stays resolved.
    async with conn.transaction():
        await alerts.set_status(conn, t.ticket_id, "resolved", actor="bo", why="fixed", now=T0 + timedelta(hours=7))
    await anomaly(conn, pump, T0 + timedelta(hours=12, minutes=1))
    assert (await run_pass(conn, T0 + timedelta(hours=13)))[0] == 1
    statuses = sorted((x.ticket_id, x.status) for x in await tickets(conn))
    assert statuses == [(first.ticket_id, "resolved"), (statuses[1][0], "open")]
    assert statuses[1][0] != first.ticket_id


async def test_a_closed_ticket_is_never_reopened(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    [t] = await tickets(conn)
    async with conn.transaction():
        await alerts.set_status(conn, t.ticket_id, "resolved", actor="bo", now=T0)
        await alerts.set_status(conn, t.ticket_id, "closed", actor="bo", now=T0)
    await anomaly(conn, pump, T0 + timedelta(minutes=5))
    await run_pass(conn, T0 + timedelta(minutes=5))
    assert sorted(x.status for x in await tickets(conn)) == ["closed", "open"]


async def test_escalation_when_nobody_acknowledges_and_not_after(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0, score=13)  # ratio 2.2: priority 2
    await run_pass(conn, T0)
    [t] = await tickets(conn)
    assert t.priority == 2
    assert (await run_pass(conn, T0 + timedelta(minutes=29, seconds=59)))[1] == []
    assert (await run_pass(conn, T0 + timedelta(minutes=30)))[1] == [(t.ticket_id, 1, "supervisor")]
    assert (await run_pass(conn, T0 + timedelta(minutes=45)))[1] == [], "the next escalation waits a whole timeout"
    assert (await run_pass(conn, T0 + timedelta(minutes=60)))[1] == [(t.ticket_id, 2, "manager")]
    assert (await run_pass(conn, T0 + timedelta(minutes=90)))[1] == [(t.ticket_id, 3, "manager")], "past the last"
    [t] = await tickets(conn)
    assert (t.priority, t.escalation_level) == (1, 3), "one priority step per escalation, never above P1"
    async with conn.transaction():
        await alerts.set_status(conn, t.ticket_id, "acknowledged", actor="ana", now=T0 + timedelta(minutes=95))
    assert (await run_pass(conn, T0 + timedelta(hours=10)))[1] == [], "acknowledged: no more escalation"
    escalations = [e for e in await events(conn, t.ticket_id) if e[0] == "escalated"]
    assert escalations == [("escalated", "wearline", "not acknowledged within 30 min")] * 3


async def test_two_workers_escalate_a_ticket_once(migrated: Settings, conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)

    async def worker() -> list[tuple[int, int, str]]:
        async with await connect(migrated.database) as c, c.transaction():
            return await alerts.escalate_unacknowledged(c, RULES, now=T0 + timedelta(hours=1))

    a, b = await asyncio.gather(worker(), worker())
    assert len(a + b) == 1


async def test_remaining_life_under_the_horizon_is_a_predictive_ticket_due_before_the_failure(conn: Conn) -> None:
    pump, other = await machine(conn, "pump-1"), await machine(conn, "pump-2")
    estimates = [
        (other, T0, 300.0, 150.0, 500.0),  # lower bound past the 100 h horizon: no ticket
        (pump, T0, 200.0, 120.0, 260.0),  # not yet
        (pump, T0 + timedelta(hours=1), 60.0, 40.0, 90.0),  # under: a ticket, due in 40 h
        (pump, T0 + timedelta(hours=2), 50.0, 10.0, 80.0),  # worse: same ticket, more urgent, due sooner
    ]
    for m, at, rul, lower, upper in estimates:
        await conn.execute(
            """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
               VALUES (%s, %s, 'gbm', 'v1', %s, %s, %s)""",
            [m, at, rul, lower, upper],
        )
    assert (await run_pass(conn, T0 + timedelta(hours=2)))[0] == 1
    [t] = await tickets(conn)
    assert (t.reason, t.kind, t.occurrences) == ("remaining_life", "predictive", 2)
    assert t.due_at == T0 + timedelta(hours=2) + timedelta(hours=10)
    assert t.priority == 1, "10 h of a 100 h horizon"
    assert "in 10-80 h" in t.title
    cur = await conn.execute("SELECT count(*) FROM rul_estimates WHERE handled_at IS NULL")
    assert await cur.fetchone() == (0,), "every estimate handled, those above the horizon too"
    # Estimates that stay above the horizon for the hold period clear it.
    await conn.execute(
        """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
           VALUES (%s, %s, 'gbm', 'v1', 900, 700, 1100)""",
        [pump, T0 + timedelta(hours=3)],
    )
    assert (await run_pass(conn, T0 + timedelta(hours=3)))[2] == [t.ticket_id]


@pytest.mark.parametrize(("lower", "priority"), [(12.5, 1), (12.6, 2), (25, 2), (25.1, 3), (50, 3), (50.1, 4), (99, 4)])
def test_priority_from_remaining_life(lower: float, priority: int) -> None:
    assert alerts.priority_for_rul(lower, 100) == priority


async def test_time_to_acknowledge_and_to_resolve_whoever_made_the_change(conn: Conn) -> None:
    pump = await machine(conn, "pump-1")
    await anomaly(conn, pump, T0)
    await run_pass(conn, T0)
    start, none = await alerts.lifecycle_durations(conn, None)
    assert none == [], "what happened before the worker started is not counted"
    [t] = await tickets(conn)
    async with conn.transaction():
        await alerts.set_status(conn, t.ticket_id, "acknowledged", actor="ana", now=T0 + timedelta(minutes=10))
        await alerts.set_status(conn, t.ticket_id, "in_progress", actor="bo", now=T0 + timedelta(minutes=20))
    await watched(conn, pump, T0 + timedelta(hours=2))
    await run_pass(conn, T0 + timedelta(hours=3))  # resolved by the worker: its condition cleared
    last, durations = await alerts.lifecycle_durations(conn, start)
    assert durations == [("acknowledged", 600.0), ("resolved", 3 * 3600.0)]
    assert await alerts.lifecycle_durations(conn, last) == (last, [])
