"""Evidence into tickets (anomalies, remaining-life estimates) and tickets out to people (lists, one ticket's
history): one live ticket per machine and reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from alerts._lifecycle import LIVE_STATUSES, STATUSES, Evidence, TicketError, file_evidence, still_seen, team_for
from alerts._rules import AnomalyRule, RuleSet, built_in
from wearline.settings import AlertsSettings

__all__ = [
    "Ticket",
    "TicketEvent",
    "TicketQuery",
    "find_tickets",
    "list_tickets",
    "priority_for",
    "priority_for_rul",
    "process_anomalies",
    "process_rul",
    "ticket_history",
    "ticket_json",
]


@dataclass
class Ticket:
    ticket_id: int
    tenant: str
    machine: str
    reason: str
    kind: str
    priority: int
    status: str
    title: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    opened_at: datetime
    due_at: datetime | None
    team: str | None
    assignee: str | None
    escalation_level: int
    reopened: int
    external_id: str
    details: dict[str, Any]


@dataclass
class TicketEvent:
    event_id: int
    at: datetime
    kind: str
    actor: str
    why: str
    data: dict[str, Any]


def priority_for(score: float, threshold: float) -> int:
    """1 (urgent) to 4 (low): how far past its threshold the evidence is."""
    ratio = score / threshold if threshold > 0 else float("inf")
    if ratio >= 4:
        return 1
    if ratio >= 2:
        return 2
    if ratio >= 1.25:
        return 3
    return 4


def priority_for_rul(lower_h: float, horizon_h: float) -> int:
    """1 (urgent) to 4 (low): how soon the machine may fail, by the pessimistic end of its interval."""
    share = lower_h / horizon_h
    if share <= 0.125:
        return 1
    if share <= 0.25:
        return 2
    if share <= 0.5:
        return 3
    return 4


_MACHINE_PATH = """JOIN machines m USING (machine_id) LEFT JOIN machine_types mt ON mt.type_id = m.type_id
               JOIN lines l USING (line_id) JOIN sites s USING (site_id) JOIN tenants t ON t.tenant_id = s.tenant_id"""


async def process_anomalies(
    conn: psycopg.AsyncConnection[Any],
    settings: AlertsSettings,
    *,
    now: datetime | None = None,
    limit: int = 500,
    rules: RuleSet | None = None,
) -> tuple[int, int]:
    """Fold unhandled anomalies into tickets by the machine's anomaly rules; returns (tickets opened or reopened,
    anomalies handled).

    Rows are claimed with SKIP LOCKED, so several alert workers can run side by side. An anomaly that does not
    (yet) satisfy a rule is handled all the same: a later one looks back at it to measure how long the machine has
    been abnormal.
    """
    rules = rules or built_in(settings)
    opened = handled = 0
    done: list[tuple[int, int | None]] = []
    async with conn.transaction():
        now = now or await _now(conn)
        # The batch is claimed first, then joined to the machines' paths: joining the whole backlog before the
        # limit sorted every unhandled anomaly (10,000 a pass in bench tickets: 0.17 s at 180,000 waiting).
        cur = await conn.execute(
            f"""WITH a AS (SELECT anomaly_id, machine_id, time, detector, score, threshold, sensors FROM anomalies
                           WHERE handled_at IS NULL ORDER BY anomaly_id LIMIT %s FOR UPDATE SKIP LOCKED)
                SELECT a.anomaly_id, a.machine_id, m.line_id, m.tenant_id, a.time, a.detector, a.score, a.threshold,
                       a.sensors, mt.name, t.name, s.name, l.name, m.name
                FROM a
                {_MACHINE_PATH}
                ORDER BY a.anomaly_id""",
            [limit],
        )
        for (
            anomaly_id,
            machine_id,
            line_id,
            tenant_id,
            at,
            detector,
            score,
            threshold,
            sensors,
            mtype,
            *path,
        ) in await cur.fetchall():
            ratio = score / threshold if threshold > 0 else float("inf")
            ticket_id = None
            for rule in rules.for_machine(path[0], path[1], path[2], path[3], mtype):
                if rule.kind != "anomaly" or ratio < rule.hold_ratio:
                    continue
                if ratio < rule.open_ratio or rule.for_s > 0:
                    # Hysteresis and duration only gate a new ticket: a live one takes any evidence at hold_ratio.
                    live = await still_seen(conn, line_id, machine_id, rule.name, at)
                    if not live and (
                        ratio < rule.open_ratio or not await _abnormal_long_enough(conn, machine_id, at, rule)
                    ):
                        continue
                ev = Evidence(
                    machine_id=machine_id,
                    line_id=line_id,
                    tenant_id=tenant_id,
                    reason=rule.name,
                    source="anomaly",
                    kind="corrective",
                    at=at,
                    priority=priority_for(score, threshold),
                    title=f"Abnormal {', '.join(sensors[:3]) or 'behaviour'} on {'/'.join(path)}",
                    details={
                        "anomaly_id": anomaly_id,
                        "detector": detector,
                        "score": round(score, 2),
                        "threshold": threshold,
                        "sensors": sensors,
                    },
                    team=team_for(settings.teams, *path[:3]),
                )
                filed = await file_evidence(conn, ev, settings, now=now)
                ticket_id = ticket_id or filed.ticket_id
                opened += int(filed.action != "appended")
            done.append((anomaly_id, ticket_id))
        if done:
            # One statement for the batch: a round trip per anomaly was most of a pass's time on anomalies.
            await conn.execute(
                """UPDATE anomalies a SET handled_at = %s, ticket_id = u.t
                   FROM unnest(%s::bigint[], %s::bigint[]) AS u(i, t) WHERE a.anomaly_id = u.i""",
                [now, [d[0] for d in done], [d[1] for d in done]],
            )
        handled = len(done)
    return opened, handled


async def _abnormal_long_enough(
    conn: psycopg.AsyncConnection[Any], machine_id: int, at: datetime, rule: AnomalyRule
) -> bool:
    """Whether anomalies at ``open_ratio`` or more, none further apart than ``max_gap_s``, reach back ``for_s``
    from ``at`` (this anomaly included)."""
    if rule.for_s == 0:
        return True
    cur = await conn.execute(
        """SELECT time FROM anomalies
           WHERE machine_id = %s AND time <= %s AND time >= %s AND score >= threshold * %s
           ORDER BY time DESC""",
        [machine_id, at, at - timedelta(seconds=rule.for_s + rule.max_gap_s), rule.open_ratio],
    )
    times = [r[0] for r in await cur.fetchall()]
    if not times or times[0] != at:
        return False
    gap = timedelta(seconds=rule.max_gap_s)
    start = at
    for t in times[1:]:
        if start - t > gap:
            break
        start = t
    return (at - start).total_seconds() >= rule.for_s


async def process_rul(
    conn: psycopg.AsyncConnection[Any],
    settings: AlertsSettings,
    *,
    now: datetime | None = None,
    limit: int = 500,
    rules: RuleSet | None = None,
) -> tuple[int, int]:
    """Turn remaining-life estimates whose interval's lower bound is under a remaining-life rule's horizon into
    predictive tickets, due at the pessimistic failure time; returns (tickets opened or reopened, estimates
    handled)."""
    rules = rules or built_in(settings)
    opened = handled = 0
    async with conn.transaction():
        now = now or await _now(conn)
        cur = await conn.execute(
            # Claimed first, then joined (as the anomalies above).
            f"""WITH r AS (SELECT machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours
                           FROM rul_estimates WHERE handled_at IS NULL ORDER BY time LIMIT %s
                           FOR UPDATE SKIP LOCKED)
                SELECT r.machine_id, m.line_id, m.tenant_id, r.time, r.model, r.model_version, r.rul_hours,
                       r.lower_hours, r.upper_hours, mt.name, t.name, s.name, l.name, m.name
                FROM r
                {_MACHINE_PATH}
                ORDER BY r.time""",
            [limit],
        )
        rows = await cur.fetchall()
        for machine_id, line_id, tenant_id, at, model, version, rul, lower, upper, mtype, *path in rows:
            handled += 1
            for rule in rules.for_machine(path[0], path[1], path[2], path[3], mtype):
                if rule.kind != "remaining_life" or lower >= rule.horizon_h:
                    continue
                ev = Evidence(
                    machine_id=machine_id,
                    line_id=line_id,
                    tenant_id=tenant_id,
                    reason=rule.name,
                    source="remaining_life",
                    kind="predictive",
                    at=at,
                    priority=priority_for_rul(lower, rule.horizon_h),
                    title=f"Predicted failure of {'/'.join(path)} in {lower:.0f}-{upper:.0f} h "
                    f"(best estimate {rul:.0f} h)",
                    details={
                        "model": model,
                        "model_version": version,
                        "rul_hours": round(rul, 1),
                        "lower_hours": round(lower, 1),
                        "upper_hours": round(upper, 1),
                    },
                    due_at=at + timedelta(hours=lower),
                    team=team_for(settings.teams, *path[:3]),
                )
                filed = await file_evidence(conn, ev, settings, now=now)
                opened += int(filed.action != "appended")
        if rows:
            await conn.execute(
                "UPDATE rul_estimates SET handled_at = %s WHERE (machine_id, time, model) IN "
                "(SELECT * FROM unnest(%s::int[], %s::timestamptz[], %s::text[]))",
                [now, [r[0] for r in rows], [r[3] for r in rows], [r[4] for r in rows]],
            )
    return opened, handled


async def _now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    # The database's clock, so every process stamps tickets from one clock.
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


_TICKET_COLUMNS = """k.ticket_id, t.name AS tenant, s.name || '/' || l.name || '/' || coalesce(m.name, '') AS machine, k.reason,
                  k.kind, k.priority, k.status, k.title, k.occurrences, k.first_seen, k.last_seen, k.opened_at,
                  k.due_at, k.team, k.assignee, k.escalation_level, k.reopened, k.external_id, k.details
           FROM tickets k
           JOIN tenants t ON t.tenant_id = k.tenant_id
           LEFT JOIN machines m ON m.machine_id = k.machine_id
           JOIN lines l ON l.line_id = k.line_id JOIN sites s ON s.site_id = l.site_id"""


@dataclass(frozen=True)
class TicketQuery:
    """Which tickets, most urgent first. ``after`` is the last ticket of the previous page (keyset pagination:
    a page never repeats or skips a ticket when others open meanwhile)."""

    tenant: str | None = None
    tenant_id: int | None = None
    statuses: tuple[str, ...] = LIVE_STATUSES
    priorities: tuple[int, ...] = ()
    site: str | None = None
    machine: str | None = None
    since: datetime | None = None  # last evidence at or after
    until: datetime | None = None  # first evidence before
    after: tuple[int, datetime, int] | None = None  # (priority, opened_at, ticket_id)
    limit: int | None = None


async def find_tickets(conn: psycopg.AsyncConnection[Any], q: TicketQuery) -> list[Ticket]:
    # Only the filters asked for go into the statement: with "(%s IS NULL OR ...)" for the others a prepared
    # statement's generic plan (psycopg prepares after 5 runs) cannot use the indexes, and a list took 26-115 ms
    # instead of 1.4-2.9 ms over 100,000 tickets (docs/alerts.md, bench tickets).
    where = ["k.status = ANY(%(statuses)s)"]
    for value, condition in (
        (q.tenant, "t.name = %(tenant)s"),
        (q.tenant_id, "k.tenant_id = %(tenant_id)s"),
        (q.priorities or None, "k.priority = ANY(%(priorities)s)"),
        (q.site, "s.name = %(site)s"),
        (q.machine, "m.name = %(machine)s"),
        (q.since, "k.last_seen >= %(since)s"),
        (q.until, "k.first_seen < %(until)s"),
        (q.after, "(k.priority, k.opened_at, k.ticket_id) > (%(a_p)s, %(a_t)s, %(a_id)s)"),
    ):
        if value is not None:
            where.append(condition)
    cur = conn.cursor(row_factory=class_row(Ticket))
    after = q.after or (None, None, None)
    await cur.execute(
        f"""SELECT {_TICKET_COLUMNS}
           WHERE {" AND ".join(where)}
           ORDER BY k.priority, k.opened_at, k.ticket_id
           LIMIT %(limit)s""",
        {
            "tenant": q.tenant,
            "tenant_id": q.tenant_id,
            "statuses": list(q.statuses),
            "priorities": list(q.priorities),
            "site": q.site,
            "machine": q.machine,
            "since": q.since,
            "until": q.until,
            "a_p": after[0],
            "a_t": after[1],
            "a_id": after[2],
            "limit": q.limit,
        },
    )
    return await cur.fetchall()


async def list_tickets(
    conn: psycopg.AsyncConnection[Any], *, tenant: str | None = None, live_only: bool = True
) -> list[Ticket]:
    """Tickets, most urgent first."""
    return await find_tickets(conn, TicketQuery(tenant=tenant, statuses=LIVE_STATUSES if live_only else STATUSES))


async def ticket_history(conn: psycopg.AsyncConnection[Any], ticket_id: int) -> tuple[Ticket, list[TicketEvent]]:
    """One ticket and every event of its life, oldest first."""
    cur = conn.cursor(row_factory=class_row(Ticket))
    await cur.execute(f"SELECT {_TICKET_COLUMNS} WHERE k.ticket_id = %s", [ticket_id])
    ticket = await cur.fetchone()
    if ticket is None:
        raise TicketError(f"no ticket #{ticket_id}")
    ecur = conn.cursor(row_factory=class_row(TicketEvent))
    await ecur.execute(
        "SELECT event_id, at, kind, actor, why, data FROM ticket_events WHERE ticket_id = %s ORDER BY at, event_id",
        [ticket_id],
    )
    return ticket, await ecur.fetchall()


def ticket_json(t: Ticket) -> dict[str, Any]:
    """A ticket in the shape maintenance systems file work orders in: what the API returns and webhooks carry."""
    site, line, machine = t.machine.split("/", 2)
    return {
        "id": t.ticket_id,
        "external_id": t.external_id,
        "title": t.title,
        "tenant": t.tenant,
        "site": site,
        "line": line,
        "machine": machine or None,  # None: the ticket is about the gateway of the whole line
        "failure_mode": t.reason,
        "type": t.kind,
        "priority": t.priority,
        "status": t.status,
        "team": t.team,
        "assignee": t.assignee,
        "requested_at": t.opened_at,
        "due_at": t.due_at,
        "first_seen": t.first_seen,
        "last_seen": t.last_seen,
        "occurrences": t.occurrences,
        "escalation_level": t.escalation_level,
        "reopened": t.reopened,
        "evidence": t.details,
    }
