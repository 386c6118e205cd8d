"""``wearline bench soak`` end to end, short: every fault of the rotation happens, nothing acknowledged is lost, and
the report carries the RSS table. The soak is a program; this only checks that it runs and reports honestly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import TEST_DSN, unique

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

FAULTS = ("ingest-kill", "broker-restart", "broker-kill", "analytics-kill", "alerts-kill")


@pytest.mark.timeout(150)
@pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason=f"mosquitto is not installed at {MOSQUITTO}")
def test_a_short_soak_survives_every_fault_and_reports() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEARLINE_")}
    schema = unique("wlt_")
    env.update({"WEARLINE_DATABASE__DSN": TEST_DSN, "WEARLINE_DATABASE__SCHEMA": schema})
    # 0.4 min with a fault every 0.07 min: five faults (each of the rotation once) at 500 messages/s; stages stay
    # down 2 s; RSS sampled every 0.1 min, the baseline after 0.1 min.
    flags = "--minutes 0.4 --fault-every 0.07 --rate 500 --machines 20 --restart-after 2 --sample-every 0.1"
    # A process group of its own: on a timeout the soak's stages, broker and publisher go with it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "wearline", "bench", "soak", *flags.split(), "--warmup", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=140)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    print(out)
    print(err[-3000:])
    counts = re.search(r"published ([\d,]+)\s+acknowledged ([\d,]+)\s+committed ([\d,]+)", out)
    lost = re.search(r"lost (\d+)\s+lost to broker kill -9 (\d+) \(at most ([\d,]+): acknowledged within", out)
    assert counts is not None, out
    assert lost is not None, out
    published, acked, committed = (int(x.replace(",", "")) for x in counts.groups())
    assert published >= 0.4 * 60 * 500 * 0.8, f"published {published}: the publisher did not hold the rate"
    assert acked == published
    assert int(lost.group(1)) == 0
    # A broker kill -9 may lose what it acknowledged since its last snapshot, and no more.
    assert int(lost.group(2)) <= int(lost.group(3).replace(",", ""))
    assert committed == acked - int(lost.group(2))
    assert "duplicate rows 0" in out
    assert "off-grid rows 0" in out
    for fault in FAULTS:
        assert re.search(rf"^\s+[\d.]+ min\s+{fault}\s+\S+ pid \d+ ", out, re.M), f"{fault} did not happen"
    table = out.split("RSS MB (* a new process since the sample before):", 1)
    assert len(table) == 2, "no RSS table"
    header, *rows = table[1].strip().splitlines()
    assert header.split() == ["min", "ingest", "analytics", "alerts", "broker", "publisher"]
    assert sum(1 for r in rows if re.match(r"^\s+\d+\.\d\s+", r)) >= 4
    assert re.search(r"^\s+ingest\s+[\d.]+ ->\s+[\d.]+ MB", out, re.M)
    assert "verdict: lost 0 (ok)" in out
    assert proc.returncode == (0 if "; PASS" in out else 1)
    with psycopg.connect(TEST_DSN, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [f"{schema}_soak_%"]).fetchone()
    assert left == (0,), "the soak's schema was not dropped"
