"""Ingest: MQTT telemetry in, committed readings out; acknowledged to the broker only after commit."""

from ingest._bench import BenchResult, run_bench
from ingest._membership import IngestMember, ingest_members
from ingest._metrics import IngestMetrics
from ingest._mqtt import BrokerError
from ingest._service import IngestSummary, run_ingest

__all__ = [
    "BenchResult",
    "BrokerError",
    "IngestMember",
    "IngestMetrics",
    "IngestSummary",
    "ingest_members",
    "run_bench",
    "run_ingest",
]
