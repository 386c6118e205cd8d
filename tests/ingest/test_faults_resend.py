"""A conflicting re-send at volume (issue 11, items 4 and 6): 20,000 samples stored, sent again identically (silent),
then sent again with other values. Every stored value stays the first one and every conflicting message is counted
as a ``conflict`` dead letter, also those the dead-letter rate limit keeps out of the ``dead_letters`` table."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

import ingest
from tests.conftest import make_settings, unique
from tests.ingest._support import Fleet, connect_db, publish, stored_rows
from wearline.db import migrate

MACHINES, SAMPLES = 50, 400  # 20,000 samples of 10 readings, one sample a message


@dataclass(frozen=True)
class _Changed(Fleet):
    """The same fleet, every value different: what a gateway re-sending a corrupted buffer would send."""

    def value(self, i: int, k: int, s: int) -> float:
        return super().value(i, k, s) + 0.5


def _count(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> int:
    return int(registry.get_sample_value(name, labels or {}) or 0)


def _handled(registry: CollectorRegistry) -> int:
    return sum(_count(registry, "wearline_ingest_messages_total", {"outcome": o}) for o in ("written", "dead_letter"))


@pytest.mark.faults
@pytest.mark.timeout(180)
async def test_20000_conflicting_resends_keep_the_first_values_and_are_all_counted(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    host, port = shipped_broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port})
    await migrate(settings.database)
    start_ms = int(time.time() * 1000) - 3_600_000
    fleet = Fleet(settings.topic_prefix, machines=MACHINES, samples=SAMPLES, start_ms=start_ms)
    changed = _Changed(settings.topic_prefix, machines=MACHINES, samples=SAMPLES, start_ms=start_ms)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    sent = 0

    async def send(f: Fleet) -> None:
        nonlocal sent
        sent += await asyncio.to_thread(publish, host, port, f.messages())
        deadline = time.monotonic() + 60
        while _handled(registry) < sent:
            assert time.monotonic() < deadline, f"handled {_handled(registry)} of {sent}"
            await asyncio.sleep(0.1)

    def dead_letters() -> int:
        with connect_db(schema) as conn:
            row = conn.execute("SELECT count(*) FROM dead_letters WHERE reason = 'conflict'").fetchone()
            return int(str(row[0])) if row else 0

    async with asyncio.timeout(170), asyncio.TaskGroup() as tg:
        tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
        await subscribed.wait()
        try:
            await send(fleet)
            first_readings = _count(registry, "wearline_ingest_readings_total")
            await send(fleet)  # identical: silent
            identical_dead = _count(registry, "wearline_ingest_messages_total", {"outcome": "dead_letter"})
            identical_rows = await asyncio.to_thread(dead_letters)
            before_conflicts = _count(registry, "wearline_ingest_readings_total")
            await send(changed)
        finally:
            stop.set()

    rows = stored_rows(schema)
    stored_dead = dead_letters()
    conflicts = _count(registry, "wearline_ingest_conflicts_total", {"tenant": "acme"})
    by_reason = _count(registry, "wearline_ingest_dead_letters_total", {"reason": "conflict"})
    unstored = _count(registry, "wearline_ingest_dead_letters_unstored_total", {"reason": "conflict"})
    readings_after = _count(registry, "wearline_ingest_readings_total")
    wrong = sum(rows.get(k) != v for k, v in fleet.expected().items())
    print(
        f"\nconflicting re-send: published {fleet.rows} samples, then {fleet.rows} identical, then {changed.rows} "
        f"with other values; committed {len(rows)}, wrong values {wrong}; dead letters after the identical "
        f"re-send {identical_dead}; conflicts counted {conflicts} (dead_letters_total {by_reason}), "
        f"stored as rows {stored_dead}, kept out by the rate limit {unstored}"
    )
    assert first_readings == fleet.rows * 10
    assert (len(rows), wrong) == (fleet.rows, 0)
    assert (identical_dead, identical_rows) == (0, 0)
    # (An identical re-send counts in readings_total again: its rows are written, with the same values.)
    assert readings_after == before_conflicts, "a conflicting re-send committed readings"
    assert conflicts == by_reason == changed.rows
    # The rate limit was crossed: most conflicts are counted only; none is lost from the count.
    assert stored_dead < changed.rows // 2
    assert stored_dead + unstored == changed.rows
