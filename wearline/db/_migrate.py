"""Applying the versioned migrations, once, even with several processes starting together."""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from wearline.db import migrations
from wearline.db._connect import connect
from wearline.db._roles import apply_roles
from wearline.db._storage import (
    ExtensionProbe,
    StorageError,
    StorageMode,
    Wanted,
    choose_storage,
    probe_timescaledb,
    require_loadable,
)
from wearline.errors import WearlineError
from wearline.settings import DatabaseSettings

__all__ = [
    "Migration",
    "NotMigrated",
    "StorageMode",
    "applied_versions",
    "available_migrations",
    "check_migrated",
    "migrate",
    "require_migrated",
    "storage_mode",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    module: ModuleType

    def statements(self, mode: StorageMode) -> str:
        extra = getattr(self.module, mode.upper(), "")
        return str(self.module.COMMON) + "\n" + str(extra)


def available_migrations() -> list[Migration]:
    """Every migration shipped with this version of Wearline, oldest first."""
    found = []
    for info in pkgutil.iter_modules(migrations.__path__):
        if info.name.startswith("v") and info.name[1:5].isdigit():
            module = importlib.import_module(f"{migrations.__name__}.{info.name}")
            found.append(Migration(int(info.name[1:5]), info.name[6:], module))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


def _lock_key(schema: str) -> int:
    # One advisory lock per Wearline schema; crc32 keeps it stable across processes and Python versions.
    return zlib.crc32(f"wearline-migrate:{schema}".encode())


async def _choose_mode(conn: psycopg.AsyncConnection[Any], wanted: Wanted, probe: ExtensionProbe) -> StorageMode:
    cur = await conn.execute("SELECT value FROM meta WHERE key = 'storage_mode'")
    row = await cur.fetchone()
    if row is not None:
        stored: StorageMode = "timescaledb" if row[0] == "timescaledb" else "native"
        if wanted not in ("auto", stored):
            raise StorageError(
                f"database.storage is {wanted!r} but this schema was created in {stored!r} mode; "
                "a schema cannot change storage mode"
            )
        return stored
    choice = choose_storage(wanted, probe)
    if choice.warning:
        log.warning("%s", choice.warning)
    if choice.create_extension:
        try:
            async with conn.transaction():  # a savepoint: a failed CREATE EXTENSION leaves the migration usable
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public")
        except psycopg.Error as exc:
            if wanted == "timescaledb" or conn.closed:
                raise StorageError(f"cannot enable timescaledb: {exc}".splitlines()[0]) from exc
            log.warning("timescaledb is preloaded but cannot be enabled (%s); using native partitioning", exc)
            return "native"
    return choice.mode


async def applied_versions(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    cur = await conn.execute("SELECT to_regclass(%s)", [f"{schema}.schema_migrations"])
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return []
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(sql.Identifier(schema))
    )
    return [r[0] for r in await cur.fetchall()]


async def storage_mode(conn: psycopg.AsyncConnection[Any], schema: str) -> StorageMode | None:
    """The mode a migrated schema uses, or None before the first migration."""
    cur = await conn.execute("SELECT to_regclass(%s)", [f"{schema}.meta"])
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    cur = await conn.execute(
        sql.SQL("SELECT value FROM {}.meta WHERE key = 'storage_mode'").format(sql.Identifier(schema))
    )
    found = await cur.fetchone()
    return None if found is None else ("timescaledb" if found[0] == "timescaledb" else "native")


class NotMigrated(WearlineError):
    """The schema was never migrated, or is behind this Wearline; the message names it and `wearline db migrate`."""


@functools.cache
def _latest() -> int:
    return available_migrations()[-1].version


async def require_migrated(
    conn: psycopg.AsyncConnection[Any], schema: str, *, version: int | None = None
) -> StorageMode:
    """The schema's storage mode, once it holds migration ``version`` (default: every one this Wearline ships).

    Every command and stage that reads or writes the schema calls this first, so that a schema nobody migrated is one
    line naming it and the fix, not an ``UndefinedTable`` from whichever query happens to run first.
    """
    needed = _latest() if version is None else version
    versions = await applied_versions(conn, schema)
    mode = await storage_mode(conn, schema)
    if not versions or mode is None:
        raise NotMigrated(f"schema {schema!r} was never migrated: run `wearline db migrate` first")
    if max(versions) < needed:
        raise NotMigrated(
            f"schema {schema!r} is at migration {max(versions)}, this Wearline needs {needed}: "
            "run `wearline db migrate` first"
        )
    return mode


async def check_migrated(settings: DatabaseSettings, *, version: int | None = None) -> StorageMode:
    """:func:`require_migrated` on a connection of its own: what a stage's command runs before it starts."""
    async with await connect(settings) as conn:
        return await require_migrated(conn, settings.schema_name, version=version)


async def migrate(settings: DatabaseSettings) -> list[int]:
    """Bring the schema up to date; returns the versions this call applied (empty when already current).

    Everything runs in one transaction behind an advisory lock: a second process waits, then finds the work
    done; a failure leaves the schema as it was.
    """
    schema = settings.schema_name
    conn = await connect(settings)
    async with conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(schema)])
        probe = await probe_timescaledb(conn)
        require_loadable(probe)  # before the first DDL, which would fail with TimescaleDB's multi-line hint
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(schema)))
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now()
                   );
                   CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);"""
        )
        done = set(await applied_versions(conn, schema))
        shipped = available_migrations()
        if done and max(done) > shipped[-1].version:
            raise RuntimeError(
                f"schema {schema} is at version {max(done)}, newer than this Wearline ({shipped[-1].version})"
            )
        pending = [m for m in shipped if m.version not in done]
        mode = await _choose_mode(conn, settings.storage, probe)
        if mode == "timescaledb":
            # The extension may live in a schema of its own choosing; its functions must resolve.
            cur = await conn.execute(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname = 'timescaledb'"
            )
            ext = await cur.fetchone()
            if ext is not None:
                await conn.execute(
                    sql.SQL("SET LOCAL search_path = {}, {}, public").format(
                        sql.Identifier(schema), sql.Identifier(ext[0])
                    )
                )
        await conn.execute("INSERT INTO meta (key, value) VALUES ('storage_mode', %s) ON CONFLICT DO NOTHING", [mode])
        for m in pending:
            await conn.execute(m.statements(mode).encode())
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", [m.version, m.name])
            log.info("applied migration %04d %s (%s storage)", m.version, m.name, mode)
        await apply_roles(conn, schema, mode)
        return [m.version for m in pending]
