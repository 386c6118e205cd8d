"""The payload decoder on the hot path: any input gives samples or a PayloadError, never anything else."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wearline.wire import PayloadError, Reason, Sample, decode_message, encode_message

NOW = 1_764_045_000_000
LIMITS = {"now_ms": NOW, "max_bytes": 4096, "max_future_ms": 300_000, "max_past_ms": 365 * 86_400_000}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=70), inner, max_size=4),
    max_leaves=12,
)
timestamps = (
    st.integers(min_value=NOW - 400 * 86_400_000, max_value=NOW + 400_000)
    | st.sampled_from(["2025-11-25T04:30:01.000Z", "2025-11-25T04:30:01", "yesterday", ""])
    | json_scalars
)
samples = st.fixed_dictionaries(
    {"ts": timestamps, "values": st.dictionaries(st.text(max_size=70), json_scalars, max_size=5) | json_values}
)
near_valid = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", None, 1.0, True])},
    optional={"type": json_scalars, "samples": st.lists(samples, max_size=3) | json_values, "ts": timestamps},
)


def _check(payload: bytes) -> None:
    # json.dumps, not orjson: it also writes what gateways get wrong (NaN, integers beyond 64 bits).
    reason: Reason | None
    try:
        decoded = decode_message(payload, **LIMITS)
    except PayloadError as exc:
        reason = exc.reason
    else:
        reason = None
    if reason is not None:
        assert isinstance(reason, Reason)
        return
    for sample in decoded.samples:
        assert isinstance(sample.ts_ms, int)
        assert NOW - LIMITS["max_past_ms"] <= sample.ts_ms <= NOW + LIMITS["max_future_ms"]
        for name, value in sample.values.items():
            assert 0 < len(name) <= 64
            assert name.isprintable()
            assert value is None or (isinstance(value, int | float) and math.isfinite(value))


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_refuse(payload: bytes) -> None:
    _check(payload)


@settings(max_examples=600)
@given(near_valid)
def test_near_valid_json_decodes_or_refuses(body: dict[str, object]) -> None:
    _check(json.dumps(body).encode())


@settings(max_examples=300)
@given(near_valid, st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=3))
def test_mangled_json_decodes_or_refuses(body: dict[str, object], at: int, junk: bytes) -> None:
    raw = json.dumps(body).encode()
    at = min(at, len(raw))
    _check(raw[:at] + junk + raw[at + 1 :])


@given(
    st.lists(
        st.builds(
            Sample,
            st.integers(min_value=NOW - 86_400_000, max_value=NOW),
            st.dictionaries(
                st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=64),
                st.none() | st.floats(allow_nan=False, allow_infinity=False),
                min_size=1,
                max_size=10,
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_what_a_gateway_encodes_decodes_to_the_same_samples(sent: list[Sample]) -> None:
    decoded = decode_message(encode_message(sent, "pump"), **LIMITS | {"max_bytes": 1 << 20})
    assert decoded.machine_type == "pump"
    assert [(s.ts_ms, dict(s.values)) for s in decoded.samples] == [(s.ts_ms, dict(s.values)) for s in sent]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.NOT_JSON),
        (b'{"v":1,"ts":1764045000000,"values":{"a":1e999}}', Reason.NON_FINITE),
        (b'{"v":1,"ts":1764045000000,"values":{"a":NaN}}', Reason.NOT_JSON),
        (b'{"v":1,"ts":"2025-11-25T04:30:01","values":{"a":1}}', Reason.BAD_SCHEMA),
        (b'{"v":1,"ts":1764045000000,"values":{"":1}}', Reason.BAD_SCHEMA),
        (b'{"v":1,"ts":1764045000000,"values":{"a":null},"type":"\\u0000"}', Reason.BAD_SCHEMA),
        (b'{"v":1,"ts":true,"values":{"a":1}}', Reason.BAD_SCHEMA),
    ],
)
def test_named_refusals(payload: bytes, reason: Reason) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_message(payload, **LIMITS)
    assert caught.value.reason == reason


def test_single_sample_shorthand_and_rfc3339() -> None:
    decoded = decode_message(b'{"v":1,"ts":"2025-11-25T04:30:00.5+01:00","values":{"a":2,"b":null}}', **LIMITS)
    assert decoded.samples == [Sample(1_764_041_400_500, {"a": 2, "b": None})]
