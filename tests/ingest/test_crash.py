"""Acknowledge only what is committed: kill -9 the ingest process mid-stream, start it again, lose nothing."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_settings, unique
from tests.ingest._support import Fleet, count_rows, ingest_process, publish, stored_rows, wait_for_rows
from wearline.db import migrate


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(
    schema: str, shipped_broker: tuple[str, int], tmp_path: Path, protocol: str
) -> None:
    host, port = shipped_broker
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        mqtt={"host": host, "port": port, "client_id": unique("wlt-ingest-"), "protocol": protocol},
        ingest={"batch_max_messages": 200},
    )
    asyncio.run(migrate(settings.database))
    fleet = Fleet(settings.topic_prefix, machines=20, samples=150, start_ms=int(time.time() * 1000) - 3_600_000)
    log = tmp_path / "ingest.log"

    published: list[int] = []
    with ingest_process(settings, log) as first:
        # The persistent session now exists: from here the broker keeps every message for us, running or not.
        publisher = threading.Thread(
            target=lambda: published.append(publish(host, port, fleet.messages(), rate=1000)), daemon=True
        )
        publisher.start()
        while count_rows(schema) < fleet.rows // 5:
            assert first.poll() is None, log.read_text()[-2000:]
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = count_rows(schema)
    assert killed_at < fleet.rows, "the kill came too late to test anything"

    publisher.join(60)
    assert published == [fleet.machines * fleet.samples]
    with ingest_process(settings, log) as second:
        got = wait_for_rows(schema, fleet.rows)
        assert second.poll() is None

    assert got == fleet.rows
    assert stored_rows(schema) == fleet.expected()
    assert "session resumed" in log.read_text()
