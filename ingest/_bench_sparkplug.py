"""The Sparkplug B profile of ``wearline bench ingest``: the same fleet, published as edge nodes would.

An edge node per line of 100 machines (``spBv1.0/bench/.../line<k>``), a device per machine; the warm-up is the
births (NBIRTH with bdSeq, then a DBIRTH per machine declaring its sensors with aliases and zero values), the
measured stream is DDATA with metrics by alias and no datatype, each sample's timestamp on its metrics, and ``seq``
counting per edge node. Published at QoS 1, like the JSON profile, so that loss is measured the same way.
"""

from __future__ import annotations

import random
import time
import uuid
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from wearline.settings import Settings
from wearline.sparkplug import BDSEQ_METRIC, NAMESPACE, DataType, Metric, encode_payload
from wearline.sparkplug import sparkplug_b_pb2 as pb

__all__ = ["GROUP", "sparkplug_publisher", "sparkplug_worker_settings"]

GROUP = "bench"
_PER_EDGE = 100


def sparkplug_worker_settings(settings: Settings, worker: int, workers: int) -> Settings:
    """Worker ``worker`` of ``workers`` as a Sparkplug host: partitioned by edge node (a shared subscription would
    split one node's session between workers)."""
    ing = settings.ingest.model_copy(
        update={
            "subscription": "partitioned",
            "workers": workers,
            "worker": worker,
            "sparkplug": settings.ingest.sparkplug.model_copy(
                update={"groups": {GROUP: "bench/site"}, "host_id": f"wlbench-{uuid.uuid4().hex[:6]}"}
            ),
        }
    )
    return settings.model_copy(update={"ingest": ing})


def _topic(kind: str, edge: int, machine: int | None = None) -> bytes:
    tail = f"/m{machine:05d}" if machine is not None else ""
    t = f"{NAMESPACE}/{GROUP}/{kind}/line{edge}{tail}".encode()
    return len(t).to_bytes(2, "big") + t


def sparkplug_publisher(
    *,
    port: int,
    prefix: str,
    machines: int,
    sensors: int,
    samples_per_message: int,
    duration_s: float,
    rate: float,
    go: MpEvent,
    out: Any,
    count: int = 0,
) -> None:
    """The JSON publisher's twin (same arguments, same reports), speaking Sparkplug B."""
    from ingest._bench import _BATCH, _MAX_IN_FLIGHT, _RawPublisher, publish_paced  # noqa: PLC0415 (a spawned child)

    client = _RawPublisher(port, f"wlbench-spb-{uuid.uuid4().hex[:8]}", _MAX_IN_FLIGHT)
    edges = (machines + _PER_EDGE - 1) // _PER_EDGE
    seq = [0] * edges
    data_topics = [_topic("DDATA", i // _PER_EDGE, i) for i in range(machines)]
    names = [f"s{j}" for j in range(sensors)]

    def alias(i: int, j: int) -> int:  # unique within the edge node, as the specification asks
        return (i % _PER_EDGE) * sensors + j + 1

    def next_seq(edge: int) -> int:
        s = seq[edge]
        seq[edge] = (s + 1) % 256
        return s

    # Warm-up: the births, which register the fleet with one zero reading per sensor (as the JSON warm-up does).
    now_ms = int(time.time() * 1000)
    births = []
    for e in range(edges):
        bd = Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=0)
        births.append((_topic("NBIRTH", e), encode_payload(timestamp=now_ms, seq=next_seq(e), metrics=[bd])))
    last = [now_ms] * machines
    for i in range(machines):
        metrics = [Metric(name=n, alias=alias(i, j), datatype=DataType.DOUBLE, value=0.0) for j, n in enumerate(names)]
        payload = encode_payload(timestamp=now_ms, seq=next_seq(i // _PER_EDGE), metrics=metrics)
        births.append((_topic("DBIRTH", i // _PER_EDGE, i), payload))
    for start in range(0, len(births), _BATCH):
        batch = births[start : start + _BATCH]
        while client.room() < len(batch):
            client.wait_acks()
        client.send(batch)
    out.put(("warm", machines))
    rng = random.Random(1)
    pool = [round(rng.random() * 100, 3) for _ in range(1021)]
    n_pool = len(pool)
    spm = samples_per_message
    # One protobuf message reused: building payloads is the publisher's cost, and it must not hide ingest's.
    msg = pb.Payload()
    k = 0

    def message(i: int, base: int, now_ms: int) -> tuple[bytes, bytes]:
        nonlocal k
        msg.Clear()
        msg.timestamp = now_ms
        msg.seq = next_seq(i // _PER_EDGE)
        for s in range(spm):
            for j in range(sensors):
                m = msg.metrics.add()
                m.alias = alias(i, j)
                m.timestamp = base + s
                m.double_value = pool[k]
                k = k + 1 if k + 1 < n_pool else 0
        return data_topics[i], msg.SerializeToString()

    go.wait()
    publish_paced(client, out, message, last=last, spm=spm, duration_s=duration_s, rate=rate, count=count)
