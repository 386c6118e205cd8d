"""The model registry in the database: register a model file for a machine type; the worker loads the newest."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from analytics._base import ModelError
from analytics._offline import AnomalyModel, RulModel
from analytics._store import deserialize, load_model
from wearline.db.migrations.v0006_readings_hourly import POSITIONS as ROLLUP_POSITIONS

log = logging.getLogger("analytics._worker")

__all__ = ["ModelCache", "RegisteredModel", "list_models", "read_model_file", "register_model", "unusable_for_type"]


def read_model_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The model file's bytes and metadata, checked against each other; refused when the worker could never use it
    (condition columns that are text: readings carry numbers only)."""
    try:
        kind = json.loads(path.with_name(path.name + ".json").read_text()).get("kind", "")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model {path}: cannot read its sidecar {path.name}.json: {exc}") from exc
    model, meta = load_model(path, kind)
    conditions = getattr(model, "conditions", None)
    text = list(conditions.text) if conditions is not None else []
    if text:
        raise ModelError(
            f"model {path}: the analytics worker cannot use it: its condition column(s) {', '.join(text)} are text "
            "(categories), and readings carry numbers only; fit it again with numeric --condition columns or none"
        )
    return path.read_bytes(), meta


async def unusable_for_type(conn: psycopg.AsyncConnection[Any], meta: dict[str, Any], machine_type: str) -> str | None:
    """Why no registered machine of ``machine_type`` could feed this model (sensors it needs that none of them rolls
    up hourly), or None; None too when the type has no machines yet."""
    needed = [*meta.get("features", []), *meta.get("condition", [])]
    cur = await conn.execute(
        """SELECT m.name, array_agg(s.name ORDER BY s.position) FILTER (WHERE s.position <= %s)
           FROM machines m JOIN machine_types t USING (type_id) LEFT JOIN sensors s USING (machine_id)
           WHERE t.name = %s GROUP BY m.name""",
        [ROLLUP_POSITIONS, machine_type],
    )
    machines = await cur.fetchall()
    if not machines:
        return None
    best = min(machines, key=lambda m: len([f for f in needed if f not in (m[1] or [])]))
    absent = [f for f in needed if f not in (best[1] or [])]
    if not absent:
        return None
    return (
        f"no {machine_type} machine has sensor(s) {', '.join(absent)} among the first {ROLLUP_POSITIONS} "
        f"(the hourly rollup the worker feeds models); e.g. {best[0]} has {', '.join(best[1] or []) or 'none'}"
    )


async def register_model(
    conn: psycopg.AsyncConnection[Any], blob: bytes, meta: dict[str, Any], machine_type: str
) -> str:
    """Store a model (from :func:`read_model_file`) for ``machine_type``; returns its version."""
    await conn.execute(
        """INSERT INTO models (kind, machine_type, version, metadata, blob) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (kind, machine_type, version) DO NOTHING""",
        [meta["kind"], machine_type, meta["version"], Jsonb(meta), blob],
    )
    return str(meta["version"])


@dataclass(frozen=True)
class RegisteredModel:
    """One registered model; ``in_use`` marks the newest of its kind and machine type, the one the worker loads."""

    kind: str
    machine_type: str
    version: str
    method: str
    """The anomaly detector or the RUL estimator it was fitted with."""
    registered_at: datetime
    size_bytes: int
    in_use: bool


async def list_models(
    conn: psycopg.AsyncConnection[Any], *, kind: str | None = None, machine_type: str | None = None
) -> list[RegisteredModel]:
    """Registered models by kind and machine type, newest first within each."""
    # The same order as ModelCache._get, so that "in use" is what the worker loads.
    cur = await conn.execute(
        """SELECT kind, machine_type, version, coalesce(metadata->>'detector', metadata->>'estimator', '?'),
                  created_at, octet_length(blob),
                  row_number() OVER (PARTITION BY kind, machine_type ORDER BY created_at DESC, model_id DESC) = 1
           FROM models
           WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(type)s::text IS NULL OR machine_type = %(type)s)
           ORDER BY kind, machine_type, created_at DESC, model_id DESC""",
        {"kind": kind, "type": machine_type},
    )
    return [
        RegisteredModel(str(k), str(t), str(v), str(m), at, int(size), bool(use))
        for k, t, v, m, at, size, use in await cur.fetchall()
    ]


class ModelCache:
    """Newest model per kind and machine type, loaded once per version."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[str, object]] = {}

    async def _get(self, conn: psycopg.AsyncConnection[Any], kind: str, machine_type: str) -> tuple[str, object] | None:
        cur = await conn.execute(
            "SELECT version FROM models WHERE kind = %s AND machine_type = %s ORDER BY created_at DESC, model_id DESC LIMIT 1",
            [kind, machine_type],
        )
        row = await cur.fetchone()
        if row is None:
            return None
        hit = self._cache.get((kind, machine_type))
        if hit is not None and hit[0] == row[0]:
            return hit
        cur = await conn.execute(
            "SELECT blob FROM models WHERE kind = %s AND machine_type = %s AND version = %s",
            [kind, machine_type, row[0]],
        )
        blob = await cur.fetchone()
        assert blob is not None
        try:
            model: object = deserialize(bytes(blob[0]), f"registered {kind} model {row[0]} for {machine_type}")
        except ModelError as exc:
            # Said once per version: the worker goes on without it (and scores what other models it has).
            log.error(
                "%s; machines of type %s go without a %s model until a usable one is registered",
                exc,
                machine_type,
                kind,
            )
            model = None
        self._cache[(kind, machine_type)] = (str(row[0]), model)
        return str(row[0]), model

    async def anomaly(self, conn: psycopg.AsyncConnection[Any], machine_type: str) -> tuple[str, AnomalyModel] | None:
        got = await self._get(conn, "anomaly", machine_type)
        return (got[0], got[1]) if got is not None and isinstance(got[1], AnomalyModel) else None

    async def rul(self, conn: psycopg.AsyncConnection[Any], machine_type: str) -> tuple[str, RulModel] | None:
        got = await self._get(conn, "rul", machine_type)
        return (got[0], got[1]) if got is not None and isinstance(got[1], RulModel) else None
