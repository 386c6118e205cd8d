"""``wearline bench ingest`` against another service: an external broker and another service's committed rows.

The same publisher and the same count of what was acknowledged then measure Wearline, Node-RED or Telegraf alike:
``--broker HOST:PORT`` points the publisher at a broker we did not start, and ``--count-dsn`` with ``--count-sql``
counts the readings the other service has committed (a query answering one number) instead of Wearline's workers.
Every option is checked, and the broker and the query tried, before anything is published.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg

from wearline.errors import WearlineError

__all__ = ["BenchExternal", "PeerCount", "check_bench_external", "parse_bench_broker"]


@dataclass(frozen=True)
class BenchExternal:
    """Where a run publishes and who counts, when it is not our own broker and Wearline's workers."""

    broker: tuple[str, int] | None = None
    broker_pid: int | None = None
    count_dsn: str | None = None
    count_sql: str | None = None
    peer_pids: tuple[int, ...] = ()

    @property
    def peer(self) -> bool:
        """True when another service, not Wearline's workers, commits what is published."""
        return self.count_sql is not None

    def broker_label(self) -> str:
        return "own" if self.broker is None else f"{self.broker[0]}:{self.broker[1]}"


def parse_bench_broker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:1883`` for IPv6) as a pair; a :class:`WearlineError` naming ``--broker`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise WearlineError(f"--broker {value}: expected HOST:PORT with a port from 1 to 65535")
    return host, int(port)


def _check_pid(option: str, pid: int) -> None:
    if pid < 1 or not Path(f"/proc/{pid}/stat").exists():
        raise WearlineError(f"{option} {pid}: no such process on this machine (its CPU is read from /proc)")


def check_bench_external(ext: BenchExternal, *, sparkplug: bool, cprofile: bool, backlog: int = 0) -> None:
    """Refuse what cannot describe a run, then try the broker and the count query once."""
    if backlog and ext.peer:
        raise WearlineError(
            f"--backlog {backlog}: kills and restarts Wearline's workers, so it cannot drain another service"
        )
    if backlog and sparkplug:
        # Edge nodes' births, sequence numbers and deaths would have to survive the host's kill -9 mid-run.
        raise WearlineError(f"--backlog {backlog}: drains the JSON profile only, not --sparkplug")
    if ext.peer and ext.count_dsn is None:
        raise WearlineError("--count-sql needs --count-dsn, the database the other service writes to")
    if ext.count_dsn is not None and not ext.peer:
        raise WearlineError("--count-dsn needs --count-sql, the query that counts the other service's readings")
    if ext.peer and ext.broker is None:
        raise WearlineError(
            "--count-sql needs --broker, the broker the other service subscribes to (our own broker's port is new "
            "every run)"
        )
    if ext.peer_pids and not ext.peer:
        raise WearlineError("--peer-pid needs --count-sql (the processes of the service whose rows are counted)")
    if ext.broker_pid is not None and ext.broker is None:
        raise WearlineError("--broker-pid needs --broker (our own broker's CPU is always measured)")
    if ext.broker is not None and sparkplug:
        raise WearlineError("--sparkplug is not possible with --broker (the Sparkplug profile needs our own broker)")
    if ext.peer and cprofile:
        raise WearlineError("--cprofile has nothing to profile with --count-sql (no Wearline worker runs to profile)")
    for pid in ext.peer_pids:
        _check_pid("--peer-pid", pid)
    if ext.broker_pid is not None:
        _check_pid("--broker-pid", ext.broker_pid)
    if ext.broker is not None:
        host, port = ext.broker
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise WearlineError(f"--broker {ext.broker_label()}: cannot connect: {exc}") from exc
    if ext.peer:
        with PeerCount(ext) as count:
            count.value()


class PeerCount:
    """The other service's committed readings, by ``--count-sql`` on ``--count-dsn``; a context manager."""

    def __init__(self, ext: BenchExternal) -> None:
        assert ext.count_dsn is not None
        assert ext.count_sql is not None
        self._dsn = ext.count_dsn
        self._sql = ext.count_sql
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> PeerCount:
        try:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise WearlineError(f"--count-dsn {_describe(self._dsn)}: cannot connect: {_first_line(exc)}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def value(self) -> int:
        assert self._conn is not None
        try:
            rows = self._conn.execute(self._sql.encode()).fetchall()
        except psycopg.Error as exc:
            raise WearlineError(f"--count-sql {self._sql!r}: the query failed: {_first_line(exc)}") from exc
        value = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else None
        if value is None or isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise WearlineError(f"--count-sql {self._sql!r}: must answer one row of one number, got {rows[:2]!r}")
        return int(value)


def _describe(dsn: str) -> str:
    """Where a DSN points, without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparseable DSN)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
