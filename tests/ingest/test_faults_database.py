"""The database goes away mid-stream (issue 11, item 6): a PostgreSQL restart, and a 30 s outage that holds ingest's
whole in-flight window for long enough that the broker queues ten windows' worth behind it. Every message the broker
acknowledged is committed exactly once and ingest is still running afterwards."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TEST_DSN, make_settings, unique
from tests.ingest._fault_support import (
    Publisher,
    broker,
    count_rows_at,
    keyed,
    pg_cluster,
    tally,
    wait_until,
    worker_env,
)
from tests.ingest._support import Fleet, TcpProxy, dsn_server, proxied_dsn, worker
from wearline.db import migrate
from wearline.mosquitto import free_port

DOWN_S = 4.0
OUTAGE_S = 30.0
WINDOW = 1000  # ingest.receive_maximum in the outage test: what ingest may hold unacknowledged


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def _settle(dsn: str, schema: str, want: int, timeout_s: float) -> int:
    """Wait for ``want`` rows (or ``timeout_s``); return the count."""
    deadline = time.monotonic() + timeout_s
    while (n := count_rows_at(dsn, schema)) < want and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_postgresql_restart_mid_stream_commits_every_acknowledged_message_once(schema: str, tmp_path: Path) -> None:
    with broker() as mosquitto, pg_cluster() as pg:
        settings = make_settings(
            schema,
            unique("wlt/"),
            "native",
            mqtt={"host": "127.0.0.1", "port": mosquitto.port, "client_id": unique("wlt-ingest-")},
            database={"dsn": pg.dsn, "connect_timeout_s": 1.0},
        )
        asyncio.run(migrate(settings.database))
        fleet = Fleet(settings.topic_prefix, machines=50, samples=400, start_ms=int(time.time() * 1000) - 3_600_000)
        messages = keyed(fleet)
        log = tmp_path / "ingest.log"

        with worker(worker_env(settings), log, wait_for=b"subscribed to") as ingest:
            pub = Publisher(mosquitto.port, messages, rate=2000)
            thread = pub.start()
            wait_until(lambda: count_rows_at(pg.dsn, schema) >= fleet.rows // 4, 60, "a quarter of the rows")
            pg.stop("fast")
            stopped_at = len(pub.acked)
            time.sleep(DOWN_S)
            during = len(pub.acked) - stopped_at
            pg.start()
            thread.join(120)
            assert not pub.error, pub.error
            got = _settle(pg.dsn, schema, len(pub.acked), timeout_s=60)
            assert ingest.poll() is None, log.read_text()[-3000:]

        result = tally(schema, fleet, pub.acked, dsn=pg.dsn)
        print(
            "\n" + result.line(f"PostgreSQL stopped (fast) for {DOWN_S:.0f} s mid-stream"),
            f"| {during} samples published while it was down; {got} rows",
        )
        text = log.read_text()
        assert during > 0, "the publisher stalled while the database was down"
        assert "database write failed, retrying" in text, "ingest never noticed the database was gone"
        assert "Traceback" not in text
        assert pub.acked_messages == len(messages)
        assert (result.published, result.committed, result.lost, result.wrong, result.duplicates) == (
            fleet.rows,
            fleet.rows,
            0,
            0,
            0,
        )


@contextmanager
def _proxy_thread(host: str, port: int) -> Iterator[tuple[TcpProxy, asyncio.AbstractEventLoop]]:
    """A :class:`TcpProxy` served by an event loop of its own thread (ingest runs in another process)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = TcpProxy(host, port)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield proxy, loop
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_a_30_s_database_outage_holds_the_window_and_commits_everything_once(schema: str, tmp_path: Path) -> None:
    with broker() as mosquitto, _proxy_thread(*dsn_server(TEST_DSN)) as (proxy, loop):
        direct = make_settings(
            schema,
            unique("wlt/"),
            "native",
            mqtt={"host": "127.0.0.1", "port": mosquitto.port, "client_id": unique("wlt-ingest-")},
        )
        asyncio.run(migrate(direct.database))
        settings = direct.model_copy(
            update={
                "database": direct.database.model_copy(
                    update={"dsn": proxied_dsn(TEST_DSN, proxy.port), "connect_timeout_s": 1.0}
                )
            }
        )
        # 50 machines x 400 instants at 500 messages/s: the publisher is still going 30 s into the outage.
        fleet = Fleet(settings.topic_prefix, machines=50, samples=400, start_ms=int(time.time() * 1000) - 3_600_000)
        messages = keyed(fleet)
        log = tmp_path / "ingest.log"
        metrics_port = free_port()
        env = worker_env(settings, receive_maximum=WINDOW, batch_max_messages=WINDOW // 2, metrics_port=metrics_port)

        with worker(env, log, wait_for=b"subscribed to") as ingest:
            pub = Publisher(mosquitto.port, messages, rate=500)
            thread = pub.start()
            wait_until(lambda: count_rows_at(TEST_DSN, schema) >= 2000, 60, "2,000 rows")
            asyncio.run_coroutine_threadsafe(proxy.cut(), loop).result(10)
            cut_at, acked_at_cut = time.monotonic(), len(pub.acked)
            rows_at_cut = count_rows_at(TEST_DSN, schema)
            db_down_seen, max_depth = False, 0.0
            while time.monotonic() - cut_at < OUTAGE_S:
                db_down_seen |= _metric(metrics_port, "wearline_ingest_db_up") == 0
                max_depth = max(max_depth, _metric(metrics_port, "wearline_ingest_queue_depth") or 0.0)
                time.sleep(0.5)
            rows_before_restore = count_rows_at(TEST_DSN, schema)
            during = len(pub.acked) - acked_at_cut
            asyncio.run_coroutine_threadsafe(proxy.restore(), loop).result(10)
            restored_at = time.monotonic()
            thread.join(120)
            assert not pub.error, pub.error
            got = _settle(TEST_DSN, schema, len(pub.acked), timeout_s=90)
            drain_s = time.monotonic() - restored_at
            assert ingest.poll() is None, log.read_text()[-3000:]
            assert _metric(metrics_port, "wearline_ingest_db_up") == 1

        result = tally(schema, fleet, pub.acked)
        print(
            "\n" + result.line(f"{OUTAGE_S:.0f} s database outage mid-stream"),
            f"| {during} samples published during it ({during / WINDOW:.0f}x ingest's window of {WINDOW}); "
            f"rows {rows_at_cut} at the cut, {rows_before_restore} at its end; queue depth at most {max_depth:.0f}; "
            f"all {got} rows in {drain_s:.1f} s after it",
        )
        text = log.read_text()
        assert during >= max(10_000, 10 * WINDOW), f"only {during} published during the outage"
        assert db_down_seen, "wearline_ingest_db_up never went to 0 during the outage"
        # Ingest held back: at most one window received and unacknowledged, the rest queued in the broker.
        assert WINDOW // 2 <= max_depth <= WINDOW
        assert rows_before_restore - rows_at_cut <= WINDOW, "rows kept arriving through a cut connection"
        assert "database write failed, retrying" in text
        assert "Traceback" not in text
        assert pub.acked_messages == len(messages)
        assert (result.published, result.committed, result.lost, result.wrong, result.duplicates) == (
            fleet.rows,
            fleet.rows,
            0,
            0,
            0,
        )
