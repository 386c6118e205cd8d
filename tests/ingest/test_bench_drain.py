"""`wearline bench ingest --backlog N` (issue 17, item 1): the workers are killed once the fleet is registered, N
messages are queued for their sessions, and new workers drain them. Here the backlog is twenty times the workers'
Receive Maximum, so the restarted workers resume their sessions with the broker's queue well past their window."""

from __future__ import annotations

import math

import pytest

from ingest import run_bench
from tests.conftest import make_settings, unique

RECEIVE_MAXIMUM = 200
BATCH = 50
BACKLOG = 20 * RECEIVE_MAXIMUM


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_backlog_of_twenty_windows_is_drained_and_every_reading_committed(schema: str, workers: int) -> None:
    settings = make_settings(
        schema, unique("wlt/"), "native", ingest={"receive_maximum": RECEIVE_MAXIMUM, "batch_max_messages": BATCH}
    )
    machines, sensors = 100, 2
    r = run_bench(
        settings,
        workers=workers,
        machines=machines,
        sensors=sensors,
        samples_per_message=1,
        duration_s=1,
        rate=0,
        backlog=BACKLOG,
    )
    print(
        f"workers {workers}: queued {r.messages} messages, published {r.published_readings} readings, committed "
        f"{r.committed_readings}, lost {r.lost_readings}; first commit after {r.first_commit_s} s, all after "
        f"{r.cpu_window_s} s"
    )
    assert r.backlog_messages == r.messages == BACKLOG
    # The warm-up round (one message per machine) and the backlog, all committed.
    assert r.published_readings == (machines + BACKLOG) * sensors
    assert r.committed_readings == r.published_readings
    assert r.lost_readings == 0
    assert r.first_commit_s is not None
    assert 0 < r.first_commit_s <= r.cpu_window_s
    assert len(r.workers_use) == workers  # the restarted workers reported
    assert math.isnan(r.latency_p99_ms)  # a backlog's wait is not ingest's latency
    # Behind, ingest takes batches of up to half its window (100 messages here) instead of batch_max_messages. Each
    # partitioned worker receives every message and writes its share (1 / workers of them).
    per_batch = [w.readings_per_batch for w in r.workers_use]
    print(f"readings written per batch: {per_batch}; batch_max_messages holds {BATCH * sensors / workers:g}")
    assert all(n > BATCH * sensors / workers for n in per_batch)
