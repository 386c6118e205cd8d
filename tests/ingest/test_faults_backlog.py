"""A restart with a backlog ten times the in-flight window drains it: kill -9 ingest, queue 50,000 messages for its
persistent session, start it again, and count every reading exactly once (issue 11, item 1).

On resume the broker sends a whole Receive Maximum of PUBLISHes before the SUBACK; ingest used to wait for the
SUBACK with reading paused and died of a TimeoutError on every restart while the backlog lasted."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import make_settings, unique
from tests.ingest._fault_support import Publisher, broker, ingested_messages, keyed, tally, worker_env
from tests.ingest._support import Fleet, count_rows, wait_for_rows, worker
from wearline.db import migrate

RECEIVE_MAXIMUM = 4000  # ingest.receive_maximum's default: the window the backlog must exceed tenfold
BACKLOG = 50_000
LIVE = 5_000  # messages published while the first worker runs


@pytest.mark.faults
@pytest.mark.timeout(240)
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_kill_9_with_a_50000_message_backlog_drains_it_exactly_once(schema: str, tmp_path: Path, protocol: str) -> None:
    with broker() as mosquitto:
        settings = make_settings(
            schema,
            unique("wlt/"),
            "native",
            mqtt={
                "host": "127.0.0.1",
                "port": mosquitto.port,
                "client_id": unique("wlt-ingest-"),
                "protocol": protocol,
            },
            ingest={"batch_max_messages": 1000, "receive_maximum": RECEIVE_MAXIMUM},
        )
        asyncio.run(migrate(settings.database))
        # 110 machines x 500 instants, one instant a message: 55,000 messages of 10 readings.
        fleet = Fleet(settings.topic_prefix, machines=110, samples=500, start_ms=int(time.time() * 1000) - 3_600_000)
        messages = keyed(fleet)
        log = tmp_path / "ingest.log"
        env = worker_env(settings)

        # Two phases so the backlog does not depend on how fast the first worker is: it is killed mid-stream while
        # the first 5,000 messages arrive, and the other 50,000 are published while it is down.
        head, rest = messages[:LIVE], messages[LIVE:]
        live = Publisher(mosquitto.port, head, rate=20_000)
        with worker(env, log, wait_for=b"subscribed to") as first:
            thread = live.start()
            while count_rows(schema) < 1000:
                assert first.poll() is None, log.read_text()[-2000:]
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            first.wait()
        at_kill = count_rows(schema)
        thread.join(120)
        queued = Publisher(mosquitto.port, rest, rate=20_000)
        queued.run()
        assert live.error == queued.error == []
        backlog = len(messages) - at_kill
        assert backlog >= BACKLOG, f"only {backlog} messages queued: the test must cross 10x the window"

        started = time.monotonic()
        with worker(env, log, wait_for=b"session resumed") as second:
            got = wait_for_rows(schema, fleet.rows, timeout_s=150)
            assert second.poll() is None, log.read_text()[-3000:]
        drain_s = time.monotonic() - started

        result = tally(schema, fleet, live.acked | queued.acked)
        redelivered = ingested_messages(log) - backlog
        print(
            f"\nMQTT {protocol}: " + result.line("ingest kill -9 with a backlog"),
            f"| backlog {backlog} messages drained in {drain_s:.1f} s, {redelivered} messages redelivered",
        )
        assert live.acked_messages + queued.acked_messages == len(messages)
        assert got == fleet.rows
        assert (result.published, result.committed, result.lost, result.wrong, result.duplicates) == (
            fleet.rows,
            fleet.rows,
            0,
            0,
            0,
        )
        text = log.read_text()
        assert "Traceback" not in text
        assert "TimeoutError" not in text
