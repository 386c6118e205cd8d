"""One typed settings object for every Wearline process.

Loaded once at the entry point from ``WEARLINE_*`` environment variables (nested with ``__``, for example
``WEARLINE_MQTT__PORT``) and an optional TOML file (``WEARLINE_CONFIG`` or ``--config``); environment variables win
over the file. Nothing deeper in the code reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wearline.errors import WearlineError

__all__ = [
    "AlertsSettings",
    "AnalyticsSettings",
    "DatabaseSettings",
    "IngestSettings",
    "LogSettings",
    "MqttSettings",
    "Settings",
    "SettingsError",
    "load_settings",
]

_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
Port = Annotated[int, Field(ge=0, le=65535)]


class SettingsError(WearlineError):
    """A setting is missing, malformed or contradicts another; the message names each setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """The MQTT broker every stage talks to."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field(default="wearline", min_length=1, max_length=23 * 4)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _tls_needs_ca_or_system(self) -> MqttSettings:
        if self.ca_file is not None and not self.tls:
            raise ValueError("mqtt.ca_file is set but mqtt.tls is false")
        if self.password is not None and self.username is None:
            raise ValueError("mqtt.password is set without mqtt.username")
        return self


class DatabaseSettings(_Section):
    """The PostgreSQL (optionally TimescaleDB) database."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    schema_name: str = Field(default="wearline", alias="schema")
    storage: Literal["auto", "timescaledb", "native"] = "auto"
    """auto: TimescaleDB hypertables when the extension can be had, native range partitioning otherwise."""
    pool_min: Annotated[int, Field(ge=1)] = 1
    pool_max: Annotated[int, Field(ge=1)] = 4
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    partition_days_ahead: Annotated[int, Field(ge=1, le=365)] = 7
    retention_days: Annotated[int, Field(ge=0)] = 0
    """Drop raw readings older than this many days; 0 keeps everything."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("dsn")
    @classmethod
    def _dsn_is_postgres(cls, v: str) -> str:
        if not (v.startswith(("postgresql://", "postgres://")) or "=" in v):
            raise ValueError("must be a postgresql:// URL or a libpq key=value string")
        return v

    @field_validator("schema_name")
    @classmethod
    def _schema_is_identifier(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 characters)")
        return v

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseSettings:
        if self.pool_min > self.pool_max:
            raise ValueError("database.pool_min is larger than database.pool_max")
        return self


class IngestSettings(_Section):
    """The MQTT-to-database ingest stage."""

    shared_group: str | None = Field(default="wearline-ingest", pattern=r"^[A-Za-z0-9_-]+$")
    """MQTT 5 shared-subscription group; several ingest processes in one group split the load. None: plain."""
    batch_max_messages: Annotated[int, Field(ge=1, le=65535)] = 1000
    batch_max_delay_ms: Annotated[int, Field(ge=1, le=60_000)] = 200
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 4000
    """Unacknowledged messages the broker may have in flight to us; ack-after-commit makes it the queue bound."""
    auto_register: bool = True
    max_payload_bytes: Annotated[int, Field(ge=64)] = 256 * 1024
    max_future_s: Annotated[float, Field(ge=0)] = 300.0
    max_past_days: Annotated[float, Field(gt=0)] = 365.0
    metrics_port: Port = 9101

    @model_validator(mode="after")
    def _window_holds_a_batch(self) -> IngestSettings:
        if self.receive_maximum < self.batch_max_messages:
            raise ValueError(
                "ingest.receive_maximum must be at least ingest.batch_max_messages: with acknowledgement after "
                "commit the broker would stop sending before a batch is full"
            )
        return self


class AnalyticsSettings(_Section):
    """The anomaly and RUL worker."""

    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    baseline_rows: Annotated[int, Field(ge=10)] = 300
    z_threshold: Annotated[float, Field(gt=0)] = 6.0
    min_flagged: Annotated[int, Field(ge=1)] = 3
    metrics_port: Port = 9102


class AlertsSettings(_Section):
    """Turning anomalies into service tickets."""

    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    metrics_port: Port = 9103


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """Everything a Wearline process can be told. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="WEARLINE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    topic_prefix: str = "wearline"
    mqtt: MqttSettings = MqttSettings()
    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    alerts: AlertsSettings = AlertsSettings()
    log: LogSettings = LogSettings()
    shutdown_grace_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_plain(cls, v: str) -> str:
        if not _TOPIC_LEVEL.match(v):
            raise ValueError("must be one or more topic levels of letters, digits, '_', '-', '.' (no wildcards)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file comes last so that environment variables override it; with no toml_file it reads nothing.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _setting_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) if parts else "(settings)"


def _env_name(name: str) -> str:
    return "WEARLINE_" + name.upper().replace(".", "__")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings, or raise :class:`SettingsError` naming every bad setting.

    ``config_file`` defaults to ``$WEARLINE_CONFIG``. ``overrides`` (the CLI's flags) win over the environment,
    which wins over the file.
    """
    env_path = os.environ.get("WEARLINE_CONFIG")
    path = config_file or (Path(env_path) if env_path else None)
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith("WEARLINE_")
        and name.upper()[len("WEARLINE_") :].split("__")[0].lower() not in {*Settings.model_fields, "config"}
    )
    if unknown:
        raise SettingsError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    settings_cls: type[Settings] = Settings
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file {path} (WEARLINE_CONFIG or --config) does not exist")

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=path)

        settings_cls = _FromFile
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _setting_name(err["loc"])
            lines.append(f"  {name} ({_env_name(name)}): {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from exc
    except ValueError as exc:  # malformed TOML surfaces as a ValueError subclass
        raise SettingsError(f"config file {path}: {exc}") from exc
