"""Fuzzing the parsers that take input from outside (issue 14, item 6): topics, settings (TOML files and the
environment), alert rule files and CSV files. Each either accepts its input or refuses it with its own error whose
message is one line; nothing else escapes (no crash, no traceback a user would see). The payload decoder has its
own properties in tests/ingest/test_wire.py, the REST API its schemathesis run in tests/alerts/test_api.py.

atheris is left out: it needs a clang-built CPython extension and gives coverage guidance these small pure-Python
parsers do not need; hypothesis' generated inputs and shrinking cover them within the suite's time budget.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import RuleError, load_rules
from analytics import DataError, read_table
from wearline.settings import AlertsSettings, Settings, SettingsError, load_settings
from wearline.topics import MachinePath, TopicError, parse_telemetry_topic, telemetry_topic

LEVEL_CHARS = string.ascii_letters + string.digits + "_.-"
levels = st.text(LEVEL_CHARS, min_size=1, max_size=64)


@contextmanager
def _file(text: str, suffix: str) -> Iterator[Path]:
    # hypothesis runs many examples in one test: a fixture's tmp_path would be shared, a file per example is not.
    fd, name = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        yield Path(name)
    finally:
        os.unlink(name)


def _one_line(exc: BaseException, starts: str = "") -> None:
    assert str(exc), "an error that says nothing"
    assert "\n" not in str(exc), f"not one line: {exc!r}"
    assert str(exc).startswith(starts), f"does not name {starts}: {exc}"


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_any_topic_parses_or_is_refused(topic: str) -> None:
    try:
        path = parse_telemetry_topic("wearline", topic)
    except TopicError as exc:
        _one_line(exc)
    else:
        assert telemetry_topic("wearline", path) == topic


@given(levels, levels, levels, levels, st.sampled_from(["wearline", "a/b", "x-y"]))
def test_every_valid_machine_path_round_trips(tenant: str, site: str, line: str, machine: str, prefix: str) -> None:
    path = MachinePath(tenant, site, line, machine)
    assert parse_telemetry_topic(prefix, telemetry_topic(prefix, path)) == path


# TOML values of every type, including the wrong ones for a key.
toml_values = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {float("inf"): "inf", float("-inf"): "-inf"}.get(f, repr(f)) if f == f else "nan"
    ),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=30).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.lists(st.integers(-5, 20), max_size=4).map(lambda xs: "[" + ", ".join(map(str, xs)) + "]"),
    st.sampled_from(['{ machine_type = "pump" }', '{ site = "s", line = "l" }', "{ nope = 1 }", "{}"]),
)
RULE_KEYS = [
    "name", "kind", "where", "enabled", "open_ratio", "hold_ratio", "for_s", "max_gap_s", "horizon_h", "sensor",
    "above", "below", "critical", "clear_at", "priority", "machine_class", "zones", "factor", "min_s", "per_minute",
    "window_s", "ack_timeout_s", "levels", "bogus",
]  # fmt: skip
KINDS = ["anomaly", "remaining_life", "threshold", "vibration_zone", "silence", "dead_letters", "other"]


@st.composite
def rule_files(draw: Any) -> str:
    tables = []
    for _ in range(draw(st.integers(0, 4))):
        header = draw(st.sampled_from(["[[rule]]", "[[escalation]]", "[[rules]]", "[rule]"]))
        body = [f'kind = "{draw(st.sampled_from(KINDS))}"'] if draw(st.booleans()) else []
        body += [f'name = "{draw(st.sampled_from(["hot", "Bad Name", "", "a" * 70]))}"'] if draw(st.booleans()) else []
        keys = draw(st.lists(st.sampled_from(RULE_KEYS), max_size=6, unique=True))
        body += [f"{k} = {draw(toml_values)}" for k in keys if k not in ("kind", "name")]
        tables.append("\n".join([header, *body]))
    return "\n\n".join(tables)


@settings(max_examples=400)
@given(st.one_of(rule_files(), st.text(max_size=300)))
def test_any_rule_file_loads_or_is_refused_naming_the_file(text: str) -> None:
    with _file(text, ".toml") as path:
        try:
            rules = load_rules(AlertsSettings(rules=[path]))
        except RuleError as exc:
            _one_line(exc, starts=str(path))
        else:
            assert rules.files == (path,)


SETTING_VARS = [
    "WEARLINE_MQTT__PORT", "WEARLINE_MQTT__PROTOCOL", "WEARLINE_MQTT__TLS", "WEARLINE_DATABASE__STORAGE",
    "WEARLINE_INGEST__BATCH_MAX_MESSAGES", "WEARLINE_INGEST__WORKERS", "WEARLINE_ALERTS__TEAMS",
    "WEARLINE_ALERTS__RULES", "WEARLINE_ALERTS__ESCALATION_LEVELS", "WEARLINE_LOG__LEVEL", "WEARLINE_API__PORT",
    "WEARLINE_SHUTDOWN_GRACE_S", "WEARLINE_MQTT__PORTT", "WEARLINE_NOPE",
]  # fmt: skip
env_values = st.one_of(
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
    st.integers(-(10**9), 10**9).map(str),
    st.sampled_from(["[]", "{}", '["a"]', '{"a/b": "c"}', "true", "off", "5", "3.1.1", "nan", "1e999"]),
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(SETTING_VARS), env_values, max_size=4), st.text(max_size=120))
def test_any_environment_and_config_file_load_or_are_refused(env: dict[str, str], config: str) -> None:
    saved = {k: v for k, v in os.environ.items() if k.startswith("WEARLINE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        with _file(config, ".toml") as path:
            try:
                loaded = load_settings(path)
            except SettingsError as exc:
                _one_line(exc)
            else:
                assert isinstance(loaded, Settings)
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


@settings(max_examples=300)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.lists(
                st.sampled_from(["1", "2.5", "", "x", "NaN", "inf", "-", "1e400", '"a,b"', " "]), min_size=1, max_size=5
            ),
            max_size=8,
        ).map(lambda rows: "unit,time,a,b\n" + "\n".join(",".join(r) for r in rows)),
    )
)
def test_any_csv_reads_or_is_refused(text: str) -> None:
    with _file(text, ".csv") as path:
        try:
            table = read_table(path)
        except DataError as exc:
            _one_line(exc)
        else:
            assert len(table.names) >= 1
