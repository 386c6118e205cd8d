"""A ticket's life: evidence opens, appends to or reopens it; people acknowledge, assign, resolve and close it;
the worker escalates what nobody acknowledged and resolves what has cleared. Every change is a ticket event with
who, when and why.

Times are of two kinds, on purpose. Evidence, hold periods and reopen windows are in reading time (when the
machine measured it), so a backlog or an accelerated simulation ages tickets as the machine aged. Acknowledgement
and escalation are about people, so they run on the wall clock, passed in as ``now`` so tests can move it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from alerts._rules import RuleSet, built_in
from wearline.errors import WearlineError
from wearline.settings import AlertsSettings

__all__ = [
    "LIVE_STATUSES",
    "STATUSES",
    "Evidence",
    "Filed",
    "Status",
    "TicketError",
    "assign",
    "comment",
    "escalate_unacknowledged",
    "file_evidence",
    "live_ticket",
    "resolve_cleared",
    "set_status",
    "still_seen",
    "team_for",
]

Status = Literal["open", "acknowledged", "in_progress", "resolved", "closed"]
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "in_progress", "resolved", "closed")
LIVE_STATUSES: tuple[Status, ...] = ("open", "acknowledged", "in_progress")

# Where a ticket may go from each status. "resolved -> open" is a reopen; closed is final (the repair was checked):
# a recurrence after it is a new ticket.
_NEXT: dict[str, tuple[Status, ...]] = {
    "open": ("acknowledged", "in_progress", "resolved"),
    "acknowledged": ("in_progress", "resolved"),
    "in_progress": ("resolved",),
    "resolved": ("closed", "open"),
    "closed": (),
}


class TicketError(WearlineError):
    """A ticket action that cannot be done: an unknown ticket or a transition its status does not allow."""


Source = Literal["anomaly", "remaining_life", "threshold", "silence", "dead_letters"]

# One live ticket per line, machine (0: the line's gateway itself) and reason.
_SAME_PROBLEM = "line_id = %(line)s AND coalesce(machine_id, 0) = %(m0)s AND reason = %(reason)s"


@dataclass(frozen=True)
class Evidence:
    """Something a machine (or, with ``machine_id`` None, a whole gateway's line) did that calls for maintenance:
    an anomaly, a remaining-life estimate, a threshold crossed, silence, a flood of dead letters."""

    machine_id: int | None
    line_id: int
    tenant_id: int
    reason: str  # with the machine (or line), the deduplication key: one live ticket per machine and failure mode
    source: Source
    kind: Literal["predictive", "corrective"]
    at: datetime  # reading time of the evidence
    priority: int
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    due_at: datetime | None = None
    team: str | None = None


@dataclass(frozen=True)
class Filed:
    ticket_id: int
    action: Literal["opened", "appended", "reopened"]


def team_for(teams: dict[str, str], tenant: str, site: str, line: str) -> str | None:
    """The team configured for a machine's line, else its site, else none."""
    return teams.get(f"{tenant}/{site}/{line}") or teams.get(f"{tenant}/{site}")


async def _event(
    conn: psycopg.AsyncConnection[Any],
    ticket_id: int,
    kind: str,
    *,
    actor: str,
    why: str,
    at: datetime,
    data: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO ticket_events (ticket_id, kind, actor, why, at, data) VALUES (%s, %s, %s, %s, %s, %s)",
        [ticket_id, kind, actor, why, at, Jsonb(data or {})],
    )


async def file_evidence(
    conn: psycopg.AsyncConnection[Any], ev: Evidence, settings: AlertsSettings, *, now: datetime
) -> Filed:
    """Append ``ev`` to its machine's live ticket for the same reason, reopen a recently resolved one, or open a
    new one. Call inside a transaction.

    A transaction-scoped advisory lock per (machine, reason) makes concurrent workers take turns: without it two
    workers filing the first evidence at once would both find nothing live and one of them would fail on the
    unique index instead of appending.
    """
    key = {"line": ev.line_id, "m0": ev.machine_id or 0, "reason": ev.reason}
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
        [ev.reason, ev.machine_id if ev.machine_id is not None else -ev.line_id],
    )
    detail = {**ev.details, "at": ev.at.isoformat()}
    cur = await conn.execute(
        f"SELECT ticket_id FROM tickets WHERE {_SAME_PROBLEM} AND status = ANY(%(live)s)",
        {**key, "live": list(LIVE_STATUSES)},
    )
    live = await cur.fetchone()
    if live is not None:
        await conn.execute(
            """UPDATE tickets SET occurrences = occurrences + 1, last_seen = greatest(last_seen, %(at)s),
                      priority = least(priority, %(priority)s), due_at = least(due_at, %(due)s),
                      -- a work order states the newest prediction; an anomaly ticket keeps its first words
                      title = CASE WHEN kind = 'predictive' THEN %(title)s ELSE title END,
                      details = %(details)s, updated_at = %(now)s
               WHERE ticket_id = %(id)s""",
            {
                "at": ev.at,
                "priority": ev.priority,
                "due": ev.due_at,
                "details": Jsonb(ev.details),
                "title": ev.title,
                "now": now,
                "id": live[0],
            },
        )
        await _event(conn, live[0], "occurrence", actor="wearline", why="new evidence", at=now, data=detail)
        return Filed(live[0], "appended")
    window = timedelta(seconds=settings.reopen_window_s)
    cur = await conn.execute(
        f"""UPDATE tickets SET status = 'open', reopened = reopened + 1, reopened_at = %(now)s, resolved_at = NULL,
                  acknowledged_at = NULL, escalation_level = 0, escalated_at = NULL, occurrences = occurrences + 1,
                  last_seen = greatest(last_seen, %(at)s), priority = least(priority, %(priority)s),
                  due_at = coalesce(%(due)s, due_at), details = %(details)s, updated_at = %(now)s
           WHERE ticket_id = (SELECT ticket_id FROM tickets
                              WHERE {_SAME_PROBLEM} AND status = 'resolved'
                                AND last_seen >= %(since)s
                              ORDER BY resolved_at DESC LIMIT 1)
           RETURNING ticket_id, last_seen""",
        {
            "now": now,
            "at": ev.at,
            "priority": ev.priority,
            "due": ev.due_at,
            "details": Jsonb(ev.details),
            **key,
            "since": ev.at - window,
        },
    )
    reopened = await cur.fetchone()
    if reopened is not None:
        why = f"recurred within the reopen window ({settings.reopen_window_s / 3600:g} h) after it was resolved"
        await _event(conn, reopened[0], "reopened", actor="wearline", why=why, at=now, data=detail)
        return Filed(reopened[0], "reopened")
    cur = await conn.execute(
        """INSERT INTO tickets (tenant_id, machine_id, line_id, reason, source, kind, priority, title, details,
                                first_seen, last_seen, opened_at, updated_at, due_at, team)
           VALUES (%(tenant)s, %(machine)s, %(line)s, %(reason)s, %(source)s, %(kind)s, %(priority)s, %(title)s,
                   %(details)s, %(at)s, %(at)s, %(now)s, %(now)s, %(due)s, %(team)s)
           RETURNING ticket_id""",
        {
            "tenant": ev.tenant_id,
            "machine": ev.machine_id,
            "line": ev.line_id,
            "reason": ev.reason,
            "source": ev.source,
            "kind": ev.kind,
            "priority": ev.priority,
            "title": ev.title,
            "details": Jsonb(ev.details),
            "at": ev.at,
            "now": now,
            "due": ev.due_at,
            "team": ev.team,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    await _event(conn, row[0], "opened", actor="wearline", why=ev.title, at=now, data=detail)
    if ev.team:
        await _event(
            conn,
            row[0],
            "assigned",
            actor="wearline",
            why="the team configured for its site",
            at=now,
            data={"team": ev.team},
        )
    return Filed(row[0], "opened")


async def _locked(conn: psycopg.AsyncConnection[Any], ticket_id: int) -> tuple[str, str, int]:
    cur = await conn.execute(
        "SELECT status, coalesce(team, ''), priority FROM tickets WHERE ticket_id = %s FOR UPDATE", [ticket_id]
    )
    row = await cur.fetchone()
    if row is None:
        raise TicketError(f"no ticket #{ticket_id}")
    return str(row[0]), str(row[1]), int(row[2])


async def set_status(
    conn: psycopg.AsyncConnection[Any],
    ticket_id: int,
    to: Status,
    *,
    actor: str,
    why: str = "",
    now: datetime,
) -> str:
    """Move a ticket to ``to`` if its status allows it; returns the status it left. Call inside a transaction."""
    status, _, _ = await _locked(conn, ticket_id)
    if to not in _NEXT[status]:
        allowed = ", ".join(_NEXT[status]) or "nothing (closed is final)"
        raise TicketError(f"ticket #{ticket_id} is {status}: it cannot become {to}; it can become {allowed}")
    try:
        await conn.execute(
            """UPDATE tickets SET status = %(to)s, updated_at = %(now)s,
                      acknowledged_at = CASE WHEN %(to)s IN ('acknowledged', 'in_progress')
                                             THEN coalesce(acknowledged_at, %(now)s)
                                             WHEN %(to)s = 'open' THEN NULL ELSE acknowledged_at END,
                      resolved_at = CASE WHEN %(to)s = 'resolved' THEN %(now)s
                                         WHEN %(to)s = 'open' THEN NULL ELSE resolved_at END,
                      closed_at = CASE WHEN %(to)s = 'closed' THEN %(now)s ELSE closed_at END,
                      reopened = reopened + (%(to)s = 'open')::int,
                      reopened_at = CASE WHEN %(to)s = 'open' THEN %(now)s ELSE reopened_at END,
                      escalation_level = CASE WHEN %(to)s = 'open' THEN 0 ELSE escalation_level END,
                      escalated_at = CASE WHEN %(to)s = 'open' THEN NULL ELSE escalated_at END
               WHERE ticket_id = %(id)s""",
            {"to": to, "now": now, "id": ticket_id},
        )
    except psycopg.errors.UniqueViolation as exc:
        # Reopening while a newer ticket for the same machine and reason is live: that one carries the evidence.
        raise TicketError(
            f"ticket #{ticket_id} cannot be reopened: its machine has another live ticket for the same reason"
        ) from exc
    kind = "reopened" if to == "open" else "status"
    await _event(conn, ticket_id, kind, actor=actor, why=why, at=now, data={"from": status, "to": to})
    return status


async def assign(
    conn: psycopg.AsyncConnection[Any],
    ticket_id: int,
    *,
    team: str | None,
    assignee: str | None,
    actor: str,
    why: str = "",
    now: datetime,
) -> None:
    """Give a ticket to a team and/or a person (``None`` keeps what it has). Call inside a transaction."""
    status, _, _ = await _locked(conn, ticket_id)
    if status == "closed":
        raise TicketError(f"ticket #{ticket_id} is closed: it cannot be assigned")
    cur = await conn.execute(
        """UPDATE tickets k SET team = coalesce(%(team)s, k.team), assignee = coalesce(%(who)s, k.assignee),
                  updated_at = %(now)s
           FROM tickets old WHERE k.ticket_id = %(id)s AND old.ticket_id = k.ticket_id
           RETURNING old.team, old.assignee, k.team, k.assignee""",
        {"team": team, "who": assignee, "now": now, "id": ticket_id},
    )
    row = await cur.fetchone()
    assert row is not None
    data = {"from": {"team": row[0], "assignee": row[1]}, "team": row[2], "assignee": row[3]}
    await _event(conn, ticket_id, "assigned", actor=actor, why=why, at=now, data=data)


async def comment(conn: psycopg.AsyncConnection[Any], ticket_id: int, text: str, *, actor: str, now: datetime) -> None:
    """Add a note to a ticket's history. Call inside a transaction."""
    if not text.strip():
        raise TicketError("a comment needs some text")
    await _locked(conn, ticket_id)
    await _event(conn, ticket_id, "comment", actor=actor, why=text, at=now)


async def escalate_unacknowledged(
    conn: psycopg.AsyncConnection[Any], settings: AlertsSettings, *, now: datetime, rules: RuleSet | None = None
) -> list[tuple[int, int, str]]:
    """Escalate open tickets nobody acknowledged within their site's ``ack_timeout_s`` (rule files'
    ``[[escalation]]``, else the settings) of opening, reopening or their last escalation: one priority step up and
    the policy's next level notified. Returns (ticket, level, who is notified).

    SKIP LOCKED lets several alert workers share the pass; a ticket another worker just escalated no longer
    qualifies when its lock is released, because its escalation time moved.
    """
    rules = rules or built_in(settings)
    soonest = min(e.ack_timeout_s for e in rules.escalations)
    cur = await conn.execute(
        """SELECT k.ticket_id, k.priority, k.escalation_level, greatest(k.opened_at, k.reopened_at, k.escalated_at),
                  t.name, s.name, l.name
           FROM tickets k JOIN tenants t ON t.tenant_id = k.tenant_id
           JOIN lines l ON l.line_id = k.line_id JOIN sites s ON s.site_id = l.site_id
           WHERE k.status = 'open' AND greatest(k.opened_at, k.reopened_at, k.escalated_at) <= %s
           ORDER BY k.ticket_id
           FOR UPDATE OF k SKIP LOCKED""",
        [now - timedelta(seconds=soonest)],
    )
    escalated = []
    for ticket_id, before, was, since, *path in await cur.fetchall():
        policy = rules.escalation_for(path[0], path[1], path[2])
        if since > now - timedelta(seconds=policy.ack_timeout_s):
            continue
        level = was + 1
        after = max(1, before - 1)
        await conn.execute(
            """UPDATE tickets SET escalation_level = %s, escalated_at = %s, priority = %s, updated_at = %s
               WHERE ticket_id = %s""",
            [level, now, after, now, ticket_id],
        )
        notify = policy.levels[min(level, len(policy.levels)) - 1]
        why = f"not acknowledged within {policy.ack_timeout_s / 60:g} min"
        data = {"level": level, "notify": notify, "priority": {"from": before, "to": after}}
        await _event(conn, ticket_id, "escalated", actor="wearline", why=why, at=now, data=data)
        escalated.append((int(ticket_id), int(level), notify))
    return escalated


# How far each ticket's condition has been watched: anomalies by the analytics watermark (the machine was scored
# that far), remaining life by the newest estimate, thresholds and silence by the readings the rules have looked
# at (for a gateway: any machine of its line), dead letters by the clock, since each pass counts them afresh.
# A machine that went dark is not "clear".
_WATCHED_THROUGH = """CASE t.source
    WHEN 'anomaly' THEN (SELECT max(w.last_time) FROM analytics_watermarks w WHERE w.machine_id = t.machine_id)
    WHEN 'remaining_life' THEN (SELECT max(r.time) FROM rul_estimates r WHERE r.machine_id = t.machine_id)
    WHEN 'dead_letters' THEN %(now)s
    ELSE CASE WHEN t.machine_id IS NOT NULL
              THEN (SELECT rw.checked_through FROM rule_watch rw WHERE rw.machine_id = t.machine_id)
              ELSE (SELECT max(rw.checked_through) FROM machines m JOIN rule_watch rw USING (machine_id)
                    WHERE m.line_id = t.line_id) END
    END"""


async def live_ticket(conn: psycopg.AsyncConnection[Any], line_id: int, machine_id: int | None, reason: str) -> bool:
    cur = await conn.execute(
        f"SELECT 1 FROM tickets WHERE {_SAME_PROBLEM} AND status = ANY(%(live)s)",
        {"line": line_id, "m0": machine_id or 0, "reason": reason, "live": list(LIVE_STATUSES)},
    )
    return await cur.fetchone() is not None


async def still_seen(
    conn: psycopg.AsyncConnection[Any], line_id: int, machine_id: int | None, reason: str, at: datetime
) -> bool:
    """A condition that persists (a threshold still breached, a gateway still dark) keeps its live ticket from
    auto-resolving without an event per reading; returns whether there was a live ticket."""
    cur = await conn.execute(
        f"""UPDATE tickets SET last_seen = greatest(last_seen, %(at)s)
            WHERE {_SAME_PROBLEM} AND status = ANY(%(live)s) RETURNING ticket_id""",
        {"line": line_id, "m0": machine_id or 0, "reason": reason, "at": at, "live": list(LIVE_STATUSES)},
    )
    return await cur.fetchone() is not None


async def resolve_cleared(conn: psycopg.AsyncConnection[Any], settings: AlertsSettings, *, now: datetime) -> list[int]:
    """Resolve live tickets whose condition has been watched for ``resolve_hold_s`` past their last evidence with
    no new evidence. Returns the tickets resolved."""
    hold = timedelta(seconds=settings.resolve_hold_s)
    # The planner prices the per-ticket subqueries at millions over a fleet's 20,000 live tickets and compiles the
    # statement with JIT: 0.25 s of compiling for 25 ms of work (wearline bench tickets). For this transaction only.
    await conn.execute("SELECT set_config('jit', 'off', true)")
    cur = await conn.execute(
        f"""UPDATE tickets k SET status = 'resolved', resolved_at = %(now)s, updated_at = %(now)s
            FROM (SELECT ticket_id, status FROM tickets t
                  WHERE status = ANY(%(live)s) AND {_WATCHED_THROUGH} >= t.last_seen + %(hold)s
                  FOR UPDATE SKIP LOCKED) old
            WHERE k.ticket_id = old.ticket_id
            RETURNING k.ticket_id, old.status""",
        {"now": now, "live": list(LIVE_STATUSES), "hold": hold},
    )
    resolved = []
    why = f"condition clear: no new evidence for {settings.resolve_hold_s / 3600:g} h of readings"
    for ticket_id, before in await cur.fetchall():
        await _event(
            conn, ticket_id, "status", actor="wearline", why=why, at=now, data={"from": before, "to": "resolved"}
        )
        resolved.append(int(ticket_id))
    return resolved
