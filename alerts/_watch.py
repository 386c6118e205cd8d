"""Rules on raw readings and on ingest's dead letters: sensor thresholds (and vibration zones), machines and
gateways gone silent, dead-letter surges.

Readings are looked at once: each pass reads, per watched machine, only the rows newer than ``rule_watch``'s
``checked_through`` (at most ``_ROWS_PER_PASS``; the rest next pass), carries each threshold's breach across
passes in ``rule_watch.breaches``, and keeps a running estimate of the machine's usual interval for silence.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from alerts._lifecycle import Evidence, file_evidence, live_ticket, still_seen, team_for
from alerts._rules import DeadLetterRule, RuleSet, SilenceRule, ThresholdRule
from wearline.settings import AlertsSettings

__all__ = ["WatchSummary", "watch_dead_letters", "watch_readings"]

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
    moved: bool = False  # new readings this pass: its row needs writing


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
    seen = [m for m in machines if m.checked_through is not None and m.moved]
    await conn.execute(
        """INSERT INTO rule_watch (machine_id, checked_through, interval_s, breaches)
           SELECT i, t, s, b::jsonb FROM unnest(%s::int[], %s::timestamptz[], %s::float8[], %s::text[]) AS u(i, t, s, b)
           ON CONFLICT (machine_id) DO UPDATE SET checked_through = excluded.checked_through,
               interval_s = excluded.interval_s, breaches = excluded.breaches""",
        [
            [m.machine_id for m in seen],
            [m.checked_through for m in seen],
            [m.interval_s for m in seen],
            # Text, not a Jsonb object per row: most machines breach nothing, and 10,000 adapters cost a tenth of
            # a second a pass.
            [orjson.dumps(m.breaches).decode() if m.breaches else "{}" for m in seen],
        ],
    )
    return summary


async def _watched(conn: psycopg.AsyncConnection[Any], rules: RuleSet) -> list[_Machine]:
    cur = await conn.execute(
        """SELECT m.machine_id, m.line_id, m.tenant_id, mt.name, t.name, s.name, l.name, m.name,
                  rw.checked_through, rw.interval_s, coalesce(rw.breaches, '{}')
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
    ) in await cur.fetchall():
        mine = rules.for_machine(tenant, site, line, name, mtype)
        thresholds = [r for r in mine if isinstance(r, ThresholdRule)]
        silence = next((r for r in mine if isinstance(r, SilenceRule)), None)
        if thresholds or silence:
            path = (tenant, site, line, name)
            out.append(_Machine(machine_id, line_id, tenant_id, path, through, interval, breaches, thresholds, silence))
    return out


async def _read_new(
    conn: psycopg.AsyncConnection[Any],
    machines: list[_Machine],
    settings: AlertsSettings,
    summary: WatchSummary,
    *,
    now: datetime,
) -> None:
    by_id = {m.machine_id: m for m in machines}
    cur = await conn.execute("SELECT machine_id, name, position FROM sensors WHERE machine_id = ANY(%s)", [list(by_id)])
    positions: dict[int, dict[str, int]] = {}
    for machine_id, name, position in await cur.fetchall():
        positions.setdefault(machine_id, {})[name] = position
    cur = await conn.execute(
        """SELECT w.machine_id, r.time, r.vals
           FROM unnest(%s::int[]) AS w(machine_id) LEFT JOIN rule_watch rw USING (machine_id)
           CROSS JOIN LATERAL (
               SELECT time, vals FROM readings r
               WHERE r.machine_id = w.machine_id
                 AND r.time > coalesce(rw.checked_through,
                                       (SELECT max(time) FROM readings x WHERE x.machine_id = w.machine_id) - %s::interval)
               ORDER BY r.time LIMIT %s) r
           ORDER BY w.machine_id, r.time""",
        [list(by_id), _FIRST_LOOK, _ROWS_PER_PASS],
    )
    rows: dict[int, list[tuple[datetime, list[float | None]]]] = {}
    for machine_id, at, vals in await cur.fetchall():
        rows.setdefault(machine_id, []).append((at, vals))
    for machine_id, new in rows.items():
        m = by_id[machine_id]
        summary.readings += len(new)
        gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(new)]
        if m.checked_through is not None:
            gaps.insert(0, (new[0][0] - m.checked_through).total_seconds())
        gaps = [g for g in gaps if g > 0]
        if gaps:
            typical = statistics.median(gaps)
            # Slow to follow a change: one long outage must not teach the rule that silence is usual.
            m.interval_s = typical if m.interval_s is None else 0.9 * m.interval_s + 0.1 * typical
        m.checked_through = new[-1][0]
        m.moved = True
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
    of the database's clock and the tenant's newest reading (a simulated fleet may run ahead of the clock)."""
    newest: dict[int, datetime] = {}
    for m in machines:
        if m.checked_through is not None:
            newest[m.tenant_id] = max(newest.get(m.tenant_id, now), m.checked_through)
    silent: dict[int, list[_Machine]] = {}
    watched: dict[int, int] = {}
    for m in machines:
        if m.silence is None or m.checked_through is None or m.interval_s is None:
            continue
        watched[m.line_id] = watched.get(m.line_id, 0) + 1
        quiet = (max(now, newest[m.tenant_id]) - m.checked_through).total_seconds()
        if quiet > max(m.silence.factor * m.interval_s, m.silence.min_s):
            silent.setdefault(m.line_id, []).append(m)
    opened = 0
    for line_id, dark in silent.items():
        tenant, site, line, _ = dark[0].path
        line_rule = next(
            (r for r in rules.for_machine(tenant, site, line, None, None) if isinstance(r, SilenceRule)), None
        )
        if line_rule is not None and len(dark) == watched[line_id] and len(dark) > 1:
            last = max(m.checked_through for m in dark if m.checked_through)
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
            )
            continue
        for m in dark:
            assert m.silence is not None
            assert m.checked_through is not None
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
            )
    return opened


async def _file_silence(
    conn: psycopg.AsyncConnection[Any],
    *,
    settings: AlertsSettings,
    rule: SilenceRule,
    machine_id: int | None,
    m: _Machine,
    what: str,
    last: datetime,
    now: datetime,
    machines: int,
) -> int:
    if await live_ticket(conn, m.line_id, machine_id, rule.name):
        return 0  # already reported; it resolves once readings are back for the hold period
    ev = Evidence(
        machine_id=machine_id,
        line_id=m.line_id,
        tenant_id=m.tenant_id,
        reason=rule.name,
        source="silence",
        kind="corrective",
        at=max(now, last),
        priority=rule.priority,
        title=f"No data from {what} since {last:%Y-%m-%d %H:%M:%S}",
        details={"last_reading": last.isoformat(), "usual_interval_s": m.interval_s, "machines": machines},
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
