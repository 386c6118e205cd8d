"""One typed settings object for every Wearline process.

Loaded once at the entry point from ``WEARLINE_*`` environment variables (nested with ``__``, for example
``WEARLINE_MQTT__PORT``) and an optional TOML file (``WEARLINE_CONFIG`` or ``--config``); environment variables win
over the file. Nothing deeper in the code reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import pydantic_settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from wearline._settings_origin import Origins, env_name, env_path, suggest
from wearline.errors import WearlineError

__all__ = [
    "AlertsSettings",
    "AnalyticsSettings",
    "ApiSettings",
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
    """CA bundle the broker's certificate is checked against (default: the system's)."""
    cert_file: Path | None = None
    """Client certificate (PEM) presented to the broker, for a listener with ``require_certificate``."""
    key_file: Path | None = None
    """The client certificate's private key (PEM); default: inside ``cert_file``."""
    tls_verify: bool = True
    """Check the broker's certificate and host name; off only for a test broker, never across a network."""
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field(default="wearline", min_length=1, max_length=23 * 4)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _tls_needs_ca_or_system(self) -> MqttSettings:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None and not self.tls:
                raise ValueError(f"mqtt.{name} is set but mqtt.tls is false")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("mqtt.key_file is set without mqtt.cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("mqtt.password is set without mqtt.username")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every MQTT client of Wearline connects with; ``None`` when ``tls`` is off.

        A missing or unreadable file fails here, at start-up, naming the setting."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"mqtt.ca_file ({self.ca_file}): cannot load the CA bundle: {exc}") from exc
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise SettingsError(
                    f"mqtt.cert_file/mqtt.key_file ({self.cert_file}, {self.key_file}): cannot load the client "
                    f"certificate: {exc}"
                ) from exc
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


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
    role: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = None
    """Act as this database role after connecting (``SET ROLE``): wearline_ingest, wearline_analytics,
    wearline_alerts or wearline_api, the least each stage needs, when one login serves several stages."""

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


class SparkplugSettings(_Section):
    """Ingest as a Sparkplug B host application (``docs/sparkplug.md``); off while ``groups`` is empty."""

    groups: dict[str, str] = Field(default_factory=dict)
    """Sparkplug group id -> ``tenant/site`` its edge nodes belong to (edge node = line, device = machine).
    Ingest subscribes to these groups only."""
    host_id: str = Field(default="wearline", pattern=r"^[^/+#]{1,64}$")
    """The host application id: STATE is published on ``spBv1.0/STATE/<host_id>``."""
    reorder_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How long a missing sequence number may still arrive out of order before a rebirth is requested."""
    rebirth_interval_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    """At most one rebirth request per edge node in this time (a flood of unknown aliases asks once)."""

    @field_validator("groups")
    @classmethod
    def _groups_map_to_sites(cls, v: dict[str, str]) -> dict[str, str]:
        level = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
        for group, where in v.items():
            if not group or any(c in group for c in "/+#") or group == "STATE":
                raise ValueError(f"{group!r} is not a Sparkplug group id")
            parts = where.split("/")
            if len(parts) != 2 or not all(level.match(p) for p in parts):
                raise ValueError(f"[{group!r}] = {where!r}: expected 'tenant/site', each 1-64 of [A-Za-z0-9_.-]")
        return v


class IngestSettings(_Section):
    """The MQTT-to-database ingest stage."""

    shared_group: str | None = Field(default="wearline-ingest", pattern=r"^[A-Za-z0-9_-]+$")
    """Shared-subscription group, used when the subscription scheme is ``shared``; ``none`` or empty turns it off."""
    subscription: Literal["auto", "shared", "partitioned"] = "auto"
    """``auto`` is ``partitioned``: plain persistent subscriptions, worker i of N writing its hash share, which every
    broker keeps across its restart; ``shared`` only for a broker that keeps shared subscriptions too (HiveMQ)."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Partitioned scheme: how many worker identities split the machines (fixed for a deployment)."""
    worker: Annotated[int, Field(ge=0, le=63)] = 0
    """Partitioned scheme: this process's identity, 0 to workers - 1; a replacement takes the same number."""
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """How often a worker records that it is alive (ingest_members); missing after three intervals."""
    retire_on_stop: bool = False
    """On a clean stop, drain and end the MQTT session (scaling down) instead of keeping it for a replacement."""
    batch_max_messages: Annotated[int, Field(ge=1, le=65535)] = 1000
    batch_max_delay_ms: Annotated[int, Field(ge=1, le=60_000)] = 200
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 4000
    """Unacknowledged messages the broker may have in flight to us; ack-after-commit makes it the queue bound."""
    auto_register: bool = True
    max_payload_bytes: Annotated[int, Field(ge=64)] = 256 * 1024
    max_future_s: Annotated[float, Field(ge=0)] = 300.0
    max_past_days: Annotated[float, Field(gt=0)] = 365.0
    auto_register_tenants: bool = True
    """With ``auto_register``: a topic naming an unknown tenant creates it (off: machines only under known ones)."""
    max_auto_tenants: Annotated[int, Field(ge=0)] = 100
    """Tenants auto-registration may create in a schema; beyond it, dead letters with reason ``registry_limit``."""
    require_gateways: bool = False
    """Store telemetry only for a tenant and site a live gateway covers (``wearline gateways``), even before the
    first gateway is added. Off, the same holds as soon as any gateway exists; with none, any topic is taken."""
    max_machines_per_tenant: Annotated[int, Field(ge=1)] = 10_000
    """Machines auto-registration may create in one tenant."""
    max_sensors_per_machine: Annotated[int, Field(ge=1, le=32_767)] = 512
    """Sensors auto-registration may give one machine."""
    machine_cache_size: Annotated[int, Field(ge=1)] = 20_000
    """Machines whose ids and sensor positions a worker keeps in memory (least recently used evicted)."""
    dead_letter_max_payload_bytes: Annotated[int, Field(ge=0)] = 4096
    """Bytes of a refused payload kept in ``dead_letters`` (its size as received is recorded beside it)."""
    dead_letter_retention_days: Annotated[float, Field(ge=0)] = 30.0
    """Dead letters older than this are deleted by ingest's housekeeping; 0 keeps them for ever."""
    dead_letter_rate_per_topic: Annotated[float, Field(gt=0)] = 1.0
    """Dead letters one topic may write per second, sustained (token bucket); the rest are only counted."""
    dead_letter_burst_per_topic: Annotated[int, Field(ge=1)] = 100
    """Dead letters one topic may write at once before its rate applies."""
    dead_letter_rate_total: Annotated[float, Field(gt=0)] = 200.0
    """Dead letters all topics together may write per second (a burst of ten seconds' worth)."""
    dead_letter_log_interval_s: Annotated[float, Field(gt=0)] = 10.0
    """At most one warning per dead-letter reason in this interval, with the count, top topic and an example."""
    metrics_port: Port = 9101
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)

    @field_validator("shared_group", mode="before")
    @classmethod
    def _group_can_be_off(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v

    @model_validator(mode="after")
    def _window_holds_a_batch(self) -> IngestSettings:
        if self.worker >= self.workers:
            raise ValueError(f"ingest.worker ({self.worker}) must be below ingest.workers ({self.workers})")
        if self.subscription == "shared" and self.shared_group is None:
            raise ValueError("ingest.subscription is shared but ingest.shared_group is none: name a group")
        if self.subscription == "shared" and self.workers > 1:
            raise ValueError(
                "ingest.workers splits machines in the partitioned scheme; with ingest.subscription=shared the "
                "broker splits them: leave ingest.workers at 1"
            )
        if self.subscription == "shared" and self.sparkplug.groups:
            raise ValueError(
                "ingest.sparkplug.groups needs each edge node's messages in one worker, in order; a shared "
                "subscription splits them at random: use ingest.subscription = auto (partitioned)"
            )
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
    rul_min_history_h: Annotated[float, Field(ge=0)] = 24.0
    """No remaining-life estimate for a machine with less history than this since its first reading: a model that
    reads drift from a machine's own start sees none in an hour or two and guesses low (the demo's healthy pumps got
    low first estimates from one or two hourly rows: predictive tickets they did not deserve)."""
    metrics_port: Port = 9102


class AlertsSettings(_Section):
    """Turning anomalies and low remaining life into service tickets, and their lifecycle."""

    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    metrics_port: Port = 9103
    rul_horizon_h: Annotated[float, Field(gt=0)] = 168.0
    """A predictive ticket opens when the lower bound of a machine's remaining-life interval is below this."""
    resolve_hold_s: Annotated[float, Field(gt=0)] = 3600.0
    """A live ticket resolves itself once its machine was watched this long (reading time) with no new evidence."""
    reopen_window_s: Annotated[float, Field(ge=0)] = 86400.0
    """New evidence this soon (reading time) after a resolved ticket's last evidence reopens it: no second ticket."""
    ack_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    """An open ticket nobody acknowledged within this (wall time) escalates, and again after each further period."""
    escalation_levels: Annotated[list[str], Field(min_length=1)] = [
        "shift supervisor",
        "maintenance manager",
        "plant manager",
    ]
    """Who each escalation notifies, in order; past the last, the last again."""
    rules: list[Path] = []
    """Alert rule files (TOML) or folders of them, in override order: see docs/alerts.md. Reloaded on change."""
    teams: dict[str, str] = {}
    """The team a new ticket is assigned to, by ``tenant/site`` or ``tenant/site/line`` (the longer key wins)."""
    webhook_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """How long one webhook delivery may take before it counts as failed and is retried."""
    webhook_max_attempts: Annotated[int, Field(ge=1, le=100)] = 16
    """Attempts per event and webhook (backoff doubling from 2 s, capped at 1 h: 16 is about 10 h) before it is
    marked failed and kept."""
    outbox_retention_days: Annotated[float, Field(ge=0)] = 7.0
    """Webhook deliveries made and ticket events published on MQTT are deleted from their outboxes this long after;
    0 keeps them for ever. Pending and failed deliveries are kept."""


class ApiSettings(_Section):
    """The REST API and board for maintenance teams."""

    host: str = "127.0.0.1"
    """The address the API listens on; 0.0.0.0 only behind a TLS-terminating proxy."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    metrics_port: Port = 9104
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50
    """Tickets per page when a request does not say (``limit``); at most 1,000."""


class LogSettings(_Section):
    """Logging: the threshold (any case) and ``text`` or ``json`` lines."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _level_any_case(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


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
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    shutdown_grace_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus and the kubelet's probes come from other hosts
    """The address each stage's metrics port (``/metrics``, ``/healthz``, ``/readyz``) listens on: ``127.0.0.1``
    keeps it on this host, ``::`` for IPv6."""

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
        # load_settings adds the TOML file below the environment; built directly, only the environment counts.
        return (init_settings, env_settings)


class _Source(PydanticBaseSettingsSource):
    """One source of settings (the caller's, the environment, the file) without the sections left out."""

    def __init__(
        self, settings_cls: type[BaseSettings], read: Callable[[], dict[str, Any]], drop: frozenset[str]
    ) -> None:
        super().__init__(settings_cls)
        self._read = read
        self._drop = drop

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._read().items() if k not in self._drop}


def _build(file_data: dict[str, Any], drop: frozenset[str], overrides: dict[str, Any]) -> Settings:
    """Validate ``overrides``, the environment and ``file_data``, leaving the ``drop`` sections at their defaults."""

    class _Loading(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                _Source(settings_cls, init_settings, drop),
                _Source(settings_cls, env_settings, drop),
                _Source(settings_cls, lambda: file_data, drop),
            )

    loaded = _Loading(**{k: v for k, v in overrides.items() if k not in drop})
    # Hand back a plain Settings: a class defined in here could not be pickled into a worker process.
    return Settings.model_construct(
        _fields_set=loaded.model_fields_set, **{name: getattr(loaded, name) for name in Settings.model_fields}
    )


def _config_path(config_file: Path | None) -> tuple[Path | None, str]:
    if config_file is not None:
        return config_file, "--config"
    env_path = os.environ.get("WEARLINE_CONFIG")
    return (Path(env_path), "WEARLINE_CONFIG") if env_path else (None, "")


def _read_toml(path: Path, named_by: str) -> tuple[dict[str, Any], str]:
    if path.is_dir():
        raise SettingsError(f"config file {path} ({named_by}) is a folder; give the path of a TOML file")
    if not path.is_file():
        raise SettingsError(f"config file {path} ({named_by}) does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"config file {path} ({named_by}) is not UTF-8 text: is it a TOML file?") from exc
    except OSError as exc:
        raise SettingsError(f"config file {path} ({named_by}) cannot be read: {exc.strerror}") from exc
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(toml_error(path, exc)) from exc


def _json_variable_error() -> str | None:
    for var, value in sorted(os.environ.items()):
        path = env_path(var)
        if path is None or len(path) < 2:
            continue
        section = Settings.model_fields.get(path[0])
        model = section.annotation if section is not None else None
        field = model.model_fields.get(path[1]) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None or get_origin(field.annotation) not in (list, dict, set, tuple):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            example = (
                '["deploy/rules"]' if get_origin(field.annotation) is not dict else '{"acme/plant-a": "mechanics"}'
            )
            return (
                f"{'.'.join(path)} ({var}): not valid JSON ({exc.msg} at character {exc.pos}); a list or table "
                f"in the environment is written as JSON, e.g. {example}"
            )
    return None


def toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """A TOML syntax error as one line that starts with the file and line, like every other file error."""
    where = re.search(r"\(at line (\d+), column (\d+)\)$", str(exc))
    if where is None:
        return f"{path}: not valid TOML: {exc}"
    reason = str(exc)[: where.start()].rstrip()
    return f"{path} line {where.group(1)}: not valid TOML: {reason} (column {where.group(2)})"


def _unknown_variables(needs: frozenset[str] | None) -> list[str]:
    """A ``WEARLINE_*`` variable that names no setting is a typo that would silently do nothing: name it."""
    problems = []
    for var in sorted(os.environ):
        path = env_path(var)
        if path is None or path[0] in Settings.model_fields:
            continue  # not a setting by design, or a section pydantic checks key by key
        near = suggest(Settings, path)
        # A typo meant for a section this command does not use cannot change what it does.
        if needs is not None and near and not any(p[0] in needs for p in near):
            continue
        hint = f"; did you mean {' or '.join(env_name(p) for p in near)}?" if near else ""
        problems.append(f"{var}: unknown setting{hint}")
    return problems


def load_settings(
    config_file: Path | None = None, *, needs: Collection[str] | None = None, **overrides: Any
) -> Settings:
    """Build and validate the settings, or raise :class:`SettingsError` naming every bad setting where it was written.

    ``config_file`` defaults to ``$WEARLINE_CONFIG``. ``overrides`` (the CLI's flags) win over the environment,
    which wins over the file. ``needs`` names the top-level sections (or settings) the caller uses, for example
    ``{"log"}`` for a command that reads and writes files only: a bad value anywhere else does not raise, and its
    section keeps its defaults. ``None`` checks everything.
    """
    wanted = frozenset(needs) if needs is not None else None
    if wanted is not None and (strange := wanted - set(Settings.model_fields)):
        raise ValueError(f"needs: no such settings section(s): {', '.join(sorted(strange))}")
    path, named_by = _config_path(config_file)
    file_data, file_text = _read_toml(path, named_by) if path is not None else ({}, "")
    problems = _unknown_variables(wanted)
    drop: set[str] = set()
    try:
        settings = _build(file_data, frozenset(), overrides)
    except pydantic_settings.SettingsError as exc:
        # pydantic-settings parses list and table values from the environment as JSON before validation, and
        # names only the section when that fails: name the variable and what a valid value looks like.
        raise SettingsError(_json_variable_error() or f"invalid settings in the environment: {exc}") from None
    except ValidationError as exc:
        origins = Origins.collect(
            Settings,
            overrides,
            os.environ,
            file_name=str(path) if path else None,
            file_data=file_data,
            file_text=file_text,
        )
        for err in exc.errors():
            top = str(err["loc"][0]) if err["loc"] else ""
            if wanted is not None and top and top not in wanted:
                drop.add(top)
            else:
                problems.append(origins.describe(err))
        if not problems:
            settings = _build(file_data, frozenset(drop), overrides)
    if problems:
        raise SettingsError(problems[0] if len(problems) == 1 else "invalid settings: " + "; ".join(problems))
    return settings
