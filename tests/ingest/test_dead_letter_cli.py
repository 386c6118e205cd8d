"""`wearline dead-letters list|replay`, run as the real command against the real database and broker.

Listing reads rows as ingest writes them (inserted here with chosen times, to test time filters and order); replay
is tested end to end: ingest refuses a payload, the cause is fixed, the replay re-publishes it through the broker and
the real ingest stores it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import ingest
from ingest._dead_letters import ORIGINAL_SIZE_COLUMNS
from tests.conftest import make_settings, unique
from tests.ingest._support import TcpProxy, connect_db, publish
from wearline.cli import app
from wearline.db import migrate
from wearline.settings import Settings
from wearline.topics import MachinePath, telemetry_topic
from wearline.wire import Sample, encode_message

WEARLINE = str(Path(sys.executable).with_name("wearline"))


def _env(settings: Settings) -> dict[str, str]:
    return {
        "WEARLINE_DATABASE__DSN": settings.database.dsn,
        "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name,
        "WEARLINE_TOPIC_PREFIX": settings.topic_prefix,
        "WEARLINE_MQTT__HOST": settings.mqtt.host,
        "WEARLINE_MQTT__PORT": str(settings.mqtt.port),
        "WEARLINE_MQTT__CLIENT_ID": unique("wlt-cli-"),
    }


def _process(settings: Settings, *args: str, timeout: float = 60) -> Done:
    """The installed ``wearline`` command in a process of its own."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}, **_env(settings)}
    done = subprocess.run([WEARLINE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"$ wearline {' '.join(args)}  -> exit {done.returncode}\n{done.stdout}{done.stderr[-600:]}")
    return Done(done.returncode, done.stdout, done.stderr)


def _cli(settings: Settings, *args: str) -> Done:
    """The same ``wearline`` command in this process (a process costs 3 s of imports): its own settings and exit."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WEARLINE_")}
    result = CliRunner().invoke(app, list(args), env={**env, **_env(settings)})
    print(f"$ wearline {' '.join(args)}  -> exit {result.exit_code}\n{result.stdout}{result.stderr[-600:]}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def _error(done: Done) -> str:
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _payload(ts_ms: int, **values: float) -> bytes:
    return orjson.dumps({"v": 1, "ts": ts_ms, "values": values or {"a": 1.0}})


# (topic under the prefix, reason, detail, payload, received minutes ago)
ROWS = [
    ("acme/site1/line1/pump-1/telemetry", "unknown_machine", "machine acme/site1/line1/pump-1 is not registered", 1),
    ("acme/site1/line2/pump-2/telemetry", "ts_future", "ts 2031-01-01 is 5 y ahead", 5),
    ("acme/site10/line1/fan-1/telemetry", "unknown_machine", "machine acme/site10/line1/fan-1 is not registered", 30),
    ("beta/site1/line1/pump-1/telemetry", "not_json", "unexpected byte 0xff", 90),
    ("acme/site1/line1/pump-1/telemetry", "ts_past", "ts 1970-01-02 is older than 30 days", 180),
]


@pytest.fixture
def listed(schema: str) -> Settings:
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    with connect_db(schema) as conn:
        for topic, reason, detail, minutes in ROWS:
            payload = b"\xff\xfe not json" if reason == "not_json" else _payload(1_700_000_000_000, a=2.5)
            conn.execute(
                """INSERT INTO dead_letters (received_at, topic, reason, detail, payload)
                   VALUES (now() - make_interval(mins => %s), %s, %s, %s, %s)""",
                [minutes, f"{settings.topic_prefix}/{topic}", reason, detail, payload],
            )
    return settings


def _ids(stdout: str) -> list[int]:
    return [int(line.split()[0][1:]) for line in stdout.splitlines() if line.startswith("#")]


def test_unfiltered_list_summarises_by_reason_and_lists_newest_first(listed: Settings) -> None:
    done = _cli(listed, "dead-letters", "list")
    assert done.returncode == 0
    out = done.stdout
    assert f"dead letters in schema {listed.database.schema_name}, by reason:" in out
    summary = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.startswith("  ")}
    assert summary == {"unknown_machine": 2, "ts_future": 1, "not_json": 1, "ts_past": 1, "total": 5}
    assert _ids(out) == [1, 2, 3, 4, 5]  # inserted oldest-received last, so ids run newest first
    first = next(line for line in out.splitlines() if line.startswith("#1 "))
    assert "unknown_machine" in first
    assert f"{listed.topic_prefix}/acme/site1/line1/pump-1/telemetry" in first
    assert f"{len(_payload(1_700_000_000_000, a=2.5))} B" in first
    assert "is not registered" in first

    limited = _cli(listed, "dead-letters", "list", "--limit", "2")
    assert _ids(limited.stdout) == [1, 2]
    assert "(newest 2 of 5;" in limited.stdout


def test_filters_by_reason_gateway_topic_and_time(listed: Settings) -> None:
    def ids(*args: str) -> list[int]:
        done = _cli(listed, "dead-letters", "list", *args)
        assert done.returncode == 0
        assert "by reason" not in done.stdout  # the summary is for an unfiltered look only
        return _ids(done.stdout)

    assert ids("--reason", "unknown_machine") == [1, 3]
    assert ids("--reason", "unknown_machine", "--reason", "ts_past") == [1, 3, 5]
    # site1 is not site10: the gateway matches whole levels.
    assert ids("--gateway", "acme/site1") == [1, 2, 5]
    assert ids("--gateway", "acme") == [1, 2, 3, 5]
    assert ids("--gateway", "acme/site1/line1/pump-1") == [1, 5]
    assert ids("--topic", f"{listed.topic_prefix}/+/site1/+/pump-1/telemetry") == [1, 4, 5]
    assert ids("--topic", f"{listed.topic_prefix}/acme/site10/#") == [3]
    assert ids("--since", "10m") == [1, 2]
    assert ids("--since", "2h", "--until", "20m") == [3, 4]
    assert ids("--reason", "ts_future", "--gateway", "beta") == []
    empty = _cli(listed, "dead-letters", "list", "--gateway", "nobody")
    assert f"no dead letters in schema {listed.database.schema_name} match these filters" in empty.stdout


def test_json_output_for_scripts(listed: Settings) -> None:
    doc = json.loads(_cli(listed, "dead-letters", "list", "--json").stdout)
    assert doc["matching"] == 5
    assert [d["id"] for d in doc["dead_letters"]] == [1, 2, 3, 4, 5]
    assert {r["reason"]: r["count"] for r in doc["summary"]} == {
        "unknown_machine": 2,
        "ts_future": 1,
        "not_json": 1,
        "ts_past": 1,
    }
    assert doc["dead_letters"][3]["size"] == len(b"\xff\xfe not json")
    assert doc["dead_letters"][0]["replayed_at"] is None
    filtered = json.loads(_cli(listed, "dead-letters", "list", "--json", "--reason", "ts_past").stdout)
    assert filtered["matching"] == 1
    assert "summary" not in filtered
    one = json.loads(_cli(listed, "dead-letters", "list", "--json", "--show", "4").stdout)
    assert one["payload"] is None  # not UTF-8
    assert one["payload_base64"] == "//4gbm90IGpzb24="


def test_show_prints_one_dead_letter_whole_with_its_payload_pretty(listed: Settings) -> None:
    out = _cli(listed, "dead-letters", "list", "--show", "1").stdout
    assert "reason:    unknown_machine" in out
    assert "detail:    machine acme/site1/line1/pump-1 is not registered" in out
    assert "payload (JSON):" in out
    assert '\n  "ts": 1700000000000,\n' in out  # indented: pretty-printed, not the compact wire form
    assert '    "a": 2.5\n' in out
    binary = _cli(listed, "dead-letters", "list", "--show", "4").stdout
    assert "payload (binary, shown as Python bytes):" in binary
    assert "b'\\xff\\xfe not json'" in binary
    assert "no dead letter 99 in schema" in _error(_cli(listed, "dead-letters", "list", "--show", "99"))


def test_ordinary_mistakes_get_one_line(listed: Settings) -> None:
    line = _error(_process(listed, "dead-letters", "list", "--reason", "unknown"))
    assert "--reason 'unknown'" in line
    assert "unknown_machine" in line  # the valid ones are listed
    assert "ts_future" in line
    assert "--since 'yesterday'" in _error(_cli(listed, "dead-letters", "list", "--since", "yesterday"))
    assert "--until" in _error(_cli(listed, "dead-letters", "list", "--until", "3 parsecs"))
    assert "--gateway" in _error(_cli(listed, "dead-letters", "list", "--gateway", "acme/site 1"))
    assert "'#' must be the last level" in _error(_cli(listed, "dead-letters", "list", "--topic", "a/#/b"))
    assert "is not before" in _error(_cli(listed, "dead-letters", "list", "--since", "1h", "--until", "2h"))
    assert "--all" in _error(_cli(listed, "dead-letters", "replay"))
    never = make_settings(unique("wlt_never_"), listed.topic_prefix)
    assert "wearline db migrate" in _error(_cli(never, "dead-letters", "list"))


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _count(schema: str, sql: str) -> int:
    return int(str(_query(schema, sql)[0][0]))


def _query(schema: str, sql: str) -> list[tuple[object, ...]]:
    with connect_db(schema) as conn:
        return conn.execute(sql).fetchall()


async def test_replay_after_registering_the_machine_stores_the_readings(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    settings = make_settings(
        schema,
        unique("wlt/"),
        "native",
        mqtt={"host": host, "port": port},
        ingest={"auto_register": False, "max_future_s": 1.0},
    )
    await migrate(settings.database)
    with connect_db(schema) as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site1' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name) SELECT tenant_id, line_id, 'known' FROM t, l
                          RETURNING machine_id)
               INSERT INTO sensors (machine_id, position, name) SELECT machine_id, 1, 'a' FROM m"""
        )
    now = int(time.time() * 1000)
    known = telemetry_topic(settings.topic_prefix, MachinePath("acme", "site1", "line1", "known"))
    # A gateway clock 3 s ahead with ingest.max_future_s = 1: refused now, fine once the wall clock catches up.
    ahead = now + 3000
    refused = [(known, _payload(ahead, a=7.5))]
    # Ten times the replay's in-flight window of 100, from machines nobody registered yet; 50 each, within what
    # ingest stores of one topic's dead letters at once.
    n, per = 1000, 50
    strangers = [f"stranger-{i:02d}" for i in range(n // per)]
    for k in range(n):
        path = MachinePath("acme", "site1", "line1", strangers[k // per])
        sample = Sample(now - 1000 * k, {"a": 10.0 + k})
        refused.append((telemetry_topic(settings.topic_prefix, path), encode_message([sample], "pump")))
    expected = {("known", ahead): 7.5} | {(strangers[k // per], now - 1000 * k): 10.0 + k for k in range(n)}
    dead = (
        f"SELECT count(*) FROM dead_letters WHERE replayed_at IS {{}} NULL AND topic LIKE '{settings.topic_prefix}/%'"
    )
    stored = """SELECT m.name, (extract(epoch FROM r.time) * 1000)::bigint, r.vals[1]
                FROM readings r JOIN machines m USING (machine_id)"""

    def register_the_strangers() -> None:
        with connect_db(schema) as conn:
            conn.execute(
                """WITH m AS (INSERT INTO machines (tenant_id, line_id, name)
                              SELECT tenant_id, line_id, s FROM machines, unnest(%s::text[]) s WHERE name = 'known'
                              RETURNING machine_id)
                   INSERT INTO sensors (machine_id, position, name) SELECT machine_id, 1, 'a' FROM m""",
                [strangers],
            )

    async def refuse_fix_replay(subscribed: asyncio.Event, stop: asyncio.Event) -> int:
        try:
            await subscribed.wait()
            await asyncio.to_thread(publish, host, port, refused)
            await asyncio.to_thread(_wait, lambda: _count(schema, dead.format("")) == n + 1, "dead letters")
            reasons = _query(schema, "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
            assert reasons == [("ts_future", 1), ("unknown_machine", n)]
            dry = await asyncio.to_thread(
                _process, settings, "dead-letters", "replay", "--gateway", "acme", "--dry-run"
            )
            assert f"dry run: would replay {n + 1} and skip 0" in dry.stdout
            assert _count(schema, dead.format("NOT")) == 0  # nothing marked
            # The fix, with ingest still running and remembering the refused machines (its refusal cache): register
            # them, as an operator would with auto-registration off, and let the clock pass the gateway's sample
            # time. Then replay at once.
            await asyncio.to_thread(register_the_strangers)
            await asyncio.sleep(max(0.0, (ahead - time.time() * 1000) / 1000 + 0.5))
            done = await asyncio.to_thread(_process, settings, "dead-letters", "replay", "--gateway", "acme/site1")
            assert done.returncode == 0, done.stderr
            assert f"replayed {n + 1}, skipped 0" in done.stdout
            assert "failed 0" in done.stdout
            await asyncio.to_thread(
                _wait, lambda: _count(schema, f"SELECT count(*) FROM ({stored}) r") == n + 1, "rows"
            )
            await asyncio.sleep(1)  # time for any replayed message refused again to be stored as a dead letter
            return _count(schema, "SELECT count(*) FROM dead_letters")
        finally:
            stop.set()

    stop = asyncio.Event()
    subscribed = asyncio.Event()
    async with asyncio.timeout(90), asyncio.TaskGroup() as tg:
        run = tg.create_task(ingest.run_ingest(settings, stop, registry=CollectorRegistry(), subscribed=subscribed))
        job = tg.create_task(refuse_fix_replay(subscribed, stop))
    summary = run.result()

    rows = {(str(name), int(str(ms))): val for name, ms, val in _query(schema, stored)}
    assert rows == expected
    # Every dead letter is marked, and none came back: ingest took them all.
    marked = _count(schema, dead.format("NOT"))
    total = job.result()
    print(
        f"published {len(refused)}, dead-lettered then replayed {marked}, committed {len(rows)}, "
        f"dead letters in all {total}; ingest: {summary}"
    )
    assert marked == n + 1
    assert total == n + 1, "no replayed message was refused again"

    again = await asyncio.to_thread(_process, settings, "dead-letters", "replay", "--all")
    assert "replayed 0, skipped 0" in again.stdout
    listed = await asyncio.to_thread(_process, settings, "dead-letters", "list")
    assert "(0 not replayed)" in listed.stdout
    assert listed.stdout.count("[replayed ") == 50  # the default --limit


def test_replay_nobody_receives_is_failed_and_stays_pending(schema: str, shipped_broker: tuple[str, int]) -> None:
    # No ingest ever subscribed under this prefix: under MQTT 5 the broker says so in its PUBACK, and marking the
    # dead letter replayed would lose the payload.
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    asyncio.run(migrate(settings.database))
    with connect_db(schema) as conn:
        conn.execute(
            "INSERT INTO dead_letters (topic, reason, detail, payload) VALUES (%s, 'unknown_machine', 'x', %s)",
            [f"{settings.topic_prefix}/acme/site1/line1/m1/telemetry", _payload(int(time.time() * 1000))],
        )
    done = _process(settings, "dead-letters", "replay", "--reason", "unknown_machine")
    assert done.returncode == 1
    assert "replayed 0, skipped 0" in done.stdout
    assert "failed 1" in done.stdout
    assert "no subscriber" in done.stdout
    assert _query(schema, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")[0][0] == 1


def test_replay_with_the_broker_down_is_one_line(schema: str) -> None:
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": "127.0.0.1", "port": 1})
    asyncio.run(migrate(settings.database))
    with connect_db(schema) as conn:
        conn.execute(
            "INSERT INTO dead_letters (topic, reason, detail, payload) VALUES ('t/x', 'unknown_machine', 'x', 'p')"
        )
    line = _error(_process(settings, "dead-letters", "replay", "--all"))
    assert "127.0.0.1:1" in line
    assert _query(schema, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")[0][0] == 1


def test_every_dead_letters_column_is_one_the_commands_know(schema: str) -> None:
    # A tripwire for the schema contract: the original size of a capped payload may be recorded under any of
    # ORIGINAL_SIZE_COLUMNS; a new column under another name would make truncated payloads look whole to replay.
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    known = {"dead_letter_id", "received_at", "topic", "reason", "detail", "payload", "replayed_at"}
    with connect_db(schema) as conn:
        got = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'dead_letters'",
            [schema],
        ).fetchall()
    strange = {str(c) for (c,) in got} - known - set(ORIGINAL_SIZE_COLUMNS)
    assert not strange, (
        f"dead_letters has column(s) {sorted(strange)} that `wearline dead-letters` does not know: if one records "
        "the payload's original size, add its name to ingest._dead_letters.ORIGINAL_SIZE_COLUMNS"
    )


def test_a_truncated_payload_is_shown_as_such_and_never_replayed(schema: str, shipped_broker: tuple[str, int]) -> None:
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    asyncio.run(migrate(settings.database))
    topic = f"{settings.topic_prefix}/acme/site1/line1/m1/telemetry"
    whole = _payload(int(time.time() * 1000))
    with connect_db(schema) as conn:
        # As ingest writes them since migration 8: the kept bytes, and the size as received.
        insert = "INSERT INTO dead_letters (topic, reason, detail, payload, original_size) VALUES (%s, %s, 'x', %s, %s)"
        conn.execute(insert, [topic, "oversized", b'{"v": 1, "ts": 17', 50_000])  # the first 17 of 50,000 bytes
        conn.execute(insert, [topic, "unknown_machine", whole, len(whole)])

    listed = _cli(settings, "dead-letters", "list", "--reason", "oversized").stdout
    assert "50000 B" in listed
    assert "[kept 17 B]" in listed
    assert "only the first 17 kept (cannot be replayed)" in _cli(settings, "dead-letters", "list", "--show", "1").stdout
    doc = json.loads(_cli(settings, "dead-letters", "list", "--json").stdout)
    assert [(d["truncated"], d["size"], d["stored_bytes"]) for d in doc["dead_letters"]] == [
        (False, len(whole), len(whole)),
        (True, 50_000, 17),
    ]
    dry = _cli(settings, "dead-letters", "replay", "--all", "--dry-run")
    assert "would replay 1 and skip 1" in dry.stdout
    # Nobody subscribes under this prefix, so the whole one fails (and stays pending); the truncated one is not sent.
    done = _cli(settings, "dead-letters", "replay", "--all")
    assert done.returncode == 1
    assert "replayed 0, skipped 1 (payload truncated when stored: cannot be replayed), failed 1" in done.stdout
    assert _query(schema, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")[0][0] == 2


def test_a_payload_without_puback_in_time_stays_pending_and_goes_again(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    # At-least-once across ten times the in-flight window: what the broker did not acknowledge in time is not
    # marked, and the next replay sends it again; the receiver sees duplicates, never a gap.
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    asyncio.run(migrate(settings.database))
    n = 1000
    with connect_db(schema) as conn:
        conn.execute(
            """INSERT INTO dead_letters (topic, reason, detail, payload)
               SELECT %s || '/acme/site1/line1/m' || (g %% 10) || '/telemetry', 'unknown_machine', 'x',
                      convert_to(g::text, 'UTF8')
               FROM generate_series(1, %s) g""",
            [settings.topic_prefix, n],
        )
    received: list[bytes] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("wlt-sub-"), protocol=MQTTProtocolVersion.MQTTv5)
    ready = threading.Event()
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda _c, _u, msg: received.append(bytes(msg.payload))
    sub.connect(host, port)
    sub.loop_start()
    try:
        sub.subscribe(f"{settings.topic_prefix}/#", qos=1)
        assert ready.wait(10)
        late = asyncio.run(ingest.replay_dead_letters(settings, ingest.DeadLetterFilter(), puback_timeout_s=0))
        # A PUBACK that beats the zero wait still counts; what matters is that every one that did not stays pending.
        assert late.replayed + late.failed == n
        assert late.failed > n // 2
        assert late.failures == {"no PUBACK within 0 s": late.failed}
        assert _query(schema, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")[0][0] == late.failed
        again = asyncio.run(ingest.replay_dead_letters(settings, ingest.DeadLetterFilter()))
        assert (again.replayed, again.failed) == (late.failed, 0)
        # The first run hung up without waiting, so some of its sends never left: those are not duplicates.
        _wait(lambda: len(set(received)) >= n, "every payload")
    finally:
        sub.disconnect()
        sub.loop_stop()
    print(
        f"dead letters {n}; first replay: acknowledged in time {late.replayed}, not {late.failed}; second replay: "
        f"acknowledged {again.replayed}; "
        f"received {len(received)}, distinct {len(set(received))}, duplicates {len(received) - len(set(received))}"
    )
    assert set(received) == {str(g).encode() for g in range(1, n + 1)}
    assert _query(schema, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")[0][0] == 0


async def test_a_connection_lost_mid_replay_stops_it_and_the_next_replay_sends_the_rest(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    proxy = TcpProxy(host, port)
    await proxy.start()
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": "127.0.0.1", "port": proxy.port})
    await migrate(settings.database)
    n = 5000  # enough that the cut lands mid-run
    with connect_db(schema) as conn:
        conn.execute(
            """INSERT INTO dead_letters (topic, reason, detail, payload)
               SELECT %s || '/acme/site1/line1/m1/telemetry', 'unknown_machine', 'x', convert_to(g::text, 'UTF8')
               FROM generate_series(1, %s) g""",
            [settings.topic_prefix, n],
        )
    received: set[bytes] = set()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("wlt-sub-"), protocol=MQTTProtocolVersion.MQTTv5)
    ready = threading.Event()
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda _c, _u, msg: received.add(bytes(msg.payload))
    sub.connect(host, port)  # straight to the broker: only the replay's connection is cut
    sub.loop_start()
    pending = "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL"
    try:
        sub.subscribe(f"{settings.topic_prefix}/#", qos=1)
        assert ready.wait(10)
        run = asyncio.create_task(ingest.replay_dead_letters(settings, ingest.DeadLetterFilter()))
        while _count(schema, pending) > n - 1000 and not run.done():  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.01)
        await proxy.cut()
        first = await run
        left = _count(schema, pending)
        print(f"first replay: {first}; pending after it {left}")
        assert first.stopped is not None
        assert first.stopped.startswith("connection lost")
        assert 1000 <= first.replayed < n
        assert left == n - first.replayed  # marked exactly what was acknowledged
        await proxy.restore()
        second = await ingest.replay_dead_letters(settings, ingest.DeadLetterFilter())
        print(f"second replay: {second}")
        assert (second.replayed, second.failed, second.stopped) == (left, 0, None)
        await asyncio.to_thread(_wait, lambda: len(received) >= n, "every payload")
    finally:
        sub.disconnect()
        sub.loop_stop()
        await proxy.close()
    assert received == {str(g).encode() for g in range(1, n + 1)}
    assert _query(schema, pending)[0][0] == 0


def test_replay_leaves_payload_refusals_alone_unless_their_reason_is_named(schema: str) -> None:
    settings = make_settings(schema, unique("wlt/"), "native")
    asyncio.run(migrate(settings.database))
    topic = f"{settings.topic_prefix}/acme/site1/line1/m1/telemetry"
    with connect_db(schema) as conn:
        for reason in ("not_json", "conflict", "bad_schema", "unknown_machine"):
            conn.execute(
                "INSERT INTO dead_letters (topic, reason, detail, payload) VALUES (%s, %s, 'x', 'p')", [topic, reason]
            )
    everything = _cli(settings, "dead-letters", "replay", "--all", "--dry-run").stdout
    assert "would replay 1 and skip 0" in everything
    assert "left 3 refused for the payload itself" in everything
    named = _cli(settings, "dead-letters", "replay", "--reason", "not_json", "--reason", "bad_schema", "--dry-run")
    assert "would replay 2 and skip 0" in named.stdout
    assert "left" not in named.stdout
