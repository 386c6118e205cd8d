"""Ingest's Prometheus metrics; one instance per process (or per test, on a fresh registry)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from wearline.gauges import NewestTimestamp
from wearline.wire import Reason

__all__ = ["MESSAGE_OUTCOMES", "IngestMetrics"]


MESSAGE_OUTCOMES = ("written", "dead_letter", "not_ours")
"""What becomes of a message taken from the broker: written, stored as a dead letter, or another worker's share under
the partitioned scheme (acknowledged unwritten)."""


class IngestMetrics:
    """Every ingest metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.messages = Counter(
            "wearline_ingest_messages_total",
            "MQTT messages handled, by outcome (written, dead_letter, not_ours).",
            ["outcome"],
            registry=registry,
        )
        self.received = Counter(
            "wearline_ingest_messages_received_total",
            "MQTT messages taken from the broker into a batch (redeliveries included).",
            registry=registry,
        )
        self.readings_received = Counter(
            "wearline_ingest_readings_received_total",
            "Sensor values decoded from valid messages (a value sent twice counts twice).",
            registry=registry,
        )
        self.sessions_lost = Counter(
            "wearline_ingest_sessions_lost_total",
            "Reconnections on which the broker had not kept our persistent session.",
            registry=registry,
        )
        self.readings = Counter(
            "wearline_ingest_readings_total",
            "Sensor values committed to the readings table.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "wearline_ingest_dead_letters_total",
            "Messages stored as dead letters, by reason.",
            ["reason"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "wearline_ingest_redeliveries_total",
            "Messages the broker delivered again (DUP flag set).",
            registry=registry,
        )
        self.batch_messages = Histogram(
            "wearline_ingest_batch_messages",
            "Messages per committed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "wearline_ingest_commit_seconds",
            "Time to write and commit one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "wearline_ingest_latency_seconds",
            "From a sample's own timestamp to the commit that stored it.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "wearline_ingest_queue_depth", "Messages received and not yet committed.", registry=registry
        )
        self.db_up = Gauge("wearline_ingest_db_up", "1 while the database accepts writes.", registry=registry)
        self.broker_up = Gauge("wearline_ingest_broker_up", "1 while subscribed to the broker.", registry=registry)
        self.db_retries = Counter(
            "wearline_ingest_db_retries_total",
            "Batch writes retried after a database error.",
            registry=registry,
        )
        self.broker_reconnects = Counter(
            "wearline_ingest_broker_reconnects_total",
            "Connections to the broker lost or refused, each followed by a reconnection after a backoff.",
            registry=registry,
        )
        self.subscription = Gauge(
            "wearline_ingest_subscription_info",
            "1 for the subscription scheme in force (shared or partitioned) and the broker kind it was chosen for.",
            ["scheme", "broker"],
            registry=registry,
        )
        self.members = Gauge(
            "wearline_ingest_members",
            "Ingest identities by state as this worker last read them (missing or stopped: a share nobody writes).",
            ["state"],
            registry=registry,
        )
        # Labelled by tenant, not by gateway or machine: a conflict needs a registered machine, so the label's values
        # are the registry's tenants, which ingest.max_auto_tenants bounds; the machine is in the dead letter.
        self.conflicts = Counter(
            "wearline_ingest_conflicts_total",
            "Re-sent messages whose values differ from those stored first (kept as dead letters), by tenant.",
            ["tenant"],
            registry=registry,
        )
        self.dead_letters_unstored = Counter(
            "wearline_ingest_dead_letters_unstored_total",
            "Dead letters counted but not written to the table (per-topic or total rate limit), by reason.",
            ["reason"],
            registry=registry,
        )
        # Every outcome and reason reads 0 from the start: a series that appears with its first event leaves a panel
        # empty and sum(rate()) absent, not 0, until then.
        for outcome in MESSAGE_OUTCOMES:
            self.messages.labels(outcome)
        for reason in Reason:
            self.dead_letters.labels(reason.value)
            self.dead_letters_unstored.labels(reason.value)
        self.newest_sample = NewestTimestamp(
            "wearline_ingest_newest_sample_timestamp_seconds",
            "Own timestamp of the newest sample this worker committed (absent until its first); analytics' lag is "
            "measured against it.",
            registry=registry,
        )
        # Housekeeping's (ingest/_housekeeping.py). Every label value is set up front: a counter that appears only
        # with its first error leaves a panel empty and a rate() rule blind until then.
        self.housekeeping = Counter(
            "wearline_ingest_housekeeping_runs_total",
            "Housekeeping chores run, by chore and outcome (ok, error).",
            ["chore", "outcome"],
            registry=registry,
        )
        for chore in ("dead-letter retention", "readings partitions and retention", "TimescaleDB job statistics"):
            for outcome in ("ok", "error"):
                self.housekeeping.labels(chore, outcome)
        self.partitions_dropped = Counter(
            "wearline_storage_partitions_dropped_total",
            "Readings partitions dropped by retention (native storage).",
            registry=registry,
        )
        self.retention_days = Gauge(
            "wearline_storage_retention_days",
            "Retention in force, in days, by table (readings, dead_letters); 0 keeps everything.",
            ["table"],
            registry=registry,
        )
        self.job_failed = Gauge(
            "wearline_storage_job_last_run_failed",
            "1 when the last run of a TimescaleDB policy job of this schema failed, by kind (retention, compression, "
            "refresh).",
            ["kind"],
            registry=registry,
        )
        self.job_failures = Gauge(
            "wearline_storage_job_failures",
            "Failed runs of a TimescaleDB policy job of this schema since the job was created (TimescaleDB's count).",
            ["kind"],
            registry=registry,
        )
        self.job_success = Gauge(
            "wearline_storage_job_last_success_timestamp_seconds",
            "When a TimescaleDB policy job of this schema last finished successfully, by kind.",
            ["kind"],
            registry=registry,
        )
        self.machine_cache = Gauge(
            "wearline_ingest_machine_cache_machines",
            "Machines held in this worker's registry cache (bounded by ingest.machine_cache_size).",
            registry=registry,
        )
