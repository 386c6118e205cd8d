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

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest._mqtt import BrokerError, Subscriber
from tests.conftest import make_settings, unique
from tests.ingest._fault_support import Publisher, broker, keyed, settled_rows, tally, wait_until, worker_env
from tests.ingest._support import Fleet, count_rows, worker
from wearline.db import migrate
from wearline.errors import WearlineError
from wearline.mosquitto import _save_period_s
from wearline.settings import Settings
from wearline.shipped import shipped

SAVE_PERIODS = 10  # a kill -9 comes after ten of the broker's save periods of streaming, crossing its save timer


def _migrated(schema: str, port: int) -> Settings:
    """Settings for one ingest process on the broker at ``port``, native storage, the schema migrated."""
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        mqtt={"host": "127.0.0.1", "port": port, "client_id": unique("wlt-ingest-")},
    )
    asyncio.run(migrate(settings.database))
    return settings


@pytest.mark.faults
@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_broker_restart_mid_stream(schema: str, tmp_path: Path, sig: signal.Signals) -> None:
    with broker() as mosquitto:
        settings = _migrated(schema, mosquitto.port)
        # The kill -9 streams for ten save periods (3 s each as shipped) before the kill, at a lower rate.
        kill = sig == signal.SIGKILL
        rate = 1000 if kill else 2500
        samples = int(rate * SAVE_PERIODS * mosquitto.save_period_s * 1.3 / 50) if kill else 300
        fleet = Fleet(settings.topic_prefix, machines=50, samples=samples, start_ms=int(time.time() * 1000) - 3_600_000)
        messages = keyed(fleet)
        log = tmp_path / "ingest.log"

        with worker(worker_env(settings), log, wait_for=b"subscribed to") as ingest:
            assert "subscription scheme: partitioned (Mosquitto does not keep shared subscriptions" in log.read_text()
            pub = Publisher(mosquitto.port, messages, rate=rate)
            started = time.monotonic()
            thread = pub.start()
            if kill:
                time.sleep(SAVE_PERIODS * mosquitto.save_period_s)
            else:
                wait_until(lambda: count_rows(schema) >= fleet.rows // 3, 60, "a third of the rows")
            mosquitto.stop(sig)
            down_at, streamed_s = pub.acked_messages, time.monotonic() - started
            # What the broker acknowledged within one save period before the kill: what its snapshot may lack.
            unsaved = pub.acked_since(time.monotonic() - mosquitto.save_period_s)
            time.sleep(1.0)  # the broker stays down for a second; the publisher and ingest retry meanwhile
            mosquitto.start()
            thread.join(120)
            assert not pub.error, pub.error
            settled_rows(schema, len(pub.acked), timeout_s=60)
            assert ingest.poll() is None, log.read_text()[-3000:]

        result = tally(schema, fleet, pub.acked)
        print(
            f"\nbroker {sig.name}: " + result.line("broker restart mid-stream"),
            f"| broker stopped after {down_at} acknowledged messages ({streamed_s:.1f} s), {unsaved} of them in the "
            f"last save period ({mosquitto.save_period_s:g} s); publisher re-sent {pub.resent}",
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
            # Only what the broker acknowledged after its last snapshot and never wrote to ingest can be gone
            # (docs/ingest.md, "Broker restarts"); the snapshot is at most one save period old.
            assert 0 < unsaved < down_at  # the publisher was still streaming, and had been for longer than a period
            assert result.lost <= unsaved


@pytest.mark.faults
@pytest.mark.timeout(240)
def test_a_broker_kill_during_a_backlog_loses_at_most_one_save_period(schema: str, tmp_path: Path) -> None:
    """The case the timer makes worse: ingest is away, the broker queues everything for its session, and a kill -9
    loses what was queued since the last snapshot. The broker is killed mid-stream after ten save periods of backlog;
    the publisher sends what was not acknowledged again once it is back, then ingest drains what the snapshot kept
    and what came after. Lost must not exceed what was acknowledged within one save period before the kill, and
    nothing else may be missing, doubled or wrong."""
    with broker() as mosquitto:
        settings = _migrated(schema, mosquitto.port)
        rate = 1000
        backlog = int(rate * SAVE_PERIODS * mosquitto.save_period_s)
        samples = int(backlog * 1.2 / 50)
        fleet = Fleet(settings.topic_prefix, machines=50, samples=samples, start_ms=int(time.time() * 1000) - 3_600_000)
        log = tmp_path / "ingest.log"
        with worker(worker_env(settings), log, wait_for=b"subscribed to") as ingest:
            ingest.kill()  # its session and subscription stay in the broker, which queues for them
            ingest.wait()
        time.sleep(mosquitto.save_period_s)  # the subscription reaches a snapshot
        pub = Publisher(mosquitto.port, keyed(fleet), rate=rate)
        thread = pub.start()
        wait_until(lambda: pub.acked_messages >= backlog, 2 * SAVE_PERIODS * mosquitto.save_period_s, "the backlog")
        mosquitto.stop(signal.SIGKILL)
        unsaved = pub.acked_since(time.monotonic() - mosquitto.save_period_s)
        time.sleep(1.0)
        mosquitto.start()
        thread.join(120)
        assert not pub.error, pub.error
        assert pub.acked_messages >= fleet.rows
        with worker(worker_env(settings), log, wait_for=b"subscribed to"):
            settled_rows(schema, fleet.rows, timeout_s=90)
        result = tally(schema, fleet, pub.acked)
        print(
            "\nbroker kill -9 during a backlog: " + result.line("queued for an absent ingest"),
            f"| {unsaved} acknowledged in the last save period ({mosquitto.save_period_s:g} s)",
        )
        assert "session resumed" in log.read_text()
        assert (result.published, result.wrong, result.duplicates) == (fleet.rows, 0, 0)
        assert result.committed + result.lost == result.published
        assert result.lost <= unsaved < backlog


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


def _session(port: int, client_id: str) -> tuple[paho.Client, list[bytes], bool]:
    """An MQTT 3.1.1 persistent session on ``port`` (kept for the shipped `persistent_client_expiration`): the
    client, the payloads it receives, and whether the broker had the session already."""
    got: list[bytes] = []
    present: list[bool] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=MQTTProtocolVersion.MQTTv311
    )
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    client.on_connect = lambda _c, _u, flags, _rc, _p: present.append(flags.session_present)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(lambda: bool(present), 10, "the CONNACK")
    return client, got, present[0]


def test_a_quiet_broker_still_saves_within_its_period() -> None:
    """A kill -9 one save period after the last change keeps the session, its subscription and the message queued
    for it. With the former `autosave_on_changes true` / `autosave_interval 1000` this fails: so few changes never
    reach a snapshot, and the restarted broker has no session."""
    topic = unique("wlt/") + "/acme/plant1/line1/m1/telemetry"
    client_id = unique("wlt-quiet-")
    with broker() as mosquitto:
        sub, _, present = _session(mosquitto.port, client_id)
        assert not present
        subacks: list[int] = []
        sub.on_subscribe = lambda _c, _u, mid, _codes, _p: subacks.append(mid)
        _, mid = sub.subscribe(topic, qos=1)
        wait_until(lambda: mid in subacks, 10, "the SUBACK")
        sub.disconnect()
        sub.loop_stop()
        pub = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("wlt-qpub-"), protocol=MQTTProtocolVersion.MQTTv5
        )
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        pub.publish(topic, b"queued while away", qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        time.sleep(mosquitto.save_period_s)
        mosquitto.stop(signal.SIGKILL)
        mosquitto.start()
        sub, got, present = _session(mosquitto.port, client_id)
        try:
            assert present, "the session did not survive the kill -9"
            wait_until(lambda: bool(got), 10, "the queued message")
        finally:
            sub.disconnect()
            sub.loop_stop()
    assert got == [b"queued while away"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("autosave_on_changes true", "save on a timer"),
        ("autosave_interval 0", "autosave_interval > 0"),
        ("persistence false", "must persist"),
    ],
)
def test_a_broker_that_does_not_save_on_a_timer_has_no_kill_bound(change: str, error: str) -> None:
    text = shipped("mosquitto/wearline.conf").read_text()
    assert _save_period_s(text) == 3.0  # autosave_interval 1, a second for the whole-second clock, one for the loop
    key = change.split(maxsplit=1)[0]
    edited = "\n".join(change if line.startswith(key + " ") else line for line in text.splitlines())
    with pytest.raises(WearlineError, match=error):
        _save_period_s(edited)
