"""Which subscription scheme keeps the delivery promise on the broker at hand, and which messages are ours.

*shared*: every worker subscribes to ``$share/<group>/...`` and the broker splits messages between them. Only safe
where the broker keeps shared subscriptions across its own restart: Mosquitto 2.0 persists sessions and plain
subscriptions but not shared ones, so everything published between its restart and our re-subscription is lost;
EMQX's durable sessions do not cover shared subscriptions either. ``auto`` therefore never picks it: it is for a
broker known to keep them (HiveMQ's file persistence), chosen with ``ingest.subscription = shared``.

*partitioned*: every worker holds a plain persistent subscription to all telemetry under a stable identity (worker
i of N, its own MQTT session), writes the machines whose topic hashes to i, and acknowledges the others unwritten:
the worker that owns them holds its own copy in its own session, kept by the broker while that worker is down and
across broker restarts. The price is that each worker receives every message. With one worker (the default) it is
simply a plain persistent subscription.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

from wearline.settings import Settings
from wearline.topics import telemetry_filter

__all__ = ["Subscription", "broker_kind", "choose_subscription", "owner_of"]

Scheme = Literal["shared", "partitioned"]
_SPARKPLUG = "spBv1.0/"


@dataclass(frozen=True, slots=True)
class Subscription:
    """The scheme in force for this process, the topic filter, this worker's identity and share, and why."""

    scheme: Scheme
    topic_filter: str
    client_id: str
    worker: int
    workers: int
    broker: str
    reason: str

    @property
    def share(self) -> str:
        """This worker's share as shown in ``ingest_members``: ``i/N`` or the shared group's filter."""
        return f"{self.worker}/{self.workers}" if self.scheme == "partitioned" else self.topic_filter

    def owns(self, topic: str) -> bool:
        """Whether this worker writes messages on ``topic`` (always, except in a partitioned scheme with N > 1)."""
        if self.workers == 1:
            return True
        if topic.startswith(_SPARKPLUG):
            # A Sparkplug edge node's messages share one session (seq, aliases): one worker takes them all.
            levels = topic.split("/")
            node = f"{levels[1]}/{levels[3]}" if len(levels) >= 4 else topic
            return owner_of(f"{_SPARKPLUG}{node}", self.workers) == self.worker
        return owner_of(topic, self.workers) == self.worker


def owner_of(topic: str, workers: int) -> int:
    """The worker identity that writes ``topic``: a hash that every process and version computes alike."""
    return zlib.crc32(topic.encode("utf-8", "surrogateescape")) % workers


def broker_kind(version: str | None) -> str:
    """``mosquitto``, ``emqx`` or ``unknown``, from the broker's ``$SYS`` version (None when it published none)."""
    if version is None:
        return "unknown"
    low = version.lower()
    if low.startswith("mosquitto"):
        return "mosquitto"
    if "emqx" in low or low[:1].isdigit():  # EMQX publishes a bare version number under $SYS/brokers/<node>/version
        return "emqx"
    return "unknown"


def choose_subscription(settings: Settings, *, client_id: str, broker_version: str | None) -> Subscription:
    """Decide the scheme from ``ingest.subscription`` and what the broker says it is (``$SYS``; None if silent)."""
    ing = settings.ingest
    kind = broker_kind(broker_version)
    broker = broker_version or "unknown (no $SYS version)"
    wanted = ing.subscription
    if wanted == "auto":
        if ing.shared_group is None:
            wanted, reason = "partitioned", "ingest.shared_group is none"
        elif kind == "emqx":
            # EMQX keeps sessions across a node restart only as durable sessions (5.7+), which do not cover
            # shared subscriptions; a plain subscription in a durable session does survive.
            wanted, reason = "partitioned", "EMQX's durable sessions do not keep shared subscriptions"
        elif kind == "mosquitto":
            wanted, reason = "partitioned", "Mosquitto does not keep shared subscriptions across its restart"
        else:
            wanted, reason = "partitioned", "unknown broker: plain persistent subscriptions are kept by every broker"
    else:
        reason = f"ingest.subscription = {wanted}"
        if wanted == "shared" and kind == "mosquitto":
            reason += " (WARNING: Mosquitto loses what is published between its restart and our re-subscription)"
    if wanted == "shared":
        group = ing.shared_group or "wearline-ingest"
        return Subscription("shared", telemetry_filter(settings.topic_prefix, group), client_id, 0, 1, broker, reason)
    # Worker 0 of 1 keeps the plain client id, so a single ingest resumes the session it had before schemes.
    ident = client_id if ing.workers == 1 else f"{client_id}-{ing.worker}of{ing.workers}"
    return Subscription(
        "partitioned", telemetry_filter(settings.topic_prefix, None), ident, ing.worker, ing.workers, broker, reason
    )
