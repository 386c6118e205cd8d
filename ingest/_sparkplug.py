"""Sparkplug B host application: each edge node's session (births, aliases, ``seq``, ``bdSeq``) and what its
messages mean for the readings, the registry and the machines' online state.

The session state is part of what a batch commits. :meth:`Sessions.begin` starts a batch from the committed
state, :meth:`Sessions.handle` works on copies of the nodes a message touches, :meth:`Sessions.save` writes those
copies in the batch's transaction and :meth:`Sessions.adopt` makes them the committed state once it has
committed. A batch retried after a database error, or split message by message, therefore starts again from what
the database holds, and a restarted ingest resumes each session where its committed data stops.

Readings are keyed by (machine, timestamp), so the order in which a node's messages are stored does not matter;
``seq`` is only watched for messages that never come. A sequence number skipped is remembered with a deadline
(``ingest.sparkplug.reorder_timeout_s``); if it arrives before it, nothing happens, otherwise a rebirth is asked.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from wearline.settings import IngestSettings
from wearline.sparkplug import (
    BDSEQ_METRIC,
    NAMESPACE,
    NUMERIC,
    DataType,
    MessageType,
    Metric,
    SparkplugError,
    Topic,
    datatype_name,
    decode_payload,
    metric_number,
)
from wearline.topics import MachinePath, TopicError
from wearline.wire import DecodedMessage, Reason, Sample

__all__ = ["Handled", "Sessions", "SparkplugMetrics"]

log = logging.getLogger(__name__)

NodeKey = tuple[str, str]  # (group id, edge node id)
_NODE = ""  # the device key of the edge node's own metrics
# Metrics that steer the session or describe the node rather than measure anything.
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/")


REBIRTH_CAUSES = ("before_birth", "unknown_alias", "unknown_metric", "seq_gap")
"""Why a rebirth is requested: data before a birth (or after a death), an alias or a metric the birth did not
declare, a sequence number still missing after ``ingest.sparkplug.reorder_timeout_s``."""


class SparkplugMetrics:
    """The host application's Prometheus metrics (beside ingest's own, on the same registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.rebirths = Counter(
            "wearline_ingest_sparkplug_rebirths_requested_total",
            "Rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes, by cause.",
            ["cause"],
            registry=registry,
        )
        self.seq_missing = Counter(
            "wearline_ingest_sparkplug_seq_missing_total",
            "Sequence numbers skipped by an edge node's messages (reordered or lost).",
            registry=registry,
        )
        self.seq_reordered = Counter(
            "wearline_ingest_sparkplug_seq_reordered_total",
            "Skipped sequence numbers that arrived later, within ingest.sparkplug.reorder_timeout_s.",
            registry=registry,
        )
        self.stale_deaths = Counter(
            "wearline_ingest_sparkplug_stale_deaths_total",
            "NDEATH messages ignored because their bdSeq is not the session's (a Will from an earlier connection).",
            registry=registry,
        )
        self.ignored = Counter(
            "wearline_ingest_sparkplug_metrics_ignored_total",
            "Metric values not stored as readings, by reason (a datatype name, transient, control, non_finite, "
            "bad_name).",
            ["reason"],
            registry=registry,
        )
        # Series that exist before their first event: a panel or rate() over them is 0, not empty, on a fresh start.
        for cause in REBIRTH_CAUSES:
            self.rebirths.labels(cause)
        for reason in ("control", "transient", "bad_name", "non_finite"):
            self.ignored.labels(reason)
        self.nodes = Gauge(
            "wearline_ingest_sparkplug_nodes",
            "Edge nodes this worker knows, by state (online: a birth in force).",
            ["state"],
            registry=registry,
        )
        self.machines = Gauge(
            "wearline_ingest_sparkplug_machines",
            "Machines of the edge nodes this worker knows (each node's own and its devices), by state (offline: "
            "its device or edge node died, or its device awaits its birth after the node's).",
            ["state"],
            registry=registry,
        )


@dataclass
class NodeSession:
    """What a host knows of one edge node: the session in force and the metrics its births declared."""

    born: bool = False
    bdseq: int | None = None
    seq: int | None = None
    missing: dict[int, float] = field(default_factory=dict)  # skipped seq -> wall-clock deadline (s)
    metrics: dict[str, dict[str, int]] = field(default_factory=dict)  # device ("" = node) -> name -> datatype
    aliases: dict[int, tuple[str, str]] = field(default_factory=dict)  # alias -> (device, name)
    devices: dict[str, bool] = field(default_factory=dict)  # device -> born
    rebirth_at: float = 0.0  # wall-clock time of the last rebirth request

    def clone(self) -> NodeSession:
        """A copy to change without touching this one (values are immutable: copying the containers is enough)."""
        return NodeSession(
            born=self.born,
            bdseq=self.bdseq,
            seq=self.seq,
            missing=dict(self.missing),
            metrics={dev: dict(names) for dev, names in self.metrics.items()},
            aliases=dict(self.aliases),
            devices=dict(self.devices),
            rebirth_at=self.rebirth_at,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "metrics": self.metrics,
                "aliases": {str(a): list(v) for a, v in self.aliases.items()},
                "devices": self.devices,
                "missing": {str(s): d for s, d in self.missing.items()},
                "rebirth_at": self.rebirth_at,
            }
        )

    @classmethod
    def from_row(cls, online: bool, bdseq: int | None, seq: int | None, session: dict[str, Any]) -> NodeSession:
        return cls(
            born=online,
            bdseq=bdseq,
            seq=seq,
            missing={int(s): float(d) for s, d in session.get("missing", {}).items()},
            metrics={dev: dict(names) for dev, names in session.get("metrics", {}).items()},
            aliases={int(a): (v[0], v[1]) for a, v in session.get("aliases", {}).items()},
            devices=dict(session.get("devices", {})),
            rebirth_at=float(session.get("rebirth_at", 0.0)),
        )


@dataclass
class Handled:
    """What one Sparkplug message amounts to: readings per machine, or a dead letter; and whether to ask a rebirth."""

    readings: list[tuple[MachinePath, DecodedMessage]] = field(default_factory=list)
    dead: tuple[Reason, str] | None = None


@dataclass
class _Mark:
    """A machine (or every machine of an edge node's line, ``machine`` None) going online or offline."""

    tenant: str
    site: str
    line: str
    machine: str | None
    online: bool
    at_ms: int


class Sessions:
    """Every edge node's session for one ingest worker; see the module's docstring for the batch protocol."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: SparkplugMetrics,
        *,
        request_rebirth: Callable[[str, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        sp = settings.sparkplug
        self._sites = {g: tuple(w.split("/")) for g, w in sp.groups.items()}
        self._reorder_s = sp.reorder_timeout_s
        self._rebirth_interval_s = sp.rebirth_interval_s
        self._max_future_ms = int(settings.max_future_s * 1000)
        self._max_past_ms = int(settings.max_past_days * 86_400_000)
        self._metrics = metrics
        self._request_rebirth = request_rebirth
        self._clock = clock
        self._committed: dict[NodeKey, NodeSession] = {}
        self._work: dict[NodeKey, NodeSession] = {}
        self._dirty: set[NodeKey] = set()
        self._marks: list[_Mark] = []
        self._rebirths: dict[NodeKey, str] = {}
        self._tally: Tally[tuple[str, str]] = Tally()
        metrics.nodes.labels("online").set_function(lambda: sum(n.born for n in self._committed.values()))
        metrics.nodes.labels("offline").set_function(lambda: sum(not n.born for n in self._committed.values()))
        metrics.machines.labels("online").set_function(lambda: self._machines(online=True))
        metrics.machines.labels("offline").set_function(lambda: self._machines(online=False))

    def _machines(self, *, online: bool) -> int:
        """Machines of the committed sessions in that state: a node's own machine exists once it was born (it keeps
        its bdSeq after its death), a device's once its DBIRTH came (an NDEATH or NBIRTH sets every device unborn)."""
        n = 0
        for node in list(self._committed.values()):
            n += node.bdseq is not None and node.born == online
            n += sum(born == online for born in node.devices.values())
        return n

    # --- the batch protocol -------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a batch (or a retry of one) from the committed state."""
        self._work.clear()
        self._dirty.clear()
        self._marks.clear()
        self._rebirths.clear()
        self._tally.clear()

    async def load(self, conn: psycopg.AsyncConnection[Any], key: NodeKey) -> None:
        """Read a node's committed session from the database the first time this worker sees the node."""
        if key in self._committed:
            return
        cur = await conn.execute(
            "SELECT online, bdseq, seq, session FROM sparkplug_nodes WHERE group_id = %s AND edge_node = %s", key
        )
        row = await cur.fetchone()
        self._committed[key] = NodeSession() if row is None else NodeSession.from_row(*row)

    async def load_owned(self, conn: psycopg.AsyncConnection[Any], owns: Callable[[str], bool]) -> int:
        """Read, at start, the committed sessions of every node of the mapped groups this worker owns (``owns``
        tells by a topic of the node), so that its gauges count nodes that died before a restart and stay quiet.
        Returns how many."""
        cur = await conn.execute(
            """SELECT group_id, edge_node, online, bdseq, seq, session FROM sparkplug_nodes
               WHERE group_id = ANY(%s)""",
            [list(self._sites)],
        )
        n = 0
        for group, edge, online, bdseq, seq, session in await cur.fetchall():
            key = (str(group), str(edge))
            if key not in self._committed and owns(f"{NAMESPACE}/{group}/{MessageType.NDATA}/{edge}"):
                self._committed[key] = NodeSession.from_row(online, bdseq, seq, session)
                n += 1
        return n

    def known(self, key: NodeKey) -> bool:
        return key in self._committed

    async def save(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Write the batch's session changes and machine states, in the caller's transaction."""
        for key in sorted(self._dirty):
            node = self._work[key]
            await conn.execute(
                """INSERT INTO sparkplug_nodes (group_id, edge_node, online, bdseq, seq, session, updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, now())
                   ON CONFLICT (group_id, edge_node) DO UPDATE SET online = excluded.online, bdseq = excluded.bdseq,
                       seq = excluded.seq, session = excluded.session, updated_at = now()""",
                [*key, node.born, node.bdseq, node.seq, node.to_json().decode()],
            )
        for m in self._marks:
            # Offline keeps the earliest death; a birth clears it. Machines are matched by name: a birth's machine
            # was registered by the batch's prepare, a death's may never have been (then nothing to mark).
            await conn.execute(
                """UPDATE machines m
                   SET offline_since = CASE WHEN %(online)s THEN NULL
                                            ELSE coalesce(m.offline_since, to_timestamp(%(at)s / 1000.0)) END
                   FROM lines l JOIN sites s USING (site_id) JOIN tenants t ON t.tenant_id = s.tenant_id
                   WHERE m.line_id = l.line_id AND t.name = %(tenant)s AND s.name = %(site)s AND l.name = %(line)s
                     AND (%(machine)s::text IS NULL OR m.name = %(machine)s)""",
                {
                    "online": m.online,
                    "at": m.at_ms,
                    "tenant": m.tenant,
                    "site": m.site,
                    "line": m.line,
                    "machine": m.machine,
                },
            )

    def adopt(self) -> None:
        """The batch committed: its sessions become the committed state, its counts and rebirth requests go out."""
        self._committed.update(self._work)
        for (kind, label), n in self._tally.items():
            if kind == "ignored":
                self._metrics.ignored.labels(label).inc(n)
            elif kind == "missing":
                self._metrics.seq_missing.inc(n)
            elif kind == "reordered":
                self._metrics.seq_reordered.inc(n)
            elif kind == "stale_death":
                self._metrics.stale_deaths.inc(n)
        for key, cause in self._rebirths.items():
            self._send_rebirth(key, cause, self._committed[key])
        self.begin()
        self.expire()

    def expire(self) -> None:
        """Ask a rebirth of every node with a sequence number missing past the reorder timeout.

        Works on the committed state; the next commit of the node's messages writes the change, and a restart
        before it asks again (a rebirth request is idempotent).
        """
        now = self._clock()
        for key, node in self._committed.items():
            if node.missing and min(node.missing.values()) <= now:
                node.missing.clear()
                self._send_rebirth(key, "seq_gap", node)

    def _send_rebirth(self, key: NodeKey, cause: str, node: NodeSession) -> None:
        now = self._clock()
        if now - node.rebirth_at < self._rebirth_interval_s:
            return
        node.rebirth_at = now
        self._metrics.rebirths.labels(cause).inc()
        log.info("sparkplug: asking %s/%s for a rebirth (%s)", key[0], key[1], cause)
        self._request_rebirth(*key)

    # --- messages -----------------------------------------------------------------------------------------------
    def _node(self, key: NodeKey) -> NodeSession:
        node = self._work.get(key)
        if node is None:
            committed = self._committed.get(key)
            node = self._work[key] = NodeSession() if committed is None else committed.clone()
        self._dirty.add(key)
        return node

    def _rebirth(self, key: NodeKey, cause: str) -> None:
        self._rebirths.setdefault(key, cause)

    def handle(self, topic: Topic, raw: bytes, *, now_ms: int, redelivered: bool) -> Handled:
        """What one message on a Sparkplug topic of a mapped group means; the node must be :meth:`load`-ed."""
        tenant, site = self._sites[topic.group]
        key = (topic.group, topic.edge)
        if topic.kind in (MessageType.NCMD, MessageType.DCMD):
            return Handled()  # commands are for edge nodes (ours included); nothing to store
        try:
            payload = decode_payload(raw)
        except SparkplugError as exc:
            return Handled(dead=(Reason.NOT_SPARKPLUG, str(exc)))
        try:
            where = MachinePath(tenant, site, topic.edge, topic.device or topic.edge)
        except TopicError as exc:
            return Handled(dead=(Reason.BAD_TOPIC, f"Sparkplug id not usable as a Wearline name: {exc}"))
        node = self._node(key)
        if topic.kind == MessageType.NDEATH:
            bdseq = _bdseq(payload.metrics)
            if not node.born or bdseq is None or bdseq != node.bdseq:
                self._tally["stale_death", ""] += 1
                log.info("sparkplug: %s: NDEATH bdSeq %s is not the session's (%s); ignored", topic, bdseq, node.bdseq)
                return Handled()
            node.born = False
            node.missing.clear()
            node.devices = dict.fromkeys(node.devices, False)
            self._marks.append(_Mark(tenant, site, topic.edge, None, False, now_ms))
            return Handled()
        seq = payload.seq
        if seq is None or not 0 <= seq <= 255:
            return Handled(dead=(Reason.NOT_SPARKPLUG, f"{topic.kind} without a seq of 0-255 (seq {seq})"))
        if topic.kind == MessageType.NBIRTH:
            return self._node_birth(
                topic,
                key,
                node,
                metrics=payload.metrics,
                seq=seq,
                where=where,
                now_ms=now_ms,
                redelivered=redelivered,
                payload_ts=payload.timestamp,
            )
        if not node.born:
            self._rebirth(key, "before_birth")
            return Handled(dead=(Reason.SPARKPLUG_UNBORN, f"{topic.kind} from {topic.edge} with no NBIRTH in force"))
        self._check_seq(node, seq)
        device = topic.device or _NODE
        if topic.kind == MessageType.DBIRTH:
            declared = _declare(node, device, payload.metrics)
            if isinstance(declared, str):
                return Handled(dead=(Reason.NOT_SPARKPLUG, declared))
            node.devices[device] = True
            self._marks.append(_Mark(tenant, site, topic.edge, device, True, now_ms))
            return self._readings(
                key,
                where,
                node,
                device=device,
                metrics=payload.metrics,
                payload_ts=payload.timestamp,
                now_ms=now_ms,
                birth=True,
            )
        if device != _NODE and not node.devices.get(device, False):
            if topic.kind == MessageType.DDEATH:
                return Handled()  # the device is dead already (or never born): nothing changes
            self._rebirth(key, "before_birth")
            return Handled(dead=(Reason.SPARKPLUG_UNBORN, f"{topic.kind} from device {device} with no DBIRTH in force"))
        if topic.kind == MessageType.DDEATH:
            node.devices[device] = False
            self._marks.append(_Mark(tenant, site, topic.edge, device, False, now_ms))
            return Handled()
        return self._readings(
            key,
            where,
            node,
            device=device,
            metrics=payload.metrics,
            payload_ts=payload.timestamp,
            now_ms=now_ms,
            birth=False,
        )

    def _node_birth(
        self,
        topic: Topic,
        key: NodeKey,
        node: NodeSession,
        *,
        metrics: list[Metric],
        seq: int,
        where: MachinePath,
        now_ms: int,
        redelivered: bool,
        payload_ts: int | None,
    ) -> Handled:
        bdseq = _bdseq(metrics)
        if bdseq is None:
            return Handled(dead=(Reason.NOT_SPARKPLUG, "NBIRTH without a bdSeq metric"))
        if not (redelivered and node.born and node.bdseq == bdseq):
            # A redelivered birth of the session in force (ingest crashed between commit and acknowledgement)
            # must not reset the sequence the messages after it have advanced.
            fresh = NodeSession(born=True, bdseq=bdseq, seq=seq, rebirth_at=node.rebirth_at)
            fresh.devices = dict.fromkeys(node.devices, False)
            node.__dict__.update(fresh.__dict__)
            self._rebirths.pop(key, None)  # whatever was asked for in this batch is answered
        declared = _declare(node, _NODE, metrics)
        if isinstance(declared, str):
            return Handled(dead=(Reason.NOT_SPARKPLUG, declared))
        self._marks.append(_Mark(where.tenant, where.site, where.line, where.machine, True, now_ms))
        return self._readings(
            key, where, node, device=_NODE, metrics=metrics, payload_ts=payload_ts, now_ms=now_ms, birth=True
        )

    def _check_seq(self, node: NodeSession, seq: int) -> None:
        if node.seq is None:
            node.seq = seq
            return
        expected = (node.seq + 1) % 256
        ahead = (seq - expected) % 256
        if ahead == 0:
            node.seq = seq
            node.missing.pop(seq, None)
        elif ahead < 128:  # skipped some: remember them until the reorder timeout
            deadline = self._clock() + self._reorder_s
            for k in range(ahead):
                node.missing[(expected + k) % 256] = deadline
            node.seq = seq
            self._tally["missing", ""] += ahead
        elif node.missing.pop(seq, None) is not None:  # a late one, within its timeout
            self._tally["reordered", ""] += 1
        # else: behind and not missing: a redelivery or a resend, stored idempotently

    def _readings(
        self,
        key: NodeKey,
        where: MachinePath,
        node: NodeSession,
        *,
        device: str,
        metrics: list[Metric],
        payload_ts: int | None,
        now_ms: int,
        birth: bool,
    ) -> Handled:
        declared = node.metrics.get(device, {})
        samples: dict[int, dict[str, float | None]] = {}
        for m in metrics:
            name = m.name
            if not birth and m.alias is not None:
                owner = node.aliases.get(m.alias)
                if owner is None or owner[0] != device:
                    self._rebirth(key, "unknown_alias")
                    return Handled(dead=(Reason.SPARKPLUG_UNKNOWN_METRIC, f"alias {m.alias} is not in the birth"))
                name = owner[1]
            if name is None or name not in declared:
                self._rebirth(key, "unknown_metric")
                return Handled(dead=(Reason.SPARKPLUG_UNKNOWN_METRIC, f"metric {name!r} is not in the birth"))
            datatype = m.datatype if m.datatype is not None else declared[name]
            value = self._value(name, m, datatype)
            if value is _SKIP:
                continue
            ts = m.timestamp if m.timestamp is not None else payload_ts if payload_ts is not None else now_ms
            if ts - now_ms > self._max_future_ms:
                return Handled(dead=(Reason.TS_FUTURE, f"metric {name!r}: ts {ts} is {(ts - now_ms) // 1000} s ahead"))
            if now_ms - ts > self._max_past_ms:
                return Handled(dead=(Reason.TS_PAST, f"metric {name!r}: ts {ts} is older than ingest.max_past_days"))
            samples.setdefault(ts, {})[name] = value  # type: ignore[assignment]
        decoded = DecodedMessage(None, [Sample(ts, values) for ts, values in samples.items()])
        # A birth registers its machine even when it carries no value, so that its death can mark it.
        return Handled(readings=[(where, decoded)] if samples or birth else [])

    def _value(self, name: str, m: Metric, datatype: int) -> float | object | None:
        if name == BDSEQ_METRIC or name.startswith(_CONTROL_PREFIXES):
            self._tally["ignored", "control"] += 1
            return _SKIP
        if m.is_transient:
            self._tally["ignored", "transient"] += 1
            return _SKIP
        if not 0 < len(name) <= 64 or not name.isprintable():
            self._tally["ignored", "bad_name"] += 1
            return _SKIP
        if datatype not in NUMERIC and datatype != DataType.BOOLEAN:
            self._tally["ignored", datatype_name(datatype)] += 1
            return _SKIP
        if m.is_null or m.value is None:
            return None
        try:
            number = metric_number(m.value, datatype)
        except ValueError:
            self._tally["ignored", datatype_name(datatype)] += 1
            return _SKIP
        if number is None:
            self._tally["ignored", "non_finite"] += 1
        return number


_SKIP = object()


def _bdseq(metrics: list[Metric]) -> int | None:
    for m in metrics:
        if m.name == BDSEQ_METRIC and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None


def _declare(node: NodeSession, device: str, metrics: list[Metric]) -> str | None:
    """Record a birth's metric names, datatypes and aliases; a reason string when the birth is malformed."""
    names: dict[str, int] = {}
    node.aliases = {a: owner for a, owner in node.aliases.items() if owner[0] != device}  # its earlier birth's
    for m in metrics:
        if m.name is None or m.datatype is None:
            return f"a birth metric without a name or datatype ({m.name!r}, alias {m.alias})"
        names[m.name] = m.datatype
        if m.alias is not None:
            owner = node.aliases.get(m.alias)
            if owner is not None and owner != (device, m.name) and node.devices.get(owner[0], owner[0] == _NODE):
                return f"alias {m.alias} of {m.name!r} is already {owner[1]!r} of {owner[0] or 'the node'}"
            node.aliases[m.alias] = (device, m.name)
    node.metrics[device] = names
    return None
