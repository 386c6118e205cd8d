"""Gateways: machines grouped behind an edge box that batches samples, loses its uplink, stores and forwards, runs
on a skewed clock and now and then sends a message twice."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from simulators._scenario import GatewaySpec
from wearline.wire import Sample

__all__ = ["Gateway", "GatewayStats", "make_gateways"]


@dataclass
class GatewayStats:
    """What the gateways did: messages out, duplicates sent, outages, samples replayed and samples lost."""

    messages: int = 0
    samples: int = 0
    duplicates: int = 0
    outages: int = 0
    replayed: int = 0
    lost: int = 0


@dataclass
class Gateway:
    """One gateway; :meth:`offer` takes a sample, :meth:`drain` returns the messages to send now."""

    name: str
    machines: list[int]
    skew_ms: int
    spec: GatewaySpec
    rng: np.random.Generator
    stats: GatewayStats
    outage_until: float = -math.inf
    _pending: dict[int, list[Sample]] = field(default_factory=dict)
    _stored: deque[tuple[int, Sample]] = field(default_factory=deque)

    def offer(self, machine: int, sample: Sample) -> None:
        skewed = Sample(sample.ts_ms + self.skew_ms, sample.values) if self.skew_ms else sample
        if self.outage_until > -math.inf:
            if len(self._stored) >= self.spec.buffer_max_samples:
                self._stored.popleft()  # a full buffer drops the oldest, as most edge boxes do
                self.stats.lost += 1
            self._stored.append((machine, skewed))
            return
        self._pending.setdefault(machine, []).append(skewed)

    def drain(self, time_s: float, dt_s: float) -> list[tuple[int, list[Sample]]]:
        """Messages ready at ``time_s``: full batches, a replay after an outage; nothing during an outage."""
        spec = self.spec
        if self.outage_until > -math.inf and time_s >= self.outage_until:
            self.outage_until = -math.inf
            for machine, sample in self._stored:
                self._pending.setdefault(machine, []).append(sample)
            self.stats.replayed += len(self._stored)
            self._stored.clear()
            force = True
        else:
            force = False
        if (
            self.outage_until == -math.inf
            and spec.outage_rate_per_day > 0
            and self.rng.random() < -math.expm1(-spec.outage_rate_per_day * dt_s / 86400)
        ):
            self.outage_until = time_s + self.rng.exponential(spec.outage_mean_s)
            self.stats.outages += 1
            # What was pending goes into the store-and-forward buffer with everything that follows.
            for machine, samples in self._pending.items():
                self._stored.extend((machine, s) for s in samples)
            self._pending.clear()
            return []
        out: list[tuple[int, list[Sample]]] = []
        for machine, samples in list(self._pending.items()):
            while len(samples) >= spec.batch_samples or (force and samples):
                batch, samples[:] = samples[: spec.batch_samples], samples[spec.batch_samples :]
                out.append((machine, batch))
                if spec.duplicate_prob > 0 and self.rng.random() < spec.duplicate_prob:
                    out.append((machine, batch))
                    self.stats.duplicates += 1
            if not samples:
                del self._pending[machine]
        self.stats.messages += len(out)
        self.stats.samples += sum(len(b) for _, b in out)
        return out

    def flush(self) -> list[tuple[int, list[Sample]]]:
        """Everything still held (pending and stored), for an orderly stop."""
        out = [(m, s) for m, s in self._pending.items() if s]
        grouped: dict[int, list[Sample]] = {}
        for machine, sample in self._stored:
            grouped.setdefault(machine, []).append(sample)
        out.extend(grouped.items())
        self._pending.clear()
        self._stored.clear()
        self.stats.messages += len(out)
        self.stats.samples += sum(len(b) for _, b in out)
        return out


def make_gateways(machines: int, spec: GatewaySpec, seed: int) -> tuple[list[Gateway], list[int]]:
    """Gateways for ``machines`` machines in fleet order, and each machine's gateway index."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    stats = GatewayStats()
    gateways = []
    owner = []
    for g, first in enumerate(range(0, machines, spec.machines_per_gateway)):
        members = list(range(first, min(first + spec.machines_per_gateway, machines)))
        skew = round(rng.uniform(-spec.clock_skew_ms, spec.clock_skew_ms)) if spec.clock_skew_ms else 0
        gateways.append(Gateway(f"gw-{g:03d}", members, skew, spec, np.random.default_rng(rng.integers(2**63)), stats))
        owner.extend([g] * len(members))
    return gateways, owner
