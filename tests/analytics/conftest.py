"""Analytics tests: keep the root logger as it was around each test.

Invoking the CLI in-process runs its callback, which points the root log handler at the runner's captured stderr;
that stream is closed when the invocation ends, so later log lines from a worker would hit a closed file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
