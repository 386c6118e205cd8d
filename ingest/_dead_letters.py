"""Dead letters after the fact: which were refused, why, and the stored payload of each.

Filters select by reason, by gateway (a tenant, a site, down to a machine, under the topic prefix), by any MQTT
topic filter, and by time; listings come newest first. The queries read only columns that every migrated schema
has, plus the optional ones (the original size of a capped payload, the replay mark) when the schema holds them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from wearline.db import require_migrated
from wearline.errors import WearlineError
from wearline.wire import Reason

__all__ = [
    "Columns",
    "DeadLetterError",
    "DeadLetterFilter",
    "ReasonSummary",
    "StoredDeadLetter",
    "check_reasons",
    "count_dead_letters",
    "dead_letter_columns",
    "dead_letter_of",
    "dead_letter_summary",
    "get_dead_letter",
    "list_dead_letters",
    "parse_time",
    "select_list",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

ORIGINAL_SIZE_COLUMNS = ("original_size",)
"""Where a schema records the size a payload had before ingest capped it (migration 8; absent before it, when
payloads were kept whole). The first one present is used."""


class DeadLetterError(WearlineError):
    """A dead-letter command cannot run as asked: a bad filter, an unknown id, a schema without the table."""


def parse_time(value: str, option: str, *, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO 8601 time (UTC unless it names its offset)."""
    m = _DURATION.match(value)
    if m:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise DeadLetterError(
            f"{option} {value!r}: not a duration such as 30m, 1h, 2d, 1w nor an ISO time such as 2026-12-03T10:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_regex(topic_filter: str) -> str:
    """An MQTT topic filter (``+`` one level, ``#`` the rest) as an anchored PostgreSQL regular expression."""
    levels = topic_filter.split("/")
    parts: list[str] = []
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                raise DeadLetterError(f"--topic {topic_filter!r}: '#' must be the last level")
            # 'a/#' also matches 'a' itself, as in MQTT.
            return "^" + "/".join(parts) + ("(/.*)?$" if parts else ".*$")
        if level == "+":
            parts.append("[^/]*")
        elif "+" in level or "#" in level:
            raise DeadLetterError(f"--topic {topic_filter!r}: '+' and '#' must each fill a whole level")
        else:
            parts.append(re.sub(r"([^A-Za-z0-9_ -])", r"\\\1", level))
    return "^" + "/".join(parts) + "$"


def check_reasons(reasons: Sequence[str]) -> tuple[str, ...]:
    """The reasons, each checked against the ones ingest records."""
    valid = [r.value for r in Reason]
    for r in reasons:
        if r not in valid:
            raise DeadLetterError(f"--reason {r!r}: not a dead-letter reason; valid: {', '.join(valid)}")
    return tuple(reasons)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command acts on; an empty filter selects all of them."""

    reasons: tuple[str, ...] = ()
    gateway: str | None = None
    """``tenant``, ``tenant/site``, ``tenant/site/line`` or ``tenant/site/line/machine``, under the topic prefix."""
    topic: str | None = None
    """An MQTT topic filter over whole topics, prefix included (``wearline/acme/+/+/pump-7/telemetry``)."""
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_reasons(self.reasons)
        if self.gateway is not None:
            levels = self.gateway.strip("/").split("/")
            if not 1 <= len(levels) <= 4 or not all(_LEVEL.match(level) for level in levels):
                raise DeadLetterError(
                    f"--gateway {self.gateway!r}: give tenant[/site[/line[/machine]]], each 1-64 of [A-Za-z0-9_.-]"
                )
        if self.topic is not None:
            _filter_regex(self.topic)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise DeadLetterError(f"--since {self.since:%Y-%m-%d %H:%M:%S} is not before --until {self.until}")

    @property
    def empty(self) -> bool:
        """True when nothing narrows the selection."""
        return not (self.reasons or self.gateway or self.topic or self.since or self.until or self.ids)

    def where(self, prefix: str) -> tuple[sql.Composable, list[Any]]:
        """A WHERE condition over ``dead_letters`` and its parameters (``TRUE`` for an empty filter)."""
        conds: list[sql.Composable] = []
        args: list[Any] = []
        if self.reasons:
            conds.append(sql.SQL("reason = ANY(%s)"))
            args.append(list(self.reasons))
        if self.gateway is not None:
            conds.append(sql.SQL("topic LIKE %s"))
            args.append(_like_escape(f"{prefix}/{self.gateway.strip('/')}/") + "%")
        if self.topic is not None:
            conds.append(sql.SQL("topic ~ %s"))
            args.append(_filter_regex(self.topic))
        if self.since is not None:
            conds.append(sql.SQL("received_at >= %s"))
            args.append(self.since)
        if self.until is not None:
            conds.append(sql.SQL("received_at < %s"))
            args.append(self.until)
        if self.ids:
            conds.append(sql.SQL("dead_letter_id = ANY(%s)"))
            args.append(list(self.ids))
        return (sql.SQL(" AND ").join(conds) if conds else sql.SQL("TRUE")), args


@dataclass(frozen=True)
class Columns:
    """The optional columns this schema's ``dead_letters`` has."""

    original_size: str | None
    replayed_at: bool


@dataclass
class StoredDeadLetter:
    """One stored dead letter; ``payload`` is filled only when asked for (it may be large)."""

    dead_letter_id: int
    received_at: datetime
    reason: str
    topic: str
    detail: str
    stored_bytes: int
    original_bytes: int | None
    replayed_at: datetime | None
    payload: bytes | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """The payload's size as received."""
        return self.original_bytes if self.original_bytes is not None else self.stored_bytes

    @property
    def truncated(self) -> bool:
        """True when ingest kept only the first part of the payload: it cannot be replayed."""
        return self.original_bytes is not None and self.original_bytes > self.stored_bytes

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready mapping; with the payload, as text when it is UTF-8 and always as base64."""
        out: dict[str, Any] = {
            "id": self.dead_letter_id,
            "received_at": self.received_at.isoformat(),
            "reason": self.reason,
            "topic": self.topic,
            "detail": self.detail,
            "size": self.size,
            "stored_bytes": self.stored_bytes,
            "truncated": self.truncated,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
        }
        if self.payload is not None:
            try:
                out["payload"] = self.payload.decode("utf-8")
            except UnicodeDecodeError:
                out["payload"] = None
            out["payload_base64"] = base64.b64encode(self.payload).decode("ascii")
        return out


@dataclass(frozen=True)
class ReasonSummary:
    """Dead letters of one reason: how many, how many not replayed yet, and when the first and last arrived."""

    reason: str
    count: int
    pending: int
    first: datetime
    last: datetime

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "reason": self.reason,
            "count": self.count,
            "pending": self.pending,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
        }


async def dead_letter_columns(conn: psycopg.AsyncConnection[Any], schema: str) -> Columns:
    """Which optional columns the schema's ``dead_letters`` holds; :class:`NotMigrated` when the schema is behind."""
    await require_migrated(conn, schema)
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'dead_letters'",
        [schema],
    )
    names = {str(r[0]) for r in await cur.fetchall()}
    size = next((c for c in ORIGINAL_SIZE_COLUMNS if c in names), None)
    return Columns(original_size=size, replayed_at="replayed_at" in names)


def select_list(cols: Columns, *, payload: bool) -> sql.Composable:
    """The columns :func:`dead_letter_of` reads, in its order; ``NULL`` for what this schema lacks."""
    return sql.SQL(", ").join(
        [
            sql.SQL("dead_letter_id, received_at, reason, topic, detail, octet_length(payload)"),
            sql.Identifier(cols.original_size) if cols.original_size else sql.SQL("NULL::bigint"),
            sql.SQL("replayed_at") if cols.replayed_at else sql.SQL("NULL::timestamptz"),
            sql.SQL("payload") if payload else sql.SQL("NULL::bytea"),
        ]
    )


def dead_letter_of(row: Sequence[Any]) -> StoredDeadLetter:
    """A row selected with :func:`select_list`."""
    return StoredDeadLetter(
        dead_letter_id=int(row[0]),
        received_at=row[1],
        reason=str(row[2]),
        topic=str(row[3]),
        detail=str(row[4]),
        stored_bytes=int(row[5]),
        original_bytes=None if row[6] is None else int(row[6]),
        replayed_at=row[7],
        payload=None if row[8] is None else bytes(row[8]),
    )


async def list_dead_letters(
    conn: psycopg.AsyncConnection[Any], schema: str, prefix: str, filt: DeadLetterFilter, *, limit: int
) -> list[StoredDeadLetter]:
    """Dead letters matching ``filt``, newest first, at most ``limit``, without their payloads."""
    cols = await dead_letter_columns(conn, schema)
    where, args = filt.where(prefix)
    query = sql.SQL("SELECT {} FROM dead_letters WHERE {} ORDER BY received_at DESC, dead_letter_id DESC LIMIT %s")
    cur = await conn.execute(query.format(select_list(cols, payload=False), where), [*args, limit])
    return [dead_letter_of(r) for r in await cur.fetchall()]


async def count_dead_letters(
    conn: psycopg.AsyncConnection[Any], schema: str, prefix: str, filt: DeadLetterFilter
) -> int:
    """How many dead letters match ``filt``."""
    await require_migrated(conn, schema)
    where, args = filt.where(prefix)
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM dead_letters WHERE {}").format(where), args)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def get_dead_letter(conn: psycopg.AsyncConnection[Any], schema: str, dead_letter_id: int) -> StoredDeadLetter:
    """One dead letter with its payload; :class:`DeadLetterError` when there is none with that id."""
    cols = await dead_letter_columns(conn, schema)
    query = sql.SQL("SELECT {} FROM dead_letters WHERE dead_letter_id = %s")
    cur = await conn.execute(query.format(select_list(cols, payload=True)), [dead_letter_id])
    row = await cur.fetchone()
    if row is None:
        raise DeadLetterError(f"no dead letter {dead_letter_id} in schema {schema!r}")
    return dead_letter_of(row)


async def dead_letter_summary(conn: psycopg.AsyncConnection[Any], schema: str) -> list[ReasonSummary]:
    """Every reason with its counts, most frequent first."""
    cols = await dead_letter_columns(conn, schema)
    pending = "count(*) FILTER (WHERE replayed_at IS NULL)" if cols.replayed_at else "count(*)"
    cur = await conn.execute(
        f"""SELECT reason, count(*), {pending}, min(received_at), max(received_at)
            FROM dead_letters GROUP BY reason ORDER BY count(*) DESC, reason"""
    )
    return [ReasonSummary(str(r[0]), int(r[1]), int(r[2]), r[3], r[4]) for r in await cur.fetchall()]
