"""``wearline bench ingest`` against another service (issue 17 item 3): an external broker, another service's rows
counted by a query, and CPU per message of every process the run involves (item 5)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from ingest import run_bench
from ingest._bench import BenchOptionError
from ingest._bench_peer import BenchExternal, check_bench_external, parse_bench_broker
from tests.conftest import TEST_DSN, TEST_MQTT, make_settings, unique
from tests.ingest._support import ingest_process
from wearline.db import migrate
from wearline.errors import WearlineError

_HOST, _PORT = TEST_MQTT.rsplit(":", 1)
_BROKER = (_HOST, int(_PORT))
_PEER = BenchExternal(broker=_BROKER, count_dsn=TEST_DSN, count_sql="SELECT 1")

REFUSED = [
    ("localhost", None, "--broker localhost: expected HOST:PORT"),
    ("127.0.0.1:0", None, "--broker 127.0.0.1:0: expected HOST:PORT"),
    ("127.0.0.1:70000", None, "--broker 127.0.0.1:70000: expected HOST:PORT"),
    ("127.0.0.1:x", None, "--broker 127.0.0.1:x: expected HOST:PORT"),
    (None, BenchExternal(broker=("127.0.0.1", 1)), "--broker 127.0.0.1:1: cannot connect"),
    (None, BenchExternal(count_sql="SELECT 1"), "--count-sql needs --count-dsn"),
    (None, BenchExternal(count_dsn=TEST_DSN), "--count-dsn needs --count-sql"),
    (None, BenchExternal(count_dsn=TEST_DSN, count_sql="SELECT 1"), "--count-sql needs --broker"),
    (None, BenchExternal(peer_pids=(os.getpid(),)), "--peer-pid needs --count-sql"),
    (None, BenchExternal(broker_pid=os.getpid()), "--broker-pid needs --broker"),
    (None, replace(_PEER, peer_pids=(2147483646,)), "--peer-pid 2147483646: no such process"),
    (None, BenchExternal(broker=_BROKER, broker_pid=0), "--broker-pid 0: no such process"),
    (
        None,
        replace(_PEER, count_dsn="postgresql://postgres@127.0.0.1:1/x"),
        "--count-dsn 127.0.0.1:1/x: cannot connect",
    ),
    (None, replace(_PEER, count_sql="SELECT count(*) FROM no_such_table"), "--count-sql 'SELECT count(*) FROM no_such"),
    (None, replace(_PEER, count_sql="SELECT 'many'"), "must answer one row of one number"),
    (None, replace(_PEER, count_sql="SELECT 1, 2"), "must answer one row of one number"),
    (None, replace(_PEER, count_sql="SELECT 1 UNION ALL SELECT 2"), "must answer one row of one number"),
    (None, replace(_PEER, count_sql="SELECT NULL::int"), "must answer one row of one number"),
    (None, replace(_PEER, count_sql="SELECT true"), "must answer one row of one number"),
]


def _check(broker: str | None, ext: BenchExternal | None) -> None:
    if broker is not None:
        parse_bench_broker(broker)
    else:
        assert ext is not None
        check_bench_external(ext, sparkplug=False, cprofile=False)


@pytest.mark.parametrize(("broker", "ext", "says"), REFUSED, ids=[s for _, _, s in REFUSED])
def test_options_that_cannot_describe_a_run_are_refused_in_one_line(
    broker: str | None, ext: BenchExternal | None, says: str
) -> None:
    with pytest.raises(WearlineError) as info:
        _check(broker, ext)
    message = str(info.value)
    print(message)
    assert message.startswith("--")  # the option it names comes first
    assert says in message
    assert "\n" not in message


def test_run_bench_refuses_before_starting_anything() -> None:
    settings = make_settings(unique("wlt_"), unique("wlt/"), "native")
    with pytest.raises(BenchOptionError, match="--cprofile has nothing to profile"):
        run_bench(
            settings,
            workers=1,
            machines=10,
            sensors=1,
            samples_per_message=1,
            duration_s=1,
            rate=0,
            cprofile_to=Path("/tmp"),
            external=_PEER,
        )


def test_a_run_against_an_external_broker_counts_the_other_services_rows(
    shipped_broker: tuple[str, int], schema: str, tmp_path: Path
) -> None:
    """Wearline's own ingest, started as a separate service, plays the peer: the benchmark publishes to a broker it
    did not start and counts the peer's rows with the query, and measures the peer's CPU and its backends'."""
    settings = make_settings(
        schema, unique("wlt/"), "native", mqtt={"host": shipped_broker[0], "port": shipped_broker[1]}
    )
    asyncio.run(migrate(settings.database))
    count_sql = f"SELECT coalesce(sum(cardinality(array_remove(vals, NULL))), 0) FROM {schema}.readings"
    with ingest_process(settings, tmp_path / "peer.log") as peer:
        r = run_bench(
            settings,
            workers=1,
            machines=100,
            sensors=2,
            samples_per_message=5,
            duration_s=2,
            rate=500,
            drain_timeout_s=30,
            external=BenchExternal(
                broker=shipped_broker, count_dsn=TEST_DSN, count_sql=count_sql, peer_pids=(peer.pid,)
            ),
        )
    print(r)
    with psycopg.connect(TEST_DSN) as conn:
        row = conn.execute(count_sql.encode()).fetchone()
    assert row is not None
    assert r.committed_by == "peer"
    assert r.workers == 0
    assert r.broker == f"{shipped_broker[0]}:{shipped_broker[1]}"
    assert r.messages > 100
    assert r.published_readings == 100 * 2 + r.messages * 10  # the warm-up round, then 10 readings a message
    assert r.lost_readings == 0
    assert r.committed_readings == r.published_readings == row[0]
    assert r.cpu_s["ingest"] is None  # no Wearline worker ran
    peer_cpu, db_cpu = r.cpu_s["peer"], r.cpu_s["database"]
    assert peer_cpu is not None
    assert peer_cpu > 0
    assert db_cpu is not None
    assert db_cpu > 0, r.database_cpu
    assert r.database_cpu.startswith(("1 PostgreSQL backend ", "2 PostgreSQL backends", "3 PostgreSQL backends"))
    assert r.cpu_s["broker"] is None  # an external broker's pid was not given
    assert r.cpu_us_per_message["peer"] == round(peer_cpu / r.messages * 1e6, 2)
