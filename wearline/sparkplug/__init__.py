"""Sparkplug B: topics and payloads (decode and encode), shared by ingest (the host application) and the
simulators (edge nodes). The payload schema is ``sparkplug_b.proto``, written from the specification; see
``docs/sparkplug.md``."""

from wearline.sparkplug._codec import (
    BDSEQ_METRIC,
    NAMESPACE,
    NUMERIC,
    REBIRTH_METRIC,
    DataType,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    Topic,
    datatype_name,
    decode_payload,
    encode_payload,
    metric_number,
    parse_topic,
    rebirth_command,
    state_topic,
)

__all__ = [
    "BDSEQ_METRIC",
    "NAMESPACE",
    "NUMERIC",
    "REBIRTH_METRIC",
    "DataType",
    "MessageType",
    "Metric",
    "Payload",
    "SparkplugError",
    "Topic",
    "datatype_name",
    "decode_payload",
    "encode_payload",
    "metric_number",
    "parse_topic",
    "rebirth_command",
    "state_topic",
]
