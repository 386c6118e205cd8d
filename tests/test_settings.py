"""Settings: one typed object; a bad value fails at start-up with a message that names the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wearline.cli import app
from wearline.settings import SettingsError, load_settings


def test_defaults_cover_broker_database_topics_batches_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEARLINE_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls, s.mqtt.client_id) == ("127.0.0.1", 1883, False, "wearline")
    assert s.database.dsn.startswith("postgresql://")
    assert s.topic_prefix == "wearline"
    assert s.ingest.batch_max_messages > 0
    assert s.ingest.metrics_port == 9101


def test_environment_overrides_file_and_file_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "wearline.toml"
    conf.write_text('topic_prefix = "plant-a"\n[mqtt]\nhost = "broker.local"\nport = 8883\ntls = true\n')
    monkeypatch.setenv("WEARLINE_MQTT__PORT", "1884")
    s = load_settings(conf)
    assert s.topic_prefix == "plant-a"
    assert s.mqtt.host == "broker.local"
    assert s.mqtt.port == 1884
    assert s.mqtt.tls is True


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("WEARLINE_MQTT__PORT", "not-a-port", "mqtt.port (WEARLINE_MQTT__PORT)"),
        ("WEARLINE_MQTT__PORT", "70000", "mqtt.port (WEARLINE_MQTT__PORT)"),
        ("WEARLINE_DATABASE__SCHEMA", "Robert'); DROP", "database.schema (WEARLINE_DATABASE__SCHEMA)"),
        ("WEARLINE_DATABASE__DSN", "mysql://x", "database.dsn (WEARLINE_DATABASE__DSN)"),
        ("WEARLINE_TOPIC_PREFIX", "plant/#", "topic_prefix (WEARLINE_TOPIC_PREFIX)"),
        ("WEARLINE_INGEST__BATCH_MAX_MESSAGES", "0", "ingest.batch_max_messages"),
        ("WEARLINE_LOG__FORMAT", "xml", "log.format"),
    ],
)
def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_impossible_combination_names_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_INGEST__BATCH_MAX_MESSAGES", "5000")
    monkeypatch.setenv("WEARLINE_INGEST__RECEIVE_MAXIMUM", "100")
    with pytest.raises(SettingsError, match=r"ingest\.receive_maximum.*ingest\.batch_max_messages"):
        load_settings()


def test_misspelt_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_MQTT_HOST", "broker")  # one underscore: would silently do nothing
    with pytest.raises(SettingsError, match="WEARLINE_MQTT_HOST"):
        load_settings()
    monkeypatch.delenv("WEARLINE_MQTT_HOST")
    monkeypatch.setenv("WEARLINE_MQTT__HOTS", "broker")
    with pytest.raises(SettingsError, match=r"mqtt\.hots"):
        load_settings()


def test_missing_or_malformed_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\nport = 1\n")
    with pytest.raises(SettingsError, match=str(bad)):
        load_settings(bad)


def test_cli_reports_the_bad_setting_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_MQTT__PORT", "0")
    result = CliRunner().invoke(app, ["db", "info"])
    assert result.exit_code == 2
    assert "mqtt.port (WEARLINE_MQTT__PORT)" in result.output
