"""Opening database connections and pools bound to Wearline's schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from wearline.errors import WearlineError
from wearline.settings import DatabaseSettings

__all__ = ["DatabaseUnavailable", "connect", "connection_kwargs", "open_pool"]


class DatabaseUnavailable(WearlineError):
    """The database could not be reached or refused us; the message says which DSN host and why."""


def connection_kwargs(settings: DatabaseSettings) -> dict[str, Any]:
    """libpq options shared by every connection: Wearline's schema first on the search path, UTC timestamps, and the
    stage's role when the settings name one (as if ``SET ROLE`` ran first; ``RESET ALL`` keeps it)."""
    role = f" -c role={settings.role}" if settings.role else ""
    return {
        "options": f"-c search_path={settings.schema_name},public -c timezone=UTC{role}",
        "connect_timeout": max(1, round(settings.connect_timeout_s)),
        "application_name": "wearline",
    }


def _describe(dsn: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable DSN)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


async def connect(settings: DatabaseSettings, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    """One connection, for commands and migrations; fails fast with :class:`DatabaseUnavailable`."""
    try:
        return await psycopg.AsyncConnection.connect(settings.dsn, autocommit=autocommit, **connection_kwargs(settings))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to {_describe(settings.dsn)}: {exc}") from exc


async def open_pool(
    settings: DatabaseSettings,
    *,
    name: str = "wearline",
    configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
) -> AsyncConnectionPool:
    """An opened pool; a bad DSN fails here, at start-up, not on the first write. Close it with ``await pool.close()``."""
    pool = AsyncConnectionPool(
        settings.dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        kwargs=connection_kwargs(settings),
        configure=configure,
        name=name,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout_s)
    except BaseException as exc:
        # Also on cancellation: an unclosed pool leaves worker tasks behind that keep the loop from ending.
        await pool.close()
        if not isinstance(exc, Exception):
            raise
        raise DatabaseUnavailable(f"cannot open a pool to {_describe(settings.dsn)}: {exc}") from exc
    return pool
