"""Gateways: batching, store-and-forward through outages, clock skew and duplicate sends."""

from __future__ import annotations

from simulators import GatewaySpec, GatewayStats
from simulators._gateway import make_gateways
from wearline.wire import Sample


def drive(spec: GatewaySpec, steps: int, machines: int = 4) -> tuple[list[tuple[int, list[Sample]]], GatewayStats]:
    gateways, owner = make_gateways(machines, spec, seed=5)
    sent: list[tuple[int, list[Sample]]] = []
    for k in range(steps):
        for m in range(machines):
            gateways[owner[m]].offer(m, Sample(1_000 * k, {"x": float(k)}))
        for gw in gateways:
            sent.extend(gw.drain(float(k), 1.0))
    for gw in gateways:
        sent.extend(gw.flush())
    return sent, gateways[0].stats


def test_batches_carry_several_samples_of_one_machine() -> None:
    sent, _ = drive(GatewaySpec(machines_per_gateway=2, batch_samples=5), 20)
    assert len(sent) == 4 * 4
    assert all(len(batch) == 5 for _, batch in sent)
    for m in range(4):
        ts = [s.ts_ms for machine, batch in sent if machine == m for s in batch]
        assert ts == [1_000 * k for k in range(20)]


def test_outages_store_and_forward_every_sample() -> None:
    spec = GatewaySpec(machines_per_gateway=4, outage_rate_per_day=86400 / 20, outage_mean_s=10)
    sent, stats = drive(spec, 400)
    assert stats.outages > 3
    assert stats.replayed > 0
    assert stats.lost == 0
    for m in range(4):
        ts = sorted(s.ts_ms for machine, batch in sent if machine == m for s in batch)
        assert ts == [1_000 * k for k in range(400)]


def test_a_full_buffer_loses_the_oldest_and_counts_them() -> None:
    spec = GatewaySpec(machines_per_gateway=4, outage_rate_per_day=86400, outage_mean_s=1e6, buffer_max_samples=10)
    sent, stats = drive(spec, 50)
    assert stats.lost > 0
    assert sum(len(b) for _, b in sent) + stats.lost == 4 * 50


def test_clock_skew_and_duplicates() -> None:
    sent, stats = drive(GatewaySpec(machines_per_gateway=1, clock_skew_ms=500, duplicate_prob=0.2), 100)
    assert stats.duplicates > 0
    assert len(sent) == 4 * 100 + stats.duplicates
    offsets = {m: batch[0].ts_ms - 1_000 * int(batch[0].values["x"] or 0) for m, batch in sent}
    assert len(set(offsets.values())) > 1
    assert all(abs(o) <= 500 for o in offsets.values())
