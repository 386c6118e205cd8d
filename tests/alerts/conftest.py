"""Fixtures of the alerts tests."""

from __future__ import annotations

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
