"""Rules on raw readings and on ingest's dead letters: sensor thresholds (and vibration zones), machines and
gateways gone silent, dead-letter surges.

Readings are looked at once: each pass reads, per watched machine, only the rows newer than ``rule_watch``'s
``checked_through`` (at most ``_ROWS_PER_PASS``; the rest next pass), carries each threshold's breach across
passes in ``rule_watch.breaches``, and keeps a running estimate of the machine's usual interval for silence.

The database judges the common case: one statement advances every machine's position and interval and names the
machines whose new readings cross a threshold's opening bound. Only those, and machines already in a breach, come
back to Python row by row, where the breach's state machine (duration, hysteresis, severity) runs as before: a fleet
whose readings are in range costs no row transfer at all.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from alerts._lifecycle import LIVE_STATUSES, Evidence, file_evidence, live_ticket, still_seen, team_for
from alerts._rules import DeadLetterRule, RuleSet, SilenceRule, ThresholdRule
from wearline.settings import AlertsSettings

__all__ = ["WatchSummary", "silent_machines", "watch_dead_letters", "watch_readings"]

log = logging.getLogger("wearline.alerts")

_ROWS_PER_PASS = 2_000
# A machine seen for the first time is looked at from this far before its newest reading.
_FIRST_LOOK = timedelta(hours=1)


@dataclass
class WatchSummary:
    machines: int = 0
    readings: int = 0
    opened: int = 0


@dataclass
class _Machine:
    machine_id: int
    line_id: int
    tenant_id: int
    path: tuple[str, str, str, str]
    checked_through: datetime | None
    interval_s: float | None
    breaches: dict[str, Any]
    thresholds: list[ThresholdRule]
    silence: SilenceRule | None
    # Set by ingest when the machine's Sparkplug device or edge node reported its death (DDEATH, NDEATH), cleared
    # by its next birth; ``node_offline_since`` is the edge node's own machine's (named after its line), set when the
    # node itself died.
    offline_since: datetime | None = None
    node_offline_since: datetime | None = None
    judged: bool = False  # its breaches were judged this pass: its row needs writing


async def watch_readings(
    conn: psycopg.AsyncConnection[Any], settings: AlertsSettings, rules: RuleSet, *, now: datetime
) -> WatchSummary:
    """One pass of the threshold and silence rules over every machine they apply to. Call inside a transaction."""
    summary = WatchSummary()
    if not rules.kinds & {"threshold", "silence"}:
        return summary
    # One alerts worker at a time reads new readings (the others skip this step for the pass): a breach's state
    # lives in one row per machine, and locking 10,000 machine rows every pass would cost more than it shares.
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.rule_watch'))")
    locked = await cur.fetchone()
    if not (locked and locked[0]):
        return summary
    machines = await _watched(conn, rules)
    if not machines:
        return summary
    summary.machines = len(machines)
    await _read_new(conn, machines, settings, summary, now=now)
    summary.opened += await _silence(conn, machines, settings, rules, now=now)
    judged = [m for m in machines if m.judged]
    if judged:
        await conn.execute(
            """UPDATE rule_watch rw SET breaches = u.b::jsonb
               FROM unnest(%s::int[], %s::text[]) AS u(i, b) WHERE rw.machine_id = u.i""",
            [[m.machine_id for m in judged], [orjson.dumps(m.breaches).decode() for m in judged]],
        )
    return summary


async def _watched(conn: psycopg.AsyncConnection[Any], rules: RuleSet) -> list[_Machine]:
    cur = await conn.execute(
        """SELECT m.machine_id, m.line_id, m.tenant_id, mt.name, t.name, s.name, l.name, m.name,
                  rw.checked_through, rw.interval_s, nullif(rw.breaches, '{}'), m.offline_since,
                  CASE WHEN m.offline_since IS NOT NULL THEN (
                      SELECT n.offline_since FROM machines n WHERE n.line_id = m.line_id AND n.name = l.name) END
           FROM machines m LEFT JOIN machine_types mt ON mt.type_id = m.type_id
           JOIN lines l ON l.line_id = m.line_id JOIN sites s ON s.site_id = l.site_id
           JOIN tenants t ON t.tenant_id = m.tenant_id
           LEFT JOIN rule_watch rw ON rw.machine_id = m.machine_id
           ORDER BY m.machine_id"""
    )
    out = []
    for (
        machine_id,
        line_id,
        tenant_id,
        mtype,
        tenant,
        site,
        line,
        name,
        through,
        interval,
        breaches,
        offline_since,
        node_offline_since,
    ) in await cur.fetchall():
        mine = rules.for_machine(tenant, site, line, name, mtype)
        # By kind, not isinstance: a pydantic model's isinstance check is slow enough to show over a fleet.
        thresholds = [r for r in mine if r.kind == "threshold"]
        silence = next((r for r in mine if r.kind == "silence"), None)
        if thresholds or silence:
            path = (tenant, site, line, name)
            # Most machines breach nothing: their empty state comes back as NULL, not as JSON to decode.
            out.append(
                _Machine(
                    machine_id,
                    line_id,
                    tenant_id,
                    path,
                    through,
                    interval,
                    breaches or {},
                    thresholds,
                    silence,
                    offline_since,
                    node_offline_since,
                )
            )
    return out


# Per watched machine (w): where its new readings start (the first look reaches back _FIRST_LOOK from its newest),
# and its threshold rules as parallel arrays of sensor position, side and opening bound (u: machine and rule number;
# k: the rules). Each machine's new readings are summed up in its own lateral subquery, already in time order: how
# many, the newest, the median gap between them (the first one counted from the previous position) and whether one
# crosses an opening bound. NaN compares greater than every number in PostgreSQL, so it is left out as Python leaves
# it out. The new position and interval (the median gap followed slowly: one long outage must not teach the rule
# that silence is usual) are written in the same statement.
_JUDGE = """
WITH spec AS (
    SELECT u.machine_id, array_agg(s.position) AS pos, array_agg(k.above) AS above, array_agg(k.bound) AS bound
    FROM unnest(%(t_machine)s::int[], %(t_rule)s::int[]) AS u(machine_id, rule)
    JOIN unnest(%(r_sensor)s::text[], %(r_above)s::bool[], %(r_bound)s::float8[])
         WITH ORDINALITY AS k(sensor, above, bound, rule) USING (rule)
    JOIN sensors s ON s.machine_id = u.machine_id AND s.name = k.sensor
    GROUP BY u.machine_id),
w AS (
    SELECT w.machine_id, rw.checked_through AS through, rw.interval_s, spec.pos, spec.above, spec.bound,
           coalesce(rw.checked_through,
                    (SELECT max(time) FROM readings x WHERE x.machine_id = w.machine_id) - %(first)s) AS since
    FROM unnest(%(ids)s::int[]) AS w(machine_id) LEFT JOIN rule_watch rw USING (machine_id)
    LEFT JOIN spec USING (machine_id)),
agg AS (
    SELECT w.machine_id, w.since, w.interval_s, a.*
    FROM w CROSS JOIN LATERAL (
        SELECT count(*) AS n, max(time) AS last,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) FILTER (WHERE gap > 0) AS typical,
               coalesce(bool_or(crossed), false) AS crossed
        FROM (SELECT time,
                     extract(epoch FROM time - lag(time, 1, w.through) OVER (ORDER BY time))::float8 AS gap,
                     EXISTS (SELECT FROM unnest(w.pos, w.above, w.bound) AS t(p, above, bound)
                             WHERE vals[p] <> 'NaN' AND CASE WHEN above THEN vals[p] > bound
                                                             ELSE vals[p] < bound END) AS crossed
              FROM (SELECT time, vals FROM readings r WHERE r.machine_id = w.machine_id AND r.time > w.since
                    ORDER BY r.time LIMIT %(rows)s) r) g) a
    WHERE a.n > 0),
up AS (
    INSERT INTO rule_watch (machine_id, checked_through, interval_s)
    SELECT machine_id, last,
           CASE WHEN typical IS NULL THEN interval_s WHEN interval_s IS NULL THEN typical
                ELSE 0.9 * interval_s + 0.1 * typical END
    FROM agg
    ON CONFLICT (machine_id) DO UPDATE SET checked_through = excluded.checked_through,
        interval_s = excluded.interval_s
    RETURNING machine_id, checked_through, interval_s)
SELECT up.machine_id, agg.since, up.checked_through, up.interval_s, agg.n, agg.crossed
FROM up JOIN agg USING (machine_id)
"""


async def _read_new(
    conn: psycopg.AsyncConnection[Any],
    machines: list[_Machine],
    settings: AlertsSettings,
    summary: WatchSummary,
    *,
    now: datetime,
) -> None:
    by_id = {m.machine_id: m for m in machines}
    # The planner's estimate of the per-machine subqueries is tens of millions (it cannot know that most machines
    # have a few new readings), enough to compile the statement with JIT: over a second, against a fraction of that
    # to run it. For this transaction only.
    await conn.execute("SELECT set_config('jit', 'off', true)")
    # The rules travel once each; machines name them by number (1-based, as WITH ORDINALITY counts).
    numbers: dict[int, int] = {}
    specs: list[ThresholdRule] = []
    t_machine: list[int] = []
    t_rule: list[int] = []
    for m in machines:
        for rule in m.thresholds:
            n = numbers.get(id(rule))
            if n is None:
                specs.append(rule)
                n = numbers[id(rule)] = len(specs)
            t_machine.append(m.machine_id)
            t_rule.append(n)
    cur = await conn.execute(
        _JUDGE,
        {
            "ids": list(by_id),
            "first": _FIRST_LOOK,
            "rows": _ROWS_PER_PASS,
            "t_machine": t_machine,
            "t_rule": t_rule,
            "r_sensor": [r.sensor for r in specs],
            "r_above": [r.above is not None for r in specs],
            "r_bound": [r.above if r.above is not None else r.below for r in specs],
        },
    )
    judge: dict[int, tuple[datetime, datetime]] = {}
    for machine_id, since, through, interval, n, crossed in await cur.fetchall():
        m = by_id[machine_id]
        summary.readings += n
        names = {r.name for r in m.thresholds}
        # A machine in a breach must see every reading (one may clear it); one that is not only if a reading
        # crossed an opening bound. Any other machine's readings cannot change its thresholds' state.
        if m.thresholds and (crossed or names & m.breaches.keys()):
            judge[machine_id] = (since, through)
        m.checked_through, m.interval_s = through, interval
    if judge:
        await _judge_rows(conn, by_id, judge, settings, summary, now=now)


async def _judge_rows(
    conn: psycopg.AsyncConnection[Any],
    by_id: dict[int, _Machine],
    judge: dict[int, tuple[datetime, datetime]],
    settings: AlertsSettings,
    summary: WatchSummary,
    *,
    now: datetime,
) -> None:
    """The threshold rules' state machine over the new readings of the machines in ``judge`` (machine -> the
    bounds of the rows the statement above looked at: after the first, up to the second)."""
    ids = list(judge)
    cur = await conn.execute("SELECT machine_id, name, position FROM sensors WHERE machine_id = ANY(%s)", [ids])
    positions: dict[int, dict[str, int]] = {}
    for machine_id, name, position in await cur.fetchall():
        positions.setdefault(machine_id, {})[name] = position
    cur = await conn.execute(
        """SELECT u.machine_id, r.time, r.vals
           FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS u(machine_id, since, through)
           CROSS JOIN LATERAL (
               SELECT time, vals FROM readings r
               WHERE r.machine_id = u.machine_id AND r.time > u.since AND r.time <= u.through
               ORDER BY r.time LIMIT %s) r
           ORDER BY u.machine_id, r.time""",
        [ids, [judge[i][0] for i in ids], [judge[i][1] for i in ids], _ROWS_PER_PASS],
    )
    rows: dict[int, list[tuple[datetime, list[float | None]]]] = {}
    for machine_id, at, vals in await cur.fetchall():
        rows.setdefault(machine_id, []).append((at, vals))
    for machine_id, new in rows.items():
        m = by_id[machine_id]
        m.judged = True
        for rule in m.thresholds:
            position = positions.get(machine_id, {}).get(rule.sensor)
            if position is None:
                continue  # this machine has no such sensor (yet): nothing to compare
            summary.opened += await _threshold(
                conn, m=m, rule=rule, position=position, new=new, settings=settings, now=now
            )


async def _threshold(
    conn: psycopg.AsyncConnection[Any],
    *,
    m: _Machine,
    rule: ThresholdRule,
    position: int,
    new: list[tuple[datetime, list[float | None]]],
    settings: AlertsSettings,
    now: datetime,
) -> int:
    state = m.breaches.get(rule.name)
    worst: float | None = None
    for at, vals in new:
        v = vals[position - 1] if position <= len(vals) else None
        if v is None or math.isnan(v):
            continue
        if state is None:
            if rule.breached(v):
                state = {"since": at.isoformat(), "filed": None}
                worst = v
        elif rule.cleared(v):
            state, worst = None, None
        else:
            worst = v if worst is None or (rule.above is not None) == (v > worst) else worst
    if state is None:
        m.breaches.pop(rule.name, None)
        return 0
    m.breaches[rule.name] = state
    last = new[-1][0]
    since = datetime.fromisoformat(state["since"])
    if (last - since).total_seconds() < rule.for_s:
        return 0
    priority = rule.severity(worst) if worst is not None else state["filed"] or rule.priority
    # Already reported at this severity: the ticket only needs to know the breach goes on.
    if (
        state["filed"] is not None
        and priority >= state["filed"]
        and await still_seen(conn, m.line_id, m.machine_id, rule.name, last)
    ):
        return 0
    bound = rule.above if rule.above is not None else rule.below
    side = "above" if rule.above is not None else "below"
    ev = Evidence(
        machine_id=m.machine_id,
        line_id=m.line_id,
        tenant_id=m.tenant_id,
        reason=rule.name,
        source="threshold",
        kind="corrective",
        at=last,
        priority=priority,
        title=f"{rule.sensor} {side} {bound:g} on {'/'.join(m.path)} since {since:%Y-%m-%d %H:%M}",
        details={
            "sensor": rule.sensor,
            "value": worst,
            side: bound,
            "critical": rule.critical,
            "since": since.isoformat(),
        },
        team=team_for(settings.teams, *m.path[:3]),
    )
    filed = await file_evidence(conn, ev, settings, now=now)
    state["filed"] = priority
    return int(filed.action != "appended")


async def _silence(
    conn: psycopg.AsyncConnection[Any],
    machines: list[_Machine],
    settings: AlertsSettings,
    rules: RuleSet,
    *,
    now: datetime,
) -> int:
    """Machines (and whole lines) whose newest reading is older than their rule allows, measured from the newer
    of the database's clock and the tenant's newest reading (a simulated fleet may run ahead of the clock), and
    machines whose Sparkplug device or edge node reported its death: those are silent at once, whatever their
    usual interval, since the gateway itself said no data will come."""
    newest: dict[int, datetime] = {}
    for m in machines:
        if m.checked_through is not None:
            newest[m.tenant_id] = max(newest.get(m.tenant_id, now), m.checked_through)
    silent: dict[int, list[_Machine]] = {}
    watched: dict[int, int] = {}
    for m in machines:
        if m.silence is None:
            continue
        if m.offline_since is not None:
            watched[m.line_id] = watched.get(m.line_id, 0) + 1
            silent.setdefault(m.line_id, []).append(m)
            continue
        if m.checked_through is None or m.interval_s is None:
            continue
        watched[m.line_id] = watched.get(m.line_id, 0) + 1
        quiet = (max(now, newest.get(m.tenant_id, now)) - m.checked_through).total_seconds()
        if quiet > max(m.silence.factor * m.interval_s, m.silence.min_s):
            silent.setdefault(m.line_id, []).append(m)
    opened = 0
    for line_id, dark in silent.items():
        tenant, site, line, _ = dark[0].path
        line_rule = next(
            (r for r in rules.for_machine(tenant, site, line, None, None) if isinstance(r, SilenceRule)), None
        )
        if line_rule is not None and len(dark) == watched[line_id] and len(dark) > 1:
            last = max((m.checked_through for m in dark if m.checked_through), default=None)
            opened += await _file_silence(
                conn,
                settings=settings,
                rule=line_rule,
                machine_id=None,
                m=dark[0],
                what=f"gateway of {tenant}/{site}/{line}",
                last=last,
                now=now,
                machines=len(dark),
                death=_death(dark, gateway=True),
            )
            # A machine's own ticket from before its line went dark stays seen while it is marked dead, too: one
            # statement for the line, whatever its number of machines.
            dead = [m for m in dark if m.offline_since is not None and m.silence is not None]
            if dead:
                await conn.execute(
                    """UPDATE tickets t SET last_seen = greatest(t.last_seen, u.at)
                       FROM unnest(%s::int[], %s::text[], %s::timestamptz[]) AS u(machine_id, reason, at)
                       WHERE t.line_id = %s AND t.machine_id = u.machine_id AND t.reason = u.reason
                         AND t.status = ANY(%s)""",
                    [
                        [m.machine_id for m in dead],
                        [m.silence.name for m in dead if m.silence is not None],
                        [max(now, m.checked_through) if m.checked_through is not None else now for m in dead],
                        line_id,
                        list(LIVE_STATUSES),
                    ],
                )
            continue
        for m in dark:
            assert m.silence is not None
            opened += await _file_silence(
                conn,
                settings=settings,
                rule=m.silence,
                machine_id=m.machine_id,
                m=m,
                what="/".join(m.path),
                last=m.checked_through,
                now=now,
                machines=1,
                death=_death([m], gateway=False),
            )
    return opened


@dataclass(frozen=True)
class _Death:
    """A Sparkplug death behind a silence: who reported it, and when (the node's death, else the first device's)."""

    who: str  # "edge node", "device" or "devices" (every device of a line whose node lives on)
    name: str  # the edge node's id (its line), or the device's (its machine)
    at: datetime

    def text(self) -> str:
        if self.who == "devices":
            return (
                f"Sparkplug devices of edge node {self.name} reported their deaths, "
                f"the first at {self.at:%Y-%m-%d %H:%M:%S}"
            )
        return f"Sparkplug {self.who} {self.name} reported its death at {self.at:%Y-%m-%d %H:%M:%S}"


def _death(dark: list[_Machine], *, gateway: bool) -> _Death | None:
    """The Sparkplug death that makes ``dark`` silent, if every one of them is offline (a line whose machines went
    quiet in part by death, in part by plain silence, is plain silence)."""
    if not dark or any(m.offline_since is None for m in dark):
        return None
    _, _, line, machine = dark[0].path
    # NDEATH marks every machine of the edge node's line, its own (named after the line) included; DDEATH only its
    # device's, and a device that died first keeps its own earlier time. The node's own machine may not be watched
    # (a birth with no values), so its mark comes with every machine's row.
    node_since = dark[0].node_offline_since
    if node_since is not None:
        return _Death("edge node", line, node_since)
    at = min(m.offline_since for m in dark if m.offline_since is not None)
    return _Death("devices", line, at) if gateway else _Death("device", machine, at)


async def silent_machines(conn: psycopg.AsyncConnection[Any]) -> int:
    """Machines that live silence tickets cover: one per machine's ticket, and a gateway's (line) ticket counts the
    machines it found dark. What Prometheus alerts on: a count, since a label per machine would not stay small."""
    cur = await conn.execute(
        """SELECT coalesce(sum(CASE WHEN machine_id IS NULL THEN coalesce((details->>'machines')::int, 1)
                                    ELSE 1 END), 0)
           FROM tickets WHERE source = 'silence' AND status = ANY(%s)""",
        [list(LIVE_STATUSES)],
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _file_silence(
    conn: psycopg.AsyncConnection[Any],
    *,
    settings: AlertsSettings,
    rule: SilenceRule,
    machine_id: int | None,
    m: _Machine,
    what: str,
    last: datetime | None,
    now: datetime,
    machines: int,
    death: _Death | None,
) -> int:
    at = max(now, last) if last is not None else now
    if death is not None:
        # Still dead: the ticket stays seen, so it resolves only once readings run past the hold after the birth.
        if await still_seen(conn, m.line_id, machine_id, rule.name, at):
            return 0
    elif await live_ticket(conn, m.line_id, machine_id, rule.name):
        return 0  # already reported; it resolves once readings are back for the hold period
    details: dict[str, Any] = {
        "last_reading": last.isoformat() if last is not None else None,
        "usual_interval_s": m.interval_s,
        "machines": machines,
    }
    if death is None:
        assert last is not None
        title = f"No data from {what} since {last:%Y-%m-%d %H:%M:%S}"
    else:
        title = f"No data from {what}: {death.text()}"
        details["sparkplug_death"] = {"reported_by": death.who, "name": death.name, "at": death.at.isoformat()}
    ev = Evidence(
        machine_id=machine_id,
        line_id=m.line_id,
        tenant_id=m.tenant_id,
        reason=rule.name,
        source="silence",
        kind="corrective",
        at=at,
        priority=rule.priority,
        title=title,
        details=details,
        team=team_for(settings.teams, *m.path[:3]),
    )
    filed = await file_evidence(conn, ev, settings, now=now)
    return int(filed.action != "appended")


async def watch_dead_letters(
    conn: psycopg.AsyncConnection[Any], settings: AlertsSettings, rules: RuleSet, topic_prefix: str, *, now: datetime
) -> int:
    """Gateways (tenant/site/line topic prefixes of registered lines) whose dead letters over a rule's window run
    above its rate: one ticket per line. Dead letters under names the registry does not know belong to no tenant,
    so they are left to ingest's metrics and log. Call inside a transaction."""
    windows = sorted({r.window_s for r in rules.rules if isinstance(r, DeadLetterRule) and r.enabled})
    opened = 0
    for window in windows:
        cur = await conn.execute(
            """WITH d AS (
                   SELECT split_part(rest, '/', 1) AS tenant, split_part(rest, '/', 2) AS site,
                          split_part(rest, '/', 3) AS line, reason
                   FROM (SELECT substr(topic, length(%(prefix)s) + 2) AS rest, reason FROM dead_letters
                         WHERE received_at > %(since)s AND starts_with(topic, %(prefix)s || '/')) x)
               SELECT l.line_id, t.tenant_id, d.tenant, d.site, d.line, count(*),
                      array_agg(DISTINCT d.reason)
               FROM d JOIN tenants t ON t.name = d.tenant JOIN sites s ON s.tenant_id = t.tenant_id AND s.name = d.site
               JOIN lines l ON l.site_id = s.site_id AND l.name = d.line
               GROUP BY 1, 2, 3, 4, 5""",
            {"prefix": topic_prefix, "since": now - timedelta(seconds=window)},
        )
        for line_id, tenant_id, tenant, site, line, count, reasons in await cur.fetchall():
            for rule in rules.for_machine(tenant, site, line, None, None):
                if not isinstance(rule, DeadLetterRule) or rule.window_s != window:
                    continue
                rate = count / (window / 60)
                if rate <= rule.per_minute or await still_seen(conn, line_id, None, rule.name, now):
                    continue
                ev = Evidence(
                    machine_id=None,
                    line_id=line_id,
                    tenant_id=tenant_id,
                    reason=rule.name,
                    source="dead_letters",
                    kind="corrective",
                    at=now,
                    priority=rule.priority,
                    title=f"Gateway of {tenant}/{site}/{line} sends bad data: {rate:.0f} dead letters/min "
                    f"({', '.join(sorted(reasons))})",
                    details={
                        "dead_letters": count,
                        "window_s": window,
                        "per_minute": round(rate, 1),
                        "reasons": sorted(reasons),
                    },
                    team=team_for(settings.teams, tenant, site, line),
                )
                filed = await file_evidence(conn, ev, settings, now=now)
                opened += int(filed.action != "appended")
    return opened
