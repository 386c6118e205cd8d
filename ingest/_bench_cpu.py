"""CPU seconds of the processes a benchmark run involves, read from ``/proc`` over the measured window.

Wall-clock throughput on a shared machine says little; CPU time per message does. Processes are read by pid
(``/proc/<pid>/stat``, user + system). The database's share is the PostgreSQL backends serving the connections of
given client processes: their sockets' local ports (``/proc/<pid>/fd`` and ``/proc/net/tcp``) matched against
``pg_stat_activity.client_port``. That leaves out the server's shared processes (WAL writer, checkpointer,
autovacuum), which serve every database on the cluster, other helpers' test runs included, and cannot be split.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg

__all__ = ["BackendCpu", "proc_cpu_s"]

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process, or None when it is gone or not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _local_ports(inodes: set[int]) -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[9]) in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


class BackendCpu:
    """CPU of the PostgreSQL backends serving ``clients``' TCP connections, from :meth:`start` to the last
    :meth:`poll`. Backends are looked up again at each poll (a pool may open connections mid-run); one that
    started after :meth:`start` counts from zero, one that ended counts up to the last poll that saw it."""

    def __init__(self, dsn: str, clients: list[int], *, every_s: float = 0.5) -> None:
        self._dsn = dsn
        self._clients = clients
        self._every_s = every_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._next = 0.0
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._t0: object = None
        self.why_not: str | None = None
        """Set when nothing could be measured: the reason, for the report."""

    def start(self) -> None:
        try:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            self.why_not = f"cannot query pg_stat_activity: {exc}".splitlines()[0]
            return
        row = self._conn.execute("SELECT now()").fetchone()
        assert row is not None
        self._t0 = row[0]
        self._poll()

    def poll(self) -> None:
        """Look up backends and read their CPU, at most every ``every_s``; cheap to call in a wait loop."""
        if self._conn is not None and time.monotonic() >= self._next:
            self._poll()

    def _poll(self) -> None:
        assert self._conn is not None
        self._next = time.monotonic() + self._every_s
        ports = _local_ports(_socket_inodes(self._clients))
        rows = self._conn.execute(
            "SELECT pid, backend_start > %s FROM pg_stat_activity "
            "WHERE client_port = ANY(%s) AND client_addr IN ('127.0.0.1', '::1')",
            (self._t0, sorted(ports)),
        ).fetchall()
        for pid, new in rows:
            assert isinstance(pid, int)
            if not _is_postgres(pid):  # a server on another host: its pids are not ours to read
                continue
            cpu = proc_cpu_s(pid)
            if cpu is None:
                continue
            if pid not in self._first:
                self._first[pid] = 0.0 if new else cpu
            self._last[pid] = cpu

    def stop(self) -> float | None:
        """CPU seconds of the backends over the window, or None (see ``why_not``) when none was found."""
        if self._conn is None:
            return None
        self._poll()
        self._conn.close()
        self._conn = None
        if not self._last:
            self.why_not = (
                "no local backend served the clients' TCP connections (a Unix-socket DSN, a server on another "
                "host, or pg_stat_activity hides client ports from this role)"
            )
            return None
        return sum(self._last[p] - self._first[p] for p in self._last)

    @property
    def backends(self) -> int:
        return len(self._last)
