"""Sparkplug B pieces that need no broker: the codec's round trip and integers, topics, and the one-line refusals
of settings and the simulator's option."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wearline.settings import SettingsError, load_settings
from wearline.sparkplug import (
    DataType,
    Metric,
    SparkplugError,
    decode_payload,
    encode_payload,
    metric_number,
    parse_topic,
)

WEARLINE = str(Path(sys.executable).with_name("wearline"))


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.INT8, -128),
        (DataType.INT8, 127),
        (DataType.INT16, -32768),
        (DataType.INT32, -(2**31)),
        (DataType.INT32, 2**31 - 1),
        (DataType.INT64, -(2**63)),
        (DataType.INT64, 2**63 - 1),
        (DataType.UINT32, 2**32 - 1),
        (DataType.UINT64, 2**64 - 1),
        (DataType.FLOAT, -1.5),
        (DataType.DOUBLE, 1e300),
        (DataType.BOOLEAN, True),
        (DataType.BOOLEAN, False),
    ],
)
def test_numbers_and_booleans_survive_the_wire(datatype: DataType, value: float) -> None:
    raw = encode_payload(timestamp=1, seq=7, metrics=[Metric(name="x", alias=3, datatype=datatype, value=value)])
    (m,) = decode_payload(raw).metrics
    assert (m.name, m.alias, m.datatype) == ("x", 3, datatype)
    assert m.value is not None
    assert metric_number(m.value, datatype) == float(value)


def test_int8_sent_in_its_own_width_is_read_as_negative() -> None:
    # Some encoders put -1 of an Int8 as 255 rather than as 32-bit two's complement.
    assert metric_number(255, DataType.INT8) == -1.0
    assert metric_number(0xFFFF, DataType.INT16) == -1.0


def test_non_finite_floats_are_no_value_and_strings_are_not_numbers() -> None:
    assert metric_number(math.nan, DataType.DOUBLE) is None
    assert metric_number(math.inf, DataType.FLOAT) is None
    with pytest.raises(ValueError, match="string"):
        metric_number("12", DataType.STRING)


def test_flags_and_payload_fields_decode() -> None:
    raw = encode_payload(
        timestamp=99,
        seq=255,
        metrics=[Metric(alias=1, timestamp=5, value=None, is_null=True, is_historical=True, is_transient=True)],
    )
    p = decode_payload(raw)
    assert (p.timestamp, p.seq) == (99, 255)
    (m,) = p.metrics
    assert (m.name, m.alias, m.timestamp, m.value, m.is_null, m.is_historical, m.is_transient) == (
        None,
        1,
        5,
        None,
        True,
        True,
        True,
    )


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b'{"v": 1}', b"\x0a\x05abc"])
def test_malformed_payloads_are_refused_in_one_line(raw: bytes) -> None:
    with pytest.raises(SparkplugError, match="not a Sparkplug B protobuf payload") as info:
        decode_payload(raw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("spAv1.0/g/NDATA/e", "namespace"),
        ("spBv1.0/g/NDATA", "<edge node>"),
        ("spBv1.0/g/XDATA/e", "not a Sparkplug B message type"),
        ("spBv1.0/g/DDATA/e", "has a device id"),
        ("spBv1.0/g/NDATA/e/d", "has no device id"),
        ("spBv1.0//NDATA/e", "<group>"),
    ],
)
def test_bad_topics_say_what_is_wrong(topic: str, why: str) -> None:
    with pytest.raises(SparkplugError, match=why):
        parse_topic(topic)


def test_topics_parse() -> None:
    t = parse_topic("spBv1.0/G1/DDATA/edge-1/pump-7")
    assert (t.group, t.kind, t.edge, t.device, str(t)) == (
        "G1",
        "DDATA",
        "edge-1",
        "pump-7",
        "spBv1.0/G1/DDATA/edge-1/pump-7",
    )


@pytest.mark.parametrize(
    ("groups", "named"),
    [
        ('{"G1": "acme"}', "expected 'tenant/site'"),
        ('{"G1": "acme/plant 1"}', "expected 'tenant/site'"),
        ('{"G/1": "acme/plant1"}', "is not a Sparkplug group id"),
        ('{"STATE": "acme/plant1"}', "is not a Sparkplug group id"),
    ],
)
def test_bad_group_mappings_name_the_setting(monkeypatch: pytest.MonkeyPatch, groups: str, named: str) -> None:
    monkeypatch.setenv("WEARLINE_INGEST__SPARKPLUG__GROUPS", groups)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "ingest.sparkplug.groups" in str(info.value)
    assert named in str(info.value)


def test_sparkplug_with_a_shared_subscription_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_INGEST__SPARKPLUG__GROUPS", '{"G1": "acme/plant1"}')
    monkeypatch.setenv("WEARLINE_INGEST__SUBSCRIPTION", "shared")
    with pytest.raises(SettingsError, match=r"ingest\.sparkplug\.groups.*ingest\.subscription"):
        load_settings()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--sparkplug", "G/1"], "is not a Sparkplug group id"),
        (["--sparkplug", "G1", "--mode", "offline"], "only for the live modes"),
    ],
)
def test_simulator_sparkplug_option_refusals(args: list[str], said: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}
    done = subprocess.run(
        [WEARLINE, "simulate", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
