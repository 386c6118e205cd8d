"""Gateways as Sparkplug B edge nodes: an edge node per gateway, a device per machine.

What a gateway hands over (messages of samples per machine) becomes Sparkplug: the node's NBIRTH (with ``bdSeq``)
before anything else, a device's DBIRTH with its first sample's values (every sensor declared with an alias and a
datatype), then DDATA by alias with each sample's timestamp. When the gateway loses its uplink, its NDEATH is
published (the Will a broker would send; one connection carries every simulated node, so the simulator sends it)
and ``bdSeq`` moves on; when the uplink returns, the node is born again and the store-and-forward replay goes out
as historical metrics (``is_historical``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from wearline.sparkplug import BDSEQ_METRIC, NAMESPACE, DataType, Metric, encode_payload
from wearline.wire import Sample

__all__ = ["SparkplugEdge"]

_MAX_SENSORS = 256  # aliases: machine slot * this + sensor index + 1, unique within the edge node


@dataclass
class SparkplugEdge:
    """One gateway's Sparkplug session; :meth:`encode` turns its drained messages into Sparkplug messages."""

    group: str
    edge: str
    machines: dict[int, tuple[str, Sequence[str]]]  # fleet index -> (device id, sensor names)
    bdseq: int = 0
    seq: int = 0
    born: bool = False
    devices: set[int] = field(default_factory=set)
    births: int = 0
    deaths: int = 0
    _slots: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._slots = {m: k for k, m in enumerate(self.machines)}

    def _topic(self, kind: str, device: str | None = None) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge}" + (f"/{device}" if device else "")

    def _next_seq(self) -> int:
        s = self.seq
        self.seq = (s + 1) % 256
        return s

    def _alias(self, machine: int, sensor: int) -> int:
        return self._slots[machine] * _MAX_SENSORS + sensor + 1

    def death(self) -> list[tuple[str, bytes]]:
        """The node's NDEATH (its Will); the next session gets the next bdSeq."""
        if not self.born:
            return []
        bd = Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=self.bdseq)
        out = [(self._topic("NDEATH"), encode_payload(timestamp=int(time.time() * 1000), seq=None, metrics=[bd]))]
        self.born = False
        self.devices.clear()
        self.bdseq = (self.bdseq + 1) % 256
        self.deaths += 1
        return out

    def encode(self, messages: list[tuple[int, list[Sample]]], *, historical: bool = False) -> list[tuple[str, bytes]]:
        """Sparkplug messages for a gateway's drained messages, births first where a session or device has none."""
        out: list[tuple[str, bytes]] = []
        if messages and not self.born:
            self.seq = 0
            bd = Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=self.bdseq)
            out.append((self._topic("NBIRTH"), encode_payload(timestamp=int(time.time() * 1000), seq=0, metrics=[bd])))
            self.seq = 1
            self.born = True
            self.births += 1
        for machine, samples in messages:
            device, names = self.machines[machine]
            rest = samples
            if machine not in self.devices and samples:
                first, rest = samples[0], samples[1:]
                metrics = [
                    Metric(
                        name=n,
                        alias=self._alias(machine, j),
                        timestamp=first.ts_ms,
                        datatype=DataType.DOUBLE,
                        value=first.values.get(n),
                        is_null=first.values.get(n) is None,
                        is_historical=historical,
                    )
                    for j, n in enumerate(names)
                ]
                payload = encode_payload(timestamp=first.ts_ms, seq=self._next_seq(), metrics=metrics)
                out.append((self._topic("DBIRTH", device), payload))
                self.devices.add(machine)
            if rest:
                metrics = [
                    Metric(
                        alias=self._alias(machine, j),
                        timestamp=s.ts_ms,
                        value=s.values.get(n),
                        datatype=DataType.DOUBLE,
                        is_null=s.values.get(n) is None,
                        is_historical=historical,
                    )
                    for s in rest
                    for j, n in enumerate(names)
                    if n in s.values
                ]
                payload = encode_payload(timestamp=rest[-1].ts_ms, seq=self._next_seq(), metrics=metrics)
                out.append((self._topic("DDATA", device), payload))
        return out
