"""No stranded share (issue 11, item 3): a dead member is seen, its share waits in its own session and a replacement
with the same identity writes it; a shared-group member that stops cleanly hands its share back."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from pathlib import Path

import pytest

import ingest
from ingest._scheme import owner_of
from tests.conftest import make_settings, unique
from tests.ingest._fault_support import Publisher, broker, keyed, settled_rows, tally, wait_until, worker_env
from tests.ingest._support import Fleet, stored_rows, wait_for_rows, worker
from wearline.db import migrate
from wearline.mosquitto import free_port
from wearline.settings import Settings
from wearline.topics import telemetry_topic

HEARTBEAT_S = 0.5


def _members(settings: Settings) -> dict[str, str]:
    return {m.identity: m.state for m in asyncio.run(ingest.ingest_members(settings.database))}


def _metric(port: int, line_start: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_a_dead_partition_member_is_seen_and_its_replacement_writes_its_share(schema: str, tmp_path: Path) -> None:
    with broker() as mosquitto:
        client_id = unique("wlt-ingest-")
        settings = make_settings(
            schema, unique("wlt/"), "native", mqtt={"host": "127.0.0.1", "port": mosquitto.port, "client_id": client_id}
        )
        asyncio.run(migrate(settings.database))
        fleet = Fleet(settings.topic_prefix, machines=40, samples=100, start_ms=int(time.time() * 1000) - 3_600_000)
        ours = {fleet.machine(i).machine for i in range(fleet.machines)
                if owner_of(telemetry_topic(fleet.prefix, fleet.machine(i)), 2) == 0}  # fmt: skip
        assert 0 < len(ours) < fleet.machines, "the hash must split this fleet"
        metrics_port = free_port()
        common = {"workers": 2, "heartbeat_s": HEARTBEAT_S}
        env0 = worker_env(settings, worker=0, metrics_port=metrics_port, **common)
        env1 = worker_env(settings, worker=1, **common)
        log0, log1 = tmp_path / "w0.log", tmp_path / "w1.log"

        with worker(env0, log0, wait_for=b"subscribed to"):
            with worker(env1, log1, wait_for=b"subscribed to") as w1:
                w1.send_signal(signal.SIGKILL)
                w1.wait()
            pub = Publisher(mosquitto.port, keyed(fleet), rate=4000)
            pub.start().join(60)
            assert not pub.error, pub.error
            ours_rows = sum(m in ours for m, _ in pub.acked)
            while_dead = settled_rows(schema, ours_rows + 1, timeout_s=30)
            # Worker 0 wrote exactly its own share; worker 1's waits in worker 1's session.
            assert {m for m, _ in stored_rows(schema)} == ours
            assert while_dead == ours_rows

            dead = f"{client_id}-1of2"
            wait_until(lambda: _members(settings).get(dead) == "missing", 10, "the dead member to show as missing")
            assert _members(settings)[f"{client_id}-0of2"] == "alive"
            wait_until(
                lambda: _metric(metrics_port, 'wearline_ingest_members{state="missing"}') == 1.0, 10, "the metric"
            )
            assert _metric(metrics_port, 'wearline_ingest_subscription_info{broker="mosquitto",scheme="partitioned"}')

            with worker(env1, log1, wait_for=b"session resumed"):
                wait_for_rows(schema, fleet.rows, timeout_s=30)
                wait_until(lambda: _members(settings).get(dead) == "alive", 10, "the replacement to be alive")

        result = tally(schema, fleet, pub.acked)
        print(
            "\n" + result.line("dead partition member, then its replacement"),
            f"| written while it was dead: {while_dead} (worker 0's share {ours_rows})",
        )
        assert (result.published, result.committed, result.lost, result.wrong, result.duplicates) == (
            fleet.rows,
            fleet.rows,
            0,
            0,
            0,
        )
        # Both cleanly stopped and kept their sessions for whoever takes their identity next.
        assert set(_members(settings).values()) == {"stopped"}


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_a_shared_member_that_stops_cleanly_hands_its_share_back(schema: str, tmp_path: Path) -> None:
    with broker() as mosquitto:
        settings = make_settings(
            schema,
            unique("wlt/"),
            "native",
            mqtt={"host": "127.0.0.1", "port": mosquitto.port},
            ingest={"shared_group": unique("g"), "subscription": "shared"},
        )
        asyncio.run(migrate(settings.database))
        fleet = Fleet(settings.topic_prefix, machines=40, samples=100, start_ms=int(time.time() * 1000) - 3_600_000)
        common = {"subscription": "shared", "shared_group": settings.ingest.shared_group, "heartbeat_s": HEARTBEAT_S}
        a, b = unique("wlt-a-"), unique("wlt-b-")
        env_a = worker_env(
            settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"client_id": a})}), **common
        )
        env_b = worker_env(
            settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"client_id": b})}), **common
        )
        log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

        with worker(env_a, log_a, wait_for=b"subscribed to"):
            with worker(env_b, log_b, wait_for=b"subscribed to") as wb:
                wait_until(lambda: _members(settings).get(a) == "alive", 10, "a heartbeat from a")
                wb.send_signal(signal.SIGTERM)
                assert wb.wait(30) == 0
            assert "retired: drained, session" in log_b.read_text()
            assert _members(settings)[b] == "retired"
            pub = Publisher(mosquitto.port, keyed(fleet), rate=4000)
            pub.start().join(60)
            assert not pub.error, pub.error
            settled_rows(schema, fleet.rows, timeout_s=30)

        result = tally(schema, fleet, pub.acked)
        print("\n" + result.line("shared member stopped cleanly, then traffic"))
        assert (result.published, result.committed, result.lost, result.wrong, result.duplicates) == (
            fleet.rows,
            fleet.rows,
            0,
            0,
            0,
        )
        # The last member keeps its session on a clean stop: nobody is left to hand its share to.
        assert _members(settings)[a] == "stopped"


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_a_partitioned_worker_told_to_retire_ends_its_session_on_a_clean_stop(schema: str, tmp_path: Path) -> None:
    with broker() as mosquitto:
        client_id = unique("wlt-ingest-")
        settings = make_settings(
            schema, unique("wlt/"), "native", mqtt={"host": "127.0.0.1", "port": mosquitto.port, "client_id": client_id}
        )
        asyncio.run(migrate(settings.database))
        fleet = Fleet(settings.topic_prefix, machines=10, samples=50, start_ms=int(time.time() * 1000) - 3_600_000)
        log = tmp_path / "ingest.log"
        common = {"workers": 2, "worker": 1, "heartbeat_s": HEARTBEAT_S}
        with worker(worker_env(settings, retire_on_stop="true", **common), log, wait_for=b"subscribed to") as w:
            w.send_signal(signal.SIGTERM)
            assert w.wait(30) == 0
        assert "retired: drained, session" in log.read_text()
        assert _members(settings) == {f"{client_id}-1of2": "retired"}
        # Published now, with the session gone: the broker keeps nothing for that identity any more.
        pub = Publisher(mosquitto.port, keyed(fleet), rate=4000)
        pub.start().join(60)
        assert not pub.error, pub.error
        with worker(worker_env(settings, **common), log, wait_for=b"subscribed to"):
            assert "(MQTT 5, session new)" in log.read_text().rsplit("subscription scheme", 1)[1]
            assert settled_rows(schema, 1, timeout_s=5, quiet_s=2) == 0
