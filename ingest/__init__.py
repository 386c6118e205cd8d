"""Ingest: MQTT telemetry in, committed readings out; acknowledged to the broker only after commit."""

from ingest._metrics import IngestMetrics
from ingest._mqtt import BrokerError
from ingest._service import IngestSummary, run_ingest

__all__ = ["BrokerError", "IngestMetrics", "IngestSummary", "run_ingest"]
