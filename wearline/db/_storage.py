"""Choosing a new schema's storage mode: TimescaleDB hypertables when the server can run them, else native partitions.

TimescaleDB must be loaded by the server at start (``shared_preload_libraries``). When its files are installed but it
is not preloaded, ``CREATE EXTENSION`` kills the backend (FATAL "must be preloaded"): a savepoint cannot catch that,
the connection is gone. So the server is asked first, and the choice is a pure function of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from wearline.errors import WearlineError

__all__ = [
    "ExtensionProbe",
    "ExtensionState",
    "StorageChoice",
    "StorageError",
    "StorageMode",
    "Wanted",
    "choose_storage",
    "preload_advice",
    "probe_timescaledb",
    "require_loadable",
]

StorageMode = Literal["timescaledb", "native"]
Wanted = Literal["auto", "timescaledb", "native"]
ExtensionState = Literal["absent", "not_preloaded", "preloaded", "created", "created_not_preloaded"]
"""absent: not installed on the server; not_preloaded: installed but missing from ``shared_preload_libraries``, so
unusable; preloaded: usable, not yet created in this database; created: usable and created; created_not_preloaded:
created in this database by a server start that preloaded it, and this one does not: its event trigger then makes
every CREATE TABLE fail, in any storage mode."""


class StorageError(WearlineError, RuntimeError):
    """``database.storage`` asks for what the server or the schema cannot give; the message says how to fix it."""


@dataclass(frozen=True)
class ExtensionProbe:
    """What the server says about TimescaleDB, read in one query by :func:`probe_timescaledb`."""

    available: bool
    created: bool
    loader_present: bool
    """The loader defines ``timescaledb.disable_load`` when the postmaster preloads it: visible to any role."""
    preload_libraries: str | None
    """``shared_preload_libraries``; None when this role may not read it (not superuser nor pg_read_all_settings)."""
    config_file: str | None = None
    server_major: int = 15

    @property
    def state(self) -> ExtensionState:
        if not self.available:
            return "absent"
        preloaded = self.loader_present or (
            self.preload_libraries is not None and names_timescaledb(self.preload_libraries)
        )
        if not preloaded:
            return "created_not_preloaded" if self.created else "not_preloaded"
        return "created" if self.created else "preloaded"


def names_timescaledb(preload_libraries: str) -> bool:
    """Whether a ``shared_preload_libraries`` value lists the TimescaleDB loader (by name or by path)."""
    for item in preload_libraries.split(","):
        name = item.strip().strip("'\"").rsplit("/", 1)[-1]
        if name.removesuffix(".so") == "timescaledb":
            return True
    return False


def preload_advice(config_file: str | None = None, server_major: int = 15) -> str:
    """How to make an installed TimescaleDB usable, in one line."""
    where = config_file or f"postgresql.conf (on Debian /etc/postgresql/{server_major}/main/postgresql.conf)"
    return (
        f"add shared_preload_libraries = 'timescaledb' to {where} (or run timescaledb-tune), "
        "then restart the PostgreSQL server"
    )


def require_loadable(probe: ExtensionProbe) -> None:
    """Raise :class:`StorageError` when TimescaleDB is created in this database but cannot load: no table can be
    created then (its DDL event trigger fails), so a migration says why before it tries."""
    if probe.state == "created_not_preloaded":
        raise StorageError(
            "timescaledb is created in this database but the server does not preload it, so PostgreSQL refuses "
            f"to create tables in any storage mode: {preload_advice(probe.config_file, probe.server_major)} "
            "(or, if no schema uses it, DROP EXTENSION timescaledb)"
        )


@dataclass(frozen=True)
class StorageChoice:
    """The mode a new schema gets, whether to run ``CREATE EXTENSION`` first, and the warning to log, if any."""

    mode: StorageMode
    create_extension: bool = False
    warning: str | None = None


def choose_storage(wanted: Wanted, probe: ExtensionProbe) -> StorageChoice:
    """The storage mode for a new schema, given ``database.storage`` and the server's TimescaleDB state.

    ``native`` always works; ``auto`` uses TimescaleDB when it is usable and otherwise native partitioning, with a
    warning when it is installed but not preloaded; ``timescaledb`` raises :class:`StorageError` when it is unusable.
    """
    require_loadable(probe)
    state = probe.state
    if wanted == "native":
        return StorageChoice("native")
    if state in ("preloaded", "created"):
        return StorageChoice("timescaledb", create_extension=state == "preloaded")
    advice = preload_advice(probe.config_file, probe.server_major)
    if wanted == "timescaledb":
        if state == "absent":
            raise StorageError(
                "database.storage (WEARLINE_DATABASE__STORAGE) is 'timescaledb' but the server has no timescaledb "
                "extension: install it, or set storage to 'native' or 'auto'"
            )
        raise StorageError(
            "database.storage (WEARLINE_DATABASE__STORAGE) is 'timescaledb' but the server does not preload it: "
            + advice
        )
    if state == "absent":
        return StorageChoice("native")
    return StorageChoice(
        "native",
        warning=f"timescaledb is installed but not preloaded, so using native partitioning; to use it, {advice}",
    )


_PROBE = """
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),
       EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb'),
       current_setting('timescaledb.disable_load', true) IS NOT NULL,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
       (SELECT setting FROM pg_settings WHERE name = 'config_file'),
       current_setting('server_version_num')::int / 10000
"""


async def probe_timescaledb(conn: psycopg.AsyncConnection[Any]) -> ExtensionProbe:
    """Ask the server about TimescaleDB without loading it (which would end the session when it is not preloaded).

    pg_settings hides superuser-only settings from other roles instead of raising, as ``current_setting`` would.
    """
    cur = await conn.execute(_PROBE)
    row = await cur.fetchone()
    assert row is not None
    available, created, loader, preload, config_file, major = row
    return ExtensionProbe(
        available=bool(available),
        created=bool(created),
        loader_present=bool(loader),
        preload_libraries=preload,
        config_file=config_file,
        server_major=int(major),
    )
