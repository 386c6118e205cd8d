"""Ingest as a Sparkplug B host application, against the real broker and database.

Named after the Sparkplug TCK's host-application areas: session establishment, session termination, edge session
termination, send command, message ordering; plus aliases, historical metrics and malformed payloads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry

import alerts
from ingest import run_bench
from simulators import GatewaySpec, MachineGroup, Scenario, publish_fleet
from tests.conftest import make_settings, unique
from tests.ingest._support import ingest_env
from tests.ingest.sparkplug_support import EdgeNode, by_alias, double, host, query, wait_until
from wearline.db import connect, migrate
from wearline.settings import AlertsSettings, Settings
from wearline.sparkplug import DataType, Metric, state_topic

TENANT, SITE = "acme", "plant1"


@pytest.fixture
async def sp_settings(schema: str) -> Settings:
    group = unique("G")
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        ingest={
            "batch_max_delay_ms": 20,
            "sparkplug": {
                "groups": {group: f"{TENANT}/{SITE}"},
                "host_id": unique("wlt-host-"),
                "reorder_timeout_s": 0.3,
                "rebirth_interval_s": 0,
            },
        },
    )
    await migrate(settings.database)
    return settings


@pytest.fixture
def edge(sp_settings: Settings) -> Iterator[EdgeNode]:
    (group,) = sp_settings.ingest.sparkplug.groups
    node = EdgeNode(sp_settings.mqtt.host, sp_settings.mqtt.port, group, "gw-1")
    yield node
    node.close()


def values(schema: str) -> dict[tuple[str, str, int], float | None]:
    """(machine, sensor, epoch ms) -> stored value, for every reading."""
    rows = query(
        schema,
        """SELECT m.name, s.name, (extract(epoch FROM r.time) * 1000)::bigint, r.vals[s.position]
           FROM readings r JOIN machines m USING (machine_id) JOIN sensors s ON s.machine_id = m.machine_id
           WHERE r.vals[s.position] IS NOT NULL""",
    )
    return {(str(m), str(s), int(str(t))): v for m, s, t, v in rows}  # type: ignore[misc]


def dead_letters(schema: str) -> list[tuple[str, str]]:
    return [
        (str(r), str(d)) for r, d in query(schema, "SELECT reason, detail FROM dead_letters ORDER BY dead_letter_id")
    ]


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def offline(schema: str) -> dict[str, bool]:
    """Machine name -> whether it is marked offline."""
    return {str(n): o is not None for n, o in query(schema, "SELECT name, offline_since FROM machines")}


def machines_gauge(registry: CollectorRegistry) -> dict[str, float | None]:
    """wearline_ingest_sparkplug_machines by state."""
    return {
        st: registry.get_sample_value("wearline_ingest_sparkplug_machines", {"state": st})
        for st in ("online", "offline")
    }


def retained_state(settings: Settings, timeout_s: float = 5.0) -> dict[str, object] | None:
    """The retained STATE of the test's host id, as a fresh subscriber sees it."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("wlt-st-"), protocol=MQTTProtocolVersion.MQTTv5)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(state_topic(settings.ingest.sparkplug.host_id), qos=1)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return orjson.loads(got[0]) if got else None


def _after_births() -> int:
    """A timestamp for data after the births: one instant has one value per sensor (the first stored stays), and
    a birth carries its metrics' values at the time it is sent."""
    return int(time.time() * 1000) + 10


def _births(edge: EdgeNode) -> None:
    """NBIRTH (bdSeq 0, a node metric, the rebirth control) and DBIRTH of pump-1 (a double, a boolean, a string)."""
    edge.nbirth(
        0,
        [
            double("cpu", 1, 12.5),
            Metric(name="Node Control/Rebirth", alias=2, datatype=DataType.BOOLEAN, value=False),
        ],
        seq=0,
    )
    edge.send(
        "DBIRTH",
        [
            double("temp", 10, 60.0),
            Metric(name="running", alias=11, datatype=DataType.BOOLEAN, value=True),
            Metric(name="label", alias=12, datatype=DataType.STRING, value="P-1"),
        ],
        seq=1,
        device="pump-1",
    )


async def test_session_establishment_birth_then_data(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings) as registry:
        state = await asyncio.to_thread(retained_state, sp_settings)
        assert state is not None
        assert state["online"] is True
        assert isinstance(state["timestamp"], int)
        await asyncio.to_thread(_births, edge)
        ts = _after_births()
        await asyncio.to_thread(
            edge.send,
            "DDATA",
            [by_alias(10, 61.5, timestamp=ts), by_alias(11, False, timestamp=ts)],
            seq=2,
            device="pump-1",
        )
        await wait_until(lambda: ("pump-1", "temp", ts) in values(schema))
        got = values(schema)
        assert got[("pump-1", "temp", ts)] == 61.5
        assert got[("pump-1", "running", ts)] == 0.0  # a boolean as 0/1
        assert any(k[:2] == ("pump-1", "running") and v == 1.0 for k, v in got.items())  # the birth's value
        assert any(k[:2] == ("gw-1", "cpu") and v == 12.5 for k, v in got.items())  # node metrics: machine = node
        assert not any(k[1] in ("label", "bdSeq", "Node Control/Rebirth") for k in got)
        place = query(
            schema,
            """SELECT t.name, s.name, l.name, m.name FROM machines m JOIN lines l USING (line_id)
               JOIN sites s USING (site_id) JOIN tenants t ON t.tenant_id = s.tenant_id ORDER BY m.name""",
        )
        assert place == [(TENANT, SITE, "gw-1", "gw-1"), (TENANT, SITE, "gw-1", "pump-1")]
        assert dead_letters(schema) == []
        assert edge.rebirth_requests() == 0
    assert counter(registry, "wearline_ingest_sparkplug_metrics_ignored_total", reason="string") == 1
    assert counter(registry, "wearline_ingest_sparkplug_metrics_ignored_total", reason="control") == 2
    (node,) = query(schema, "SELECT online, bdseq, seq FROM sparkplug_nodes")
    assert node == (True, 0, 2)


async def test_session_establishment_data_before_birth_requests_rebirth(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings) as registry:
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 1.0)], seq=5, device="pump-1")
        await asyncio.to_thread(edge.send, "NDATA", [by_alias(1, 1.0)], seq=6)
        await wait_until(lambda: len(dead_letters(schema)) == 2)
        await wait_until(lambda: edge.rebirth_requests() >= 1)
        assert {r for r, _ in dead_letters(schema)} == {"sparkplug_unborn"}
        # The edge node answers the request: births, then data, which is now stored.
        await asyncio.to_thread(_births, edge)
        ts = _after_births()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 70.0, timestamp=ts)], seq=2, device="pump-1")
        await wait_until(lambda: ("pump-1", "temp", ts) in values(schema))
    assert counter(registry, "wearline_ingest_sparkplug_rebirths_requested_total", cause="before_birth") >= 1
    assert counter(registry, "wearline_ingest_dead_letters_total", reason="sparkplug_unborn") == 2


async def test_send_command_rebirth_on_unknown_alias(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings) as registry:
        await asyncio.to_thread(_births, edge)
        ts = _after_births()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(99, 1.0, timestamp=ts)], seq=2, device="pump-1")
        # A metric named (no alias) is as good as its alias.
        await asyncio.to_thread(
            edge.send, "DDATA", [Metric(name="temp", value=65.0, timestamp=ts + 1)], seq=3, device="pump-1"
        )
        # Another device's alias is not this device's.
        await asyncio.to_thread(edge.send, "NDATA", [by_alias(10, 1.0, timestamp=ts)], seq=4)
        await wait_until(lambda: ("pump-1", "temp", ts + 1) in values(schema))
        await wait_until(lambda: len(dead_letters(schema)) == 2)
        await wait_until(lambda: edge.rebirth_requests() >= 1)
        assert [r for r, _ in dead_letters(schema)] == ["sparkplug_unknown_metric"] * 2
        assert "alias 99" in dead_letters(schema)[0][1]
        topic, metrics = edge.commands[0]
        assert topic == f"spBv1.0/{edge.group}/NCMD/gw-1"
        assert [(m.name, m.datatype, m.value) for m in metrics] == [("Node Control/Rebirth", DataType.BOOLEAN, True)]
    assert counter(registry, "wearline_ingest_sparkplug_rebirths_requested_total", cause="unknown_alias") >= 1


async def test_message_ordering_gap_past_the_timeout_requests_rebirth(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    timeout_s = sp_settings.ingest.sparkplug.reorder_timeout_s
    async with host(sp_settings) as registry:
        await asyncio.to_thread(_births, edge)
        ts = _after_births()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 1.0, timestamp=ts)], seq=2, device="pump-1")
        sent = time.monotonic()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 3.0, timestamp=ts + 2)], seq=4, device="pump-1")
        await wait_until(lambda: ("pump-1", "temp", ts + 2) in values(schema))  # stored: the gap loses nothing here
        assert edge.rebirth_requests() == 0 or time.monotonic() - sent >= timeout_s
        await wait_until(lambda: edge.rebirth_requests() >= 1, timeout_s=10 * timeout_s + 5)
        assert time.monotonic() - sent >= timeout_s
        assert dead_letters(schema) == []
    assert counter(registry, "wearline_ingest_sparkplug_seq_missing_total") == 1
    assert counter(registry, "wearline_ingest_sparkplug_rebirths_requested_total", cause="seq_gap") == 1


async def test_message_ordering_reordered_within_the_timeout(schema: str) -> None:
    group = unique("G")
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        ingest={
            "batch_max_delay_ms": 20,
            # Ten times what the late message needs to arrive, so that it is late but well within the timeout.
            "sparkplug": {"groups": {group: f"{TENANT}/{SITE}"}, "reorder_timeout_s": 5.0, "rebirth_interval_s": 0},
        },
    )
    await migrate(settings.database)
    edge = EdgeNode(settings.mqtt.host, settings.mqtt.port, group, "gw-1")
    try:
        async with host(settings) as registry:
            await asyncio.to_thread(_births, edge)
            ts = _after_births()
            for seq in (2, 4, 3, 6, 5):  # two swapped pairs
                await asyncio.to_thread(
                    edge.send, "DDATA", [by_alias(10, float(seq), timestamp=ts + seq)], seq=seq, device="pump-1"
                )
            await wait_until(lambda: all(("pump-1", "temp", ts + s) in values(schema) for s in range(2, 7)))
            await wait_until(lambda: query(schema, "SELECT session->'missing' FROM sparkplug_nodes") == [({},)])
        assert counter(registry, "wearline_ingest_sparkplug_seq_missing_total") == 2
        assert counter(registry, "wearline_ingest_sparkplug_seq_reordered_total") == 2
        assert edge.rebirth_requests() == 0
    finally:
        edge.close()


async def test_edge_session_termination_ndeath_matching_and_stale_bdseq(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings) as registry:
        assert machines_gauge(registry) == {"online": 0, "offline": 0}, "both series before the first birth"
        await asyncio.to_thread(_births, edge)
        await wait_until(lambda: len(offline(schema)) == 2)
        await asyncio.to_thread(edge.ndeath, 5)  # the Will of an earlier connection: not this session's
        await wait_until(lambda: counter(registry, "wearline_ingest_sparkplug_stale_deaths_total") == 1)
        assert offline(schema) == {"gw-1": False, "pump-1": False}
        assert query(schema, "SELECT online FROM sparkplug_nodes") == [(True,)]
        assert machines_gauge(registry) == {"online": 2, "offline": 0}
        await asyncio.to_thread(edge.ndeath, 0)
        await wait_until(lambda: offline(schema) == {"gw-1": True, "pump-1": True})
        assert query(schema, "SELECT online FROM sparkplug_nodes") == [(False,)]
        assert machines_gauge(registry) == {"online": 0, "offline": 2}
        # Data after the death is data without a birth.
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 1.0)], seq=2, device="pump-1")
        await wait_until(lambda: [r for r, _ in dead_letters(schema)] == ["sparkplug_unborn"])
        await wait_until(lambda: edge.rebirth_requests() >= 1)
        # A new session brings the machines back.
        await asyncio.to_thread(_births, edge)
        await wait_until(lambda: offline(schema) == {"gw-1": False, "pump-1": False})
        assert machines_gauge(registry) == {"online": 2, "offline": 0}


async def test_edge_session_termination_a_dead_node_is_counted_after_an_ingest_restart(
    sp_settings: Settings, edge: EdgeNode
) -> None:
    """A node that died before ingest restarted, and stays quiet, is still in the gauges (sessions read at start)."""
    schema = sp_settings.database.schema_name
    async with host(sp_settings):
        await asyncio.to_thread(_births, edge)
        await wait_until(lambda: len(offline(schema)) == 2)
        await asyncio.to_thread(edge.ndeath, 0)
        await wait_until(lambda: offline(schema) == {"gw-1": True, "pump-1": True})
    async with host(sp_settings) as registry:
        assert machines_gauge(registry) == {"online": 0, "offline": 2}
        assert registry.get_sample_value("wearline_ingest_sparkplug_nodes", {"state": "offline"}) == 1


async def test_edge_session_termination_ddeath_marks_its_machine_only(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings) as registry:
        await asyncio.to_thread(_births, edge)
        await asyncio.to_thread(edge.send, "DBIRTH", [double("flow", 20, 5.0)], seq=2, device="pump-2")
        await wait_until(lambda: len(offline(schema)) == 3)
        await asyncio.to_thread(edge.send, "DDEATH", [], seq=3, device="pump-1")
        await wait_until(lambda: offline(schema)["pump-1"])
        assert offline(schema) == {"gw-1": False, "pump-1": True, "pump-2": False}
        assert machines_gauge(registry) == {"online": 2, "offline": 1}
        since = query(schema, "SELECT offline_since > now() - interval '1 minute' FROM machines WHERE name = 'pump-1'")
        assert since == [(True,)]


async def test_edge_session_termination_ndeath_is_silence_for_the_alert_rules(
    sp_settings: Settings, edge: EdgeNode, tmp_path: Path
) -> None:
    """An NDEATH, as ingest records it, opens the silence rule's ticket at the alerts worker's next pass (the
    births are seconds old: by the usual-interval rule nothing is silent), naming the edge node's death."""
    schema = sp_settings.database.schema_name
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[rule]]\nname = "no-data"\nkind = "silence"\n', encoding="utf-8")
    rules_settings = AlertsSettings(rules=[rules_file])
    rules = alerts.load_rules(rules_settings)

    async def tickets() -> list[alerts.Ticket]:
        async with await connect(sp_settings.database) as conn:
            async with conn.transaction():
                await alerts.watch_readings(conn, rules_settings, rules, now=datetime.now(UTC))
            return await alerts.list_tickets(conn, live_only=False)

    async with host(sp_settings):
        await asyncio.to_thread(_births, edge)
        await wait_until(lambda: len(offline(schema)) == 2)
        assert await tickets() == []
        await asyncio.to_thread(edge.ndeath, 0)
        await wait_until(lambda: offline(schema) == {"gw-1": True, "pump-1": True})
    [ticket] = await tickets()
    print(ticket.title)
    assert (ticket.machine, ticket.reason, ticket.status) == (f"{SITE}/gw-1/", "no-data", "open")
    assert "Sparkplug edge node gw-1 reported its death at" in ticket.title
    assert ticket.details["machines"] == 2


async def test_historical_metrics_keep_their_timestamps(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    hour_ago = int(time.time() * 1000) - 3_600_000
    replay = [by_alias(10, 40.0 + k, timestamp=hour_ago + 1000 * k, is_historical=True) for k in range(30)]
    async with host(sp_settings):
        await asyncio.to_thread(_births, edge)
        await asyncio.to_thread(edge.send, "DDATA", replay, seq=2, device="pump-1")
        await wait_until(lambda: sum(k[:2] == ("pump-1", "temp") for k in values(schema)) == 31)
    got = values(schema)
    for k in range(30):
        assert got[("pump-1", "temp", hour_ago + 1000 * k)] == 40.0 + k


async def test_malformed_protobuf_and_topics_are_dead_letters(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    g = edge.group
    async with host(sp_settings) as registry:
        await asyncio.to_thread(_births, edge)
        await asyncio.to_thread(edge.send_raw, f"spBv1.0/{g}/DDATA/gw-1/pump-1", b"\xff\xfe not a protobuf")
        await asyncio.to_thread(edge.send_raw, f"spBv1.0/{g}/NDATA/gw-1", b'{"v": 1, "ts": 1, "values": {}}')
        await asyncio.to_thread(edge.send, "NDATA", [by_alias(1, 1.0)], seq=None)  # no seq
        await asyncio.to_thread(edge.send_raw, f"spBv1.0/{g}/XDATA/gw-1", b"")
        await asyncio.to_thread(edge.send_raw, f"spBv1.0/{g}/NDATA/gw 1", b"")  # a space: not a Wearline name
        await wait_until(lambda: len(dead_letters(schema)) == 5)
        # Ingest goes on: a good message after them is stored.
        ts = _after_births()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 2.0, timestamp=ts)], seq=2, device="pump-1")
        await wait_until(lambda: ("pump-1", "temp", ts) in values(schema))
    assert [r for r, _ in dead_letters(schema)] == ["not_sparkplug"] * 3 + ["bad_topic"] * 2
    assert counter(registry, "wearline_ingest_dead_letters_total", reason="not_sparkplug") == 3


async def test_session_state_survives_an_ingest_restart(sp_settings: Settings, edge: EdgeNode) -> None:
    schema = sp_settings.database.schema_name
    async with host(sp_settings):
        await asyncio.to_thread(_births, edge)
        await wait_until(lambda: query(schema, "SELECT seq FROM sparkplug_nodes") == [(1,)])
    async with host(sp_settings) as registry:  # a new process would read the same rows
        ts = _after_births()
        await asyncio.to_thread(edge.send, "DDATA", [by_alias(10, 80.0, timestamp=ts)], seq=2, device="pump-1")
        await wait_until(lambda: ("pump-1", "temp", ts) in values(schema))
    assert dead_letters(schema) == []
    assert edge.rebirth_requests() == 0
    assert counter(registry, "wearline_ingest_sparkplug_seq_missing_total") == 0


def test_session_termination_state_and_will(sp_settings: Settings, tmp_path: Path) -> None:
    """STATE online while the host runs; a clean stop publishes offline, a kill -9 makes the broker publish the
    Will: both with the timestamp of the online message."""
    sp = sp_settings.ingest.sparkplug
    env = {
        **ingest_env(sp_settings),
        "WEARLINE_INGEST__SPARKPLUG__GROUPS": orjson.dumps(sp.groups).decode(),
        "WEARLINE_INGEST__SPARKPLUG__HOST_ID": sp.host_id,
    }
    log = tmp_path / "ingest.log"
    for how in ("SIGTERM", "SIGKILL"):
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "wearline", "ingest"], env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while b"STATE online" not in log.read_bytes() or b"subscribed to" not in log.read_bytes():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            log.write_bytes(b"")
            online = retained_state(sp_settings)
            assert online is not None
            assert online["online"] is True
            os.kill(proc.pid, getattr(signal, how))
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 10
        while (after := retained_state(sp_settings)) is not None and after["online"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert after == {"online": False, "timestamp": online["timestamp"]}, how


def test_bench_sparkplug_profile_two_workers_lose_nothing(schema: str) -> None:
    """The benchmark's Sparkplug profile through two workers partitioned by edge node: every reading committed once
    (a node's messages split between workers would break its sequence and session)."""
    settings = make_settings(schema, unique("wlt/"), "native")
    r = run_bench(
        settings, workers=2, machines=250, sensors=2, samples_per_message=2, duration_s=2, rate=500, sparkplug=True
    )
    assert r.payload == "sparkplug"
    assert r.published_readings > 250 * 2  # births plus data
    assert r.lost_readings == 0
    assert r.committed_readings == r.published_readings


async def test_simulator_edge_nodes_births_deaths_on_outages_and_replays(sp_settings: Settings) -> None:
    """The simulator's Sparkplug mode through the host: every sample stored once (births, data by alias and the
    historical replay after each outage), deaths and new bdSeqs on outages, and no rebirth ever needed."""
    schema = sp_settings.database.schema_name
    (group,) = sp_settings.ingest.sparkplug.groups
    steps, machines = 300, 4
    scenario = Scenario(
        groups=(MachineGroup("centrifugal_pump", machines),),
        gateways=GatewaySpec(
            machines_per_gateway=2, batch_samples=2, outage_rate_per_day=3000, outage_mean_s=20, duplicate_prob=0.05
        ),
    )
    async with host(sp_settings) as registry:
        summary = await publish_fleet(
            sp_settings.mqtt,
            sp_settings.topic_prefix,
            scenario,
            asyncio.Event(),
            steps=steps,
            time_scale=1000,
            seed=3,
            sparkplug_group=group,
        )
        rows = "SELECT m.name, count(*) FROM readings r JOIN machines m USING (machine_id) GROUP BY m.name"
        await wait_until(
            lambda: sorted(int(str(n)) for _, n in query(schema, rows)) == [steps] * machines, timeout_s=30
        )
    g = summary.gateways
    print(
        f"{summary.messages} Sparkplug messages; {g.outages} outages, {g.replayed} replayed, {g.duplicates} duplicates"
    )
    assert g.outages > 0
    assert g.replayed > 0
    assert g.lost == 0
    assert dead_letters(schema) == []
    nodes = query(schema, "SELECT edge_node, online, bdseq FROM sparkplug_nodes ORDER BY edge_node")
    assert [(e, o) for e, o, _ in nodes] == [("gw-000", True), ("gw-001", True)]
    assert max(int(str(b)) for _, _, b in nodes) >= 1  # a death and a new session
    assert not any(offline(schema).values())
    assert (
        sum(
            counter(registry, "wearline_ingest_sparkplug_rebirths_requested_total", cause=c)
            for c in ("before_birth", "unknown_alias", "unknown_metric", "seq_gap")
        )
        == 0
    )
    assert counter(registry, "wearline_ingest_sparkplug_stale_deaths_total") == 0
