"""Fixtures of the alerts tests."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import make_settings, unique
from wearline.db import migrate
from wearline.settings import Settings


@pytest.fixture
async def migrated(schema: str) -> Settings:
    """A migrated schema of the test's own. Tickets are the same SQL in both storage modes: native only."""
    settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    return settings


async def machine(conn: psycopg.AsyncConnection[Any], name: str) -> int:
    """A machine's id by its name (the tests' fleets name each machine once)."""
    cur = await conn.execute("SELECT machine_id FROM machines WHERE name = %s", [name])
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
