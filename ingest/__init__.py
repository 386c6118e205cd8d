"""Ingest: MQTT telemetry in, committed readings out; acknowledged to the broker only after commit."""

from ingest._bench import BenchResult, run_bench
from ingest._bench_peer import BenchExternal, check_bench_external, parse_bench_broker
from ingest._dead_letters import (
    DeadLetterError,
    DeadLetterFilter,
    ReasonSummary,
    StoredDeadLetter,
    count_dead_letters,
    dead_letter_summary,
    get_dead_letter,
    list_dead_letters,
    parse_time,
)
from ingest._gateways import (
    RELOAD_HINT,
    Gateway,
    GatewayError,
    add_gateway,
    broker_files,
    list_gateways,
    revoke_gateway,
    write_broker_files,
)
from ingest._membership import IngestMember, ingest_members
from ingest._metrics import IngestMetrics
from ingest._mqtt import BrokerError
from ingest._replay import PAYLOAD_REASONS, ReplayCounts, replay_dead_letters
from ingest._service import IngestSummary, freeze_start_up, run_ingest

__all__ = [
    "PAYLOAD_REASONS",
    "RELOAD_HINT",
    "BenchExternal",
    "BenchResult",
    "BrokerError",
    "DeadLetterError",
    "DeadLetterFilter",
    "Gateway",
    "GatewayError",
    "IngestMember",
    "IngestMetrics",
    "IngestSummary",
    "ReasonSummary",
    "ReplayCounts",
    "StoredDeadLetter",
    "add_gateway",
    "broker_files",
    "check_bench_external",
    "count_dead_letters",
    "dead_letter_summary",
    "freeze_start_up",
    "get_dead_letter",
    "ingest_members",
    "list_dead_letters",
    "list_gateways",
    "parse_bench_broker",
    "parse_time",
    "replay_dead_letters",
    "revoke_gateway",
    "run_bench",
    "run_ingest",
    "write_broker_files",
]
