"""Settings: one typed object; a bad value fails at start-up with a message that names the setting."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TEST_DSN, TEST_MQTT
from wearline.cli import app
from wearline.settings import DatabaseSettings, MqttSettings, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _no_wearline_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets what it needs: ./dev exports WEARLINE_DATABASE__DSN on a server that asks for a password."""
    for name in list(os.environ):
        if name.upper().startswith("WEARLINE_"):
            monkeypatch.delenv(name)


def test_defaults_cover_broker_database_topics_batches_and_metrics() -> None:
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
    with pytest.raises(SettingsError, match=r"WEARLINE_MQTT_HOST: unknown setting; did you mean WEARLINE_MQTT__HOST\?"):
        load_settings()
    monkeypatch.delenv("WEARLINE_MQTT_HOST")
    monkeypatch.setenv("WEARLINE_MQTT__HOTS", "broker")
    with pytest.raises(
        SettingsError, match=r"mqtt\.hots \(WEARLINE_MQTT__HOTS\): unknown setting; did you mean WEARLINE_MQTT__HOST"
    ):
        load_settings()
    monkeypatch.delenv("WEARLINE_MQTT__HOTS")
    monkeypatch.setenv("WEARLINE_MQTT__PROT", "1884")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "mqtt.prot (WEARLINE_MQTT__PROT): unknown setting; did you mean WEARLINE_MQTT__PORT or WEARLINE_MQTT__PROTOCOL?"
    )


@pytest.mark.parametrize("name", ["WEARLINE_TEST_DSN", "WEARLINE_TEST_MQTT", "WEARLINE_TEST_ANYTHING", "WEARLINE_VENV"])
def test_test_and_tool_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # ./dev exports WEARLINE_TEST_DSN on a server that asks for a password, and reads WEARLINE_VENV itself.
    monkeypatch.setenv(name, "postgresql://wearline:secret@127.0.0.1:5433/wearline")
    monkeypatch.setenv("WEARLINE_TOPIC_PREFIX", "plant-b")
    assert load_settings().topic_prefix == "plant-b"


def test_a_typo_next_to_the_test_prefix_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_TESTS_DSN", "x")
    with pytest.raises(SettingsError, match="WEARLINE_TESTS_DSN: unknown setting"):
        load_settings()


def test_commands_run_with_the_test_variables_set(monkeypatch: pytest.MonkeyPatch, schema: str) -> None:
    monkeypatch.setenv("WEARLINE_TEST_DSN", TEST_DSN)
    monkeypatch.setenv("WEARLINE_TEST_MQTT", TEST_MQTT)
    monkeypatch.setenv("WEARLINE_VENV", ".venv")
    monkeypatch.setenv("WEARLINE_DATABASE__DSN", TEST_DSN)
    monkeypatch.setenv("WEARLINE_DATABASE__SCHEMA", schema)
    result = CliRunner().invoke(app, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert f"schema {schema}: applied" in result.output


def _file(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    return conf


PLANT = """# plant A
topic_prefix = "plant-a"

[mqtt]
host = "broker.local"
port = 70000
"""


def test_a_bad_value_in_the_file_is_named_by_its_key_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _file(tmp_path, PLANT)
    with pytest.raises(SettingsError) as info:
        load_settings(Path("config.toml"))
    assert str(info.value) == "config.toml line 6: mqtt.port = 70000: Input should be less than or equal to 65535"
    assert "WEARLINE_" not in str(info.value)


def test_the_file_reports_strings_unknown_keys_dotted_keys_and_inline_tables(tmp_path: Path) -> None:
    conf = _file(
        tmp_path,
        'database.schema = "Plant A"\n[mqtt]\nprot = 1884\n[log]\nformat = "xml"\n[ingest]\nx = {y = 1}\n',
    )
    with pytest.raises(SettingsError) as info:
        load_settings(conf)
    message = str(info.value)
    for problem in (
        f'{conf} line 1: database.schema = "Plant A": must be a lower-case SQL identifier',
        f"{conf} line 3: mqtt.prot = 1884: unknown setting; did you mean mqtt.port or mqtt.protocol?",
        f"{conf} line 5: log.format = \"xml\": Input should be 'text' or 'json'",
        f"{conf} line 7: ingest.x = {{'y': 1}}: unknown setting",
    ):
        assert problem in message
    assert "WEARLINE_" not in message


def test_a_bad_value_from_the_environment_names_the_variable_even_with_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _file(tmp_path, PLANT.replace("70000", "1883"))
    monkeypatch.setenv("WEARLINE_MQTT__PORT", "70000")
    with pytest.raises(SettingsError) as info:
        load_settings(conf)
    assert str(info.value) == "mqtt.port (WEARLINE_MQTT__PORT): Input should be less than or equal to 65535"


def test_a_check_across_settings_names_where_each_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _file(tmp_path, "[ingest]\nreceive_maximum = 100\n")
    monkeypatch.setenv("WEARLINE_INGEST__BATCH_MAX_MESSAGES", "5000")
    with pytest.raises(SettingsError) as info:
        load_settings(conf)
    assert str(info.value).startswith(f"ingest (WEARLINE_INGEST__BATCH_MAX_MESSAGES, {conf} line 2): ingest.receive_")


@pytest.mark.parametrize("written", ["debug", "Warning", "ERROR"])
def test_log_level_accepts_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str) -> None:
    monkeypatch.setenv("WEARLINE_LOG__LEVEL", written)
    assert load_settings().log.level == written.upper()
    monkeypatch.delenv("WEARLINE_LOG__LEVEL")
    assert load_settings(_file(tmp_path, f'[log]\nlevel = "{written}"\n')).log.level == written.upper()
    monkeypatch.setenv("WEARLINE_LOG__LEVEL", "verbose")
    with pytest.raises(SettingsError, match=r"log\.level \(WEARLINE_LOG__LEVEL\): Input should be 'DEBUG'"):
        load_settings()


def test_a_config_folder_is_called_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=rf"config file {tmp_path} \(--config\) is a folder"):
        load_settings(tmp_path)
    monkeypatch.setenv("WEARLINE_CONFIG", str(tmp_path))
    with pytest.raises(SettingsError, match=rf"config file {tmp_path} \(WEARLINE_CONFIG\) is a folder"):
        load_settings()


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    conf = _file(tmp_path, 'topic_prefix = "a"\n\n[mqtt\nport = 1\n')
    with pytest.raises(SettingsError) as info:
        load_settings(conf)
    assert str(info.value).startswith(f"{conf} line 3: not valid TOML: Expected ']'")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x80\x81\xfe")
    with pytest.raises(SettingsError, match="is not UTF-8 text"):
        load_settings(binary)


def test_settings_loaded_from_a_file_can_go_to_a_worker_process(tmp_path: Path) -> None:
    # The ingest benchmark pickles settings into spawned processes.
    s = load_settings(_file(tmp_path, PLANT.replace("70000", "1884")))
    assert type(s) is Settings
    again = pickle.loads(pickle.dumps(s))
    assert again == s
    assert again.mqtt.port == 1884


def test_needs_skips_broken_sections_a_command_does_not_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _file(tmp_path, '[mqtt]\nhost = "broker.local"\nport = 70000\n[database]\ndsn = "mysql://x"\n')
    monkeypatch.setenv("WEARLINE_MQTT__PROT", "1884")
    monkeypatch.setenv("WEARLINE_INGEST_METRICS_PORT", "9")  # a typo meant for ingest
    monkeypatch.setenv("WEARLINE_LOG__LEVEL", "debug")
    s = load_settings(conf, needs={"log"})
    assert s.log.level == "DEBUG"
    assert s.mqtt == MqttSettings()  # the whole broken section falls back to its defaults, valid host included
    assert s.database.dsn == DatabaseSettings().dsn
    with pytest.raises(SettingsError, match=r"database\.dsn"):
        load_settings(conf, needs={"log", "database"})
    with pytest.raises(SettingsError, match=r"WEARLINE_INGEST_METRICS_PORT.*mqtt\.port.*mqtt\.prot.*database\.dsn"):
        load_settings(conf)


def test_needs_still_checks_the_sections_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_LOG__FORMAT", "xml")
    with pytest.raises(SettingsError, match=r"log\.format \(WEARLINE_LOG__FORMAT\)"):
        load_settings(needs={"log"})
    monkeypatch.delenv("WEARLINE_LOG__FORMAT")
    monkeypatch.setenv("WEARLINE_LOG_LEVEL", "debug")  # a typo meant for a needed section is still refused
    with pytest.raises(SettingsError, match="WEARLINE_LOG_LEVEL: unknown setting; did you mean WEARLINE_LOG__LEVEL"):
        load_settings(needs={"log"})
    with pytest.raises(ValueError, match="no such settings section"):
        load_settings(needs={"logs"})


def test_cli_reports_the_bad_setting_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEARLINE_MQTT__PORT", "0")
    result = CliRunner().invoke(app, ["db", "info"])
    assert result.exit_code == 2
    assert "mqtt.port (WEARLINE_MQTT__PORT)" in result.output


def test_an_offline_command_runs_past_a_broken_broker_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _file(tmp_path, "[mqtt]\nport = 70000\n")
    monkeypatch.setenv("WEARLINE_MQTT__PROTOCOL", "4")
    args = ["anomaly", "fit", "--train", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "m.model")]
    offline = CliRunner().invoke(app, ["--config", str(conf), *args])
    assert offline.exit_code == 2
    assert "absent.csv" in offline.output  # it got as far as its own input
    assert "mqtt" not in offline.output
    online = CliRunner().invoke(app, ["--config", str(conf), "db", "info"])
    assert online.exit_code == 2
    assert f"{conf} line 2: mqtt.port = 70000" in online.output
    assert "mqtt.protocol (WEARLINE_MQTT__PROTOCOL)" in online.output


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("WEARLINE_ALERTS__RULES", "deploy/rules", "alerts.rules (WEARLINE_ALERTS__RULES): not valid JSON"),
        ("WEARLINE_ALERTS__TEAMS", "{acme: x}", "alerts.teams (WEARLINE_ALERTS__TEAMS): not valid JSON"),
        ("WEARLINE_ALERTS__ESCALATION_LEVELS", "supervisor,manager", "alerts.escalation_levels"),
    ],
)
def test_a_list_or_table_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    """Found by tests/test_fuzz.py: pydantic-settings' own error named only the section, with a traceback."""
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    print(exc.value)
    assert str(exc.value).startswith(expected)
    assert "written as JSON, e.g." in str(exc.value)
