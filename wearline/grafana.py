"""Wearline's Grafana dashboards as PostgreSQL sees them: their SQL, after the substitutions Grafana makes.

Grafana replaces a query's template variables in the browser (a multi-value or *All* variable as a quoted,
comma-separated list; a single value as it is, quotes doubled), then the PostgreSQL data source replaces its macros
on the server (``$__timeFilter``, ``$__timeGroup``, ...). :class:`Substitution` does both, the way Grafana documents
them, for one dashboard's time range and variable values; anything it does not know stays a failure, never a guess.
``tests/test_dashboards.py`` runs every query so expanded against a schema with data, and ``wearline bench
dashboards`` times them on a fleet of a chosen size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from wearline.errors import WearlineError

__all__ = [
    "DATASOURCE_UID",
    "Dashboard",
    "DashboardQuery",
    "GrafanaError",
    "Substitution",
    "Variable",
    "load_dashboards",
    "relative_time",
    "resolve_variables",
]

DATASOURCE_UID = "wearline-postgres"
"""The uid deploy/grafana/provisioning gives Wearline's PostgreSQL data source, and the dashboards refer to."""

# Grafana picks $__interval so that a graph has about one point per pixel (here: a thousand), as a round step.
STEPS = [1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400]


class GrafanaError(WearlineError):
    """A dashboard or provisioning file that cannot be read, or a query that cannot be expanded."""


def duration_s(text: str) -> float:
    """Grafana's interval strings: 30s, 5m, 1h, 1d (quotes around them allowed, as in ``'5m'``)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip().strip("'\""))
    if not match:
        raise GrafanaError(f"not a Grafana interval: {text!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match[2]]
    return int(match[1]) * unit


def relative_time(text: str, now: datetime) -> datetime:
    """A dashboard's ``time.from``/``time.to``: ``now`` or ``now-<N><unit>``."""
    if text == "now":
        return now
    match = re.fullmatch(r"now-(\d+[smhdw])", text)
    if not match:
        raise GrafanaError(f"time range {text!r}: only now and now-N<unit> are understood")
    return now - timedelta(seconds=duration_s(match[1]))


@dataclass
class Variable:
    name: str
    values: list[str]
    quoted_list: bool
    """Multi-value or with All: Grafana's SQL data sources quote each value and join them with commas."""


@dataclass
class Substitution:
    """One dashboard's time range, interval and current variable values, as Grafana would have them."""

    start: datetime
    end: datetime
    variables: dict[str, Variable] = field(default_factory=dict)

    @property
    def interval_s(self) -> int:
        wanted = (self.end - self.start).total_seconds() / 1000
        return next((s for s in STEPS if s >= wanted), STEPS[-1])

    def _value(self, name: str, fmt: str | None) -> str:
        if name == "__interval":
            s = self.interval_s
            return f"{s // 3600}h" if s % 3600 == 0 else f"{s // 60}m" if s % 60 == 0 else f"{s}s"
        if name == "__interval_ms":
            return str(self.interval_s * 1000)
        var = self.variables.get(name)
        if var is None:
            raise GrafanaError(f"${name} is neither a variable of this dashboard nor one of Grafana's")
        if fmt not in {None, "raw", "csv", "sqlstring"}:
            raise GrafanaError(f"${{{name}:{fmt}}}: format {fmt} is not emulated")
        if fmt == "csv":
            return ",".join(var.values)
        if fmt == "sqlstring" or (fmt is None and var.quoted_list):
            return ",".join("'" + v.replace("'", "''") + "'" for v in var.values)
        if fmt == "raw":
            return var.values[0]
        return var.values[0].replace("'", "''")

    def variables_in(self, sql: str) -> str:
        """Template variables: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]``; macros are left alone."""

        def sub(m: re.Match[str]) -> str:
            name = m["a"] or m["b"] or m["c"]
            if name.startswith("__") and name not in {"__interval", "__interval_ms"}:
                return m[0]  # a macro, for the data source's turn
            return self._value(name, m["fmt"])

        return re.sub(r"\$(?P<a>\w+)|\$\{(?P<b>\w+)(?::(?P<fmt>\w+))?\}|\[\[(?P<c>\w+)\]\]", sub, sql)

    def macros_in(self, sql: str) -> str:
        """The PostgreSQL data source's macros (plain PostgreSQL: the data source's TimescaleDB option off)."""

        def literal(t: datetime) -> str:
            return "'" + t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"

        def sub(m: re.Match[str]) -> str:
            name, args = m[1], [a.strip() for a in m[2].split(",")] if m[2].strip() else []
            if name == "__timeFilter" and len(args) == 1:
                return f"{args[0]} BETWEEN {literal(self.start)} AND {literal(self.end)}"
            if name == "__timeFrom" and not args:
                return literal(self.start)
            if name == "__timeTo" and not args:
                return literal(self.end)
            if name == "__time" and len(args) == 1:
                return f'{args[0]} AS "time"'
            if name in {"__timeGroup", "__timeGroupAlias"} and len(args) == 2:  # a column and an interval
                seconds = duration_s(args[1])
                group = f"floor(extract(epoch from {args[0]})/{seconds:g})*{seconds:g}"
                return group + (' AS "time"' if name == "__timeGroupAlias" else "")
            raise GrafanaError(f"macro {m[0]} is not emulated (fill modes and epoch macros are not)")

        out = re.sub(r"\$(__\w+)\(([^()]*)\)", sub, sql)
        if "$" in out:
            raise GrafanaError(f"something was left unexpanded: {out}")
        return out

    def expand(self, sql: str) -> str:
        return self.macros_in(self.variables_in(sql))


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: str
    where: str
    """Which panel and query, or which annotation."""
    kind: str
    """The panel type, or ``annotation``."""
    fmt: str
    """``table`` or ``time_series``."""
    sql: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Dashboard:
    path: Path
    model: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    def queries(self, uid: str) -> Iterator[DashboardQuery]:
        """Every SQL query of panels (rows' panels included) and annotations on the data source ``uid``."""
        for panel in _panels(self.model["panels"]):
            for target in panel.get("targets", []):
                if _on(target.get("datasource") or panel.get("datasource"), uid):
                    yield DashboardQuery(
                        self.uid,
                        f"panel {panel['title']!r} query {target['refId']}",
                        panel["type"],
                        target["format"],
                        target["rawSql"],
                        panel.get("options", {}),
                    )
        for anno in self.model.get("annotations", {}).get("list", []):
            if _on(anno.get("datasource"), uid):
                sql = anno["target"]["rawSql"]
                yield DashboardQuery(self.uid, f"annotation {anno['name']!r}", "annotation", "table", sql, {})


def _on(ds: object, uid: str) -> bool:
    return isinstance(ds, dict) and ds.get("uid") == uid


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def load_dashboards(folder: Path) -> list[Dashboard]:
    """The ``*.json`` dashboards of ``folder``, by file name."""
    if not folder.is_dir():
        raise GrafanaError(f"{folder}: not a folder of Grafana dashboards")
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            model = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GrafanaError(f"{path}: not a readable dashboard: {exc}") from exc
        if not isinstance(model, dict) or "uid" not in model or "panels" not in model:
            raise GrafanaError(f"{path}: not a Grafana dashboard (no uid or panels)")
        out.append(Dashboard(path, model))
    if not out:
        raise GrafanaError(f"{folder}: no *.json dashboards in it")
    return out


async def resolve_variables(
    conn: psycopg.AsyncConnection[Any], board: Dashboard, sub: Substitution, uid: str
) -> list[tuple[str, list[str]]]:
    """Give ``sub`` the dashboard's variables in their order, each query variable's options read from ``conn`` (a
    later one may use an earlier one) and set as Grafana does by default: *All* where offered, else the first.
    Returns each query variable's name and options."""
    seen = []
    for var in board.model.get("templating", {}).get("list", []):
        if var["type"] in {"textbox", "constant", "custom"}:
            sub.variables[var["name"]] = Variable(var["name"], [str(var["query"]).split(",")[0]], False)
            continue
        if var["type"] != "query":
            raise GrafanaError(f"{board.uid}: variable type {var['type']} is not emulated")
        if not _on(var.get("datasource"), uid):
            continue
        cur = await conn.execute(sub.expand(var["query"]))
        cols = [c.name for c in cur.description or []]
        rows = await cur.fetchall()
        if not (len(cols) == 1 or set(cols) == {"__text", "__value"}):
            raise GrafanaError(f"{board.uid}: variable {var['name']!r} returns columns {cols}")
        values = [str(r[cols.index("__value")] if "__value" in cols else r[0]) for r in rows]
        if not values:
            raise GrafanaError(f"{board.uid}: variable {var['name']!r} has no options in this database")
        multi = bool(var.get("multi") or var.get("includeAll"))
        sub.variables[var["name"]] = Variable(var["name"], values if var.get("includeAll") else values[:1], multi)
        seen.append((var["name"], values))
    return seen
