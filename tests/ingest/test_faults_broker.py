"""Broker restarts mid-stream with the shipped Mosquitto configuration and one ingest process (issue 11, item 2).

A clean restart (SIGTERM) loses nothing: Mosquitto saves its sessions, plain subscriptions and queued messages on
the way down, and ingest (partitioned scheme, a plain persistent subscription) finds them on reconnection. A
kill -9 loses what the broker acknowledged since its last snapshot and had not yet written to ingest (ingest commits
what it received even when the connection is gone): the test measures it, bounds it and checks that nothing else is
missing."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from ingest._mqtt import BrokerError, Subscriber
from tests.conftest import make_settings, unique
from tests.ingest._fault_support import Publisher, broker, keyed, settled_rows, tally, wait_until, worker_env
from tests.ingest._support import Fleet, count_rows, worker
from wearline.db import migrate

AUTOSAVE_CHANGES = 1000  # deploy/mosquitto/wearline.conf: autosave_on_changes true, autosave_interval 1000


@pytest.mark.faults
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_broker_restart_mid_stream(schema: str, tmp_path: Path, sig: signal.Signals) -> None:
    with broker() as mosquitto:
        assert mosquitto.autosave_interval == AUTOSAVE_CHANGES, "the loss bound below is the shipped autosave interval"
        settings = make_settings(
            schema,
            unique("wlt/"),
            "native",
            mqtt={"host": "127.0.0.1", "port": mosquitto.port, "client_id": unique("wlt-ingest-")},
        )
        asyncio.run(migrate(settings.database))
        fleet = Fleet(settings.topic_prefix, machines=50, samples=300, start_ms=int(time.time() * 1000) - 3_600_000)
        messages = keyed(fleet)
        log = tmp_path / "ingest.log"

        with worker(worker_env(settings), log, wait_for=b"subscribed to") as ingest:
            assert "subscription scheme: partitioned (Mosquitto does not keep shared subscriptions" in log.read_text()
            pub = Publisher(mosquitto.port, messages, rate=2500)
            thread = pub.start()
            wait_until(lambda: count_rows(schema) >= fleet.rows // 3, 60, "a third of the rows")
            mosquitto.stop(sig)
            down_at = len(pub.acked)
            time.sleep(1.0)  # the broker stays down for a second; the publisher and ingest retry meanwhile
            mosquitto.start()
            thread.join(120)
            assert not pub.error, pub.error
            settled_rows(schema, len(pub.acked), timeout_s=60)
            assert ingest.poll() is None, log.read_text()[-3000:]

        result = tally(schema, fleet, pub.acked)
        print(
            f"\nbroker {sig.name}: " + result.line("broker restart mid-stream"),
            f"| broker stopped after {down_at} acknowledged messages; publisher re-sent {pub.resent}",
        )
        text = log.read_text()
        assert mosquitto.saved_ok(), mosquitto.log.read_text()[-2000:]
        assert "reconnecting in" in text, "ingest never noticed the restart"
        assert text.count("session resumed") >= 1
        assert "did not keep our session" not in text
        assert "Traceback" not in text
        assert pub.acked_messages >= len(messages)
        assert (result.published, result.wrong, result.duplicates) == (fleet.rows, 0, 0)
        assert result.committed + result.lost == result.published
        if sig == signal.SIGTERM:
            assert result.lost == 0
        else:
            # Only what arrived after the broker's last snapshot and never reached ingest can be gone. The hard bound
            # is AUTOSAVE_CHANGES + ingest.receive_maximum (docs/ingest.md); what is measured stays under the former.
            assert result.lost <= AUTOSAVE_CHANGES


WINDOW = 100  # the subscriber's Receive Maximum and buffer, crossed tenfold by what is published


async def _take_all(sub: Subscriber, into: list[bytes]) -> None:
    for _ in range(100):
        batch = await sub.next_batch(30, 0.01, idle_s=0.5)
        into += [m.payload for m in batch]
        sub.ack(batch)  # on a lost connection: nothing sent, no error


async def test_what_was_received_before_a_broker_crash_is_still_handed_out(schema: str) -> None:
    """A kill -9 broker restores a snapshot that need not hold the messages ingest had received and not yet
    committed (Mosquitto 2.0 counts a message sent straight to a subscriber as a change only once it is
    acknowledged), so those must reach a batch, not vanish with the connection: every one of a full window is
    handed out after the crash, then the error that makes ingest reconnect."""
    topic = unique("wlt/") + "/acme/plant1/line1/m1/telemetry"
    with broker() as mosquitto:
        settings = make_settings(schema, "wlt", mqtt={"host": "127.0.0.1", "port": mosquitto.port})
        async with Subscriber(
            settings=settings.mqtt,
            topic_filter=topic,
            client_id=unique("wlt-sub-"),
            receive_maximum=WINDOW,
            max_buffered=WINDOW,
        ) as sub:
            assert not await sub.next_batch(1, 0.01, idle_s=1.0)  # the SUBACK is read here
            assert sub.subscribed
            pub = Publisher(mosquitto.port, [(topic, str(i).encode(), []) for i in range(10 * WINDOW)], rate=5000)
            await asyncio.to_thread(pub.start().join, 30)
            assert not pub.error, pub.error
            assert pub.acked_messages == 10 * WINDOW
            await asyncio.to_thread(wait_until, lambda: sub.buffered >= WINDOW, 10, "a full window")
            assert sub.buffered == WINDOW  # the window is full: the broker holds the other 900 queued
            # As in ingest: a batch is taken (reading resumes below half the buffer), the broker dies while it is
            # being committed, and the event loop reads the end of the connection meanwhile.
            handed = [m.payload for m in await sub.next_batch(60, 0.01, idle_s=0.5)]
            mosquitto.stop(signal.SIGKILL)
            await asyncio.sleep(1.0)
            assert sub.buffered == WINDOW - 60
            with pytest.raises(BrokerError, match="connection to the broker lost"):
                await _take_all(sub, handed)
            print(f"\nbroker kill -9 with a full window: published {pub.acked_messages}, handed out "
                  f"{len(handed)} of the {WINDOW} received (60 before the crash)")  # fmt: skip
            assert handed == [str(i).encode() for i in range(WINDOW)]
