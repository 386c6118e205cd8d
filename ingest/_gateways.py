"""Gateways: the broker's users, kept in the registry (migration 17), and the Mosquitto files made from them.

A **gateway** publishes telemetry for one tenant's site and reads nothing; a **service** account is a Wearline
stage (ingest reads telemetry, alerts publishes ticket events). Passwords are generated, shown once and stored as
``mosquitto_passwd``'s PBKDF2-SHA512 hash, so the password file can be written again at any time without them. A
gateway may instead log in with a client certificate whose common name is its name (the broker's TLS listener with
``require_certificate`` and ``use_identity_as_username``); it then needs no password.

The ACL Mosquitto gets, per gateway::

    user <name>
    topic write <prefix>/<tenant>/<site>/+/+/telemetry

Nothing to read, so a subscription to ``#`` or ``$SYS/#`` delivers nothing. EMQX and HiveMQ take the same rules
in their own form (docs/security.md).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import class_row

from wearline.errors import WearlineError
from wearline.mosquitto import password_entry
from wearline.topics import LEVEL

__all__ = [
    "RELOAD_HINT",
    "Gateway",
    "GatewayError",
    "add_gateway",
    "broker_files",
    "list_gateways",
    "revoke_gateway",
    "write_broker_files",
]

RELOAD_HINT = (
    "Mosquitto reads both files again on SIGHUP: `systemctl reload mosquitto`, `kill -HUP $(pidof mosquitto)`, "
    "or `docker compose kill -s HUP mosquitto`; clients already connected keep their session, and a revoked "
    "gateway's next publish is refused"
)


class GatewayError(WearlineError):
    """A gateway command that cannot be done: a bad or taken name, an unknown gateway, a missing scope."""


@dataclass
class Gateway:
    gateway_id: int
    name: str
    kind: str
    tenant: str | None
    site: str | None
    password_hash: str | None
    created_at: datetime
    revoked_at: datetime | None


def _check_name(what: str, value: str) -> None:
    # The same characters as a topic level: a name is an MQTT user name, an ACL word and a certificate's CN.
    if not LEVEL.match(value):
        raise GatewayError(f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 _ . - (it becomes a topic level or user)")


async def add_gateway(
    conn: psycopg.AsyncConnection[Any],
    *,
    name: str,
    tenant: str | None = None,
    site: str | None = None,
    service: bool = False,
    password: bool = True,
) -> tuple[Gateway, str | None]:
    """Register a gateway of ``tenant``'s ``site`` (both created when new: the operator admits them here), or with
    ``service`` a stage's account. Returns it and its new password (``None`` with ``password=False``: it logs in
    with a client certificate whose CN is ``name``). Run inside a transaction."""
    _check_name("gateway name", name)
    if service and (tenant or site):
        raise GatewayError("a service account (--service) reads every tenant's telemetry: give no --tenant/--site")
    if not service:
        if not tenant or not site:
            raise GatewayError("a gateway needs --tenant and --site: it may publish for that site only")
        _check_name("tenant", tenant)
        _check_name("site", site)
    cur = await conn.execute("SELECT 1 FROM gateways WHERE name = %s AND revoked_at IS NULL", [name])
    if await cur.fetchone() is not None:
        raise GatewayError(f"gateway {name!r} exists; revoke it first (wearline gateways revoke {name})")
    tenant_id = site_id = None
    if not service:
        cur = await conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES (%s)
                          ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, %s FROM t
                          ON CONFLICT (tenant_id, name) DO UPDATE SET name = excluded.name RETURNING site_id)
               SELECT t.tenant_id, s.site_id FROM t, s""",
            [tenant, site],
        )
        row = await cur.fetchone()
        assert row is not None
        tenant_id, site_id = row
    secret = secrets.token_urlsafe(24) if password else None
    stored = password_entry(name, secret).split(":", 1)[1] if secret is not None else None
    cur = await conn.execute(
        """INSERT INTO gateways (name, kind, tenant_id, site_id, password_hash) VALUES (%s, %s, %s, %s, %s)
           RETURNING gateway_id""",
        [name, "service" if service else "gateway", tenant_id, site_id, stored],
    )
    row = await cur.fetchone()
    assert row is not None
    [gateway] = [g for g in await list_gateways(conn) if g.gateway_id == row[0]]
    return gateway, secret


async def list_gateways(conn: psycopg.AsyncConnection[Any], *, live_only: bool = False) -> list[Gateway]:
    """Every gateway and service account, oldest first (``live_only``: not revoked)."""
    cur = conn.cursor(row_factory=class_row(Gateway))
    await cur.execute(
        """SELECT g.gateway_id, g.name, g.kind, t.name AS tenant, s.name AS site, g.password_hash, g.created_at,
                  g.revoked_at
           FROM gateways g LEFT JOIN tenants t USING (tenant_id) LEFT JOIN sites s USING (site_id)
           WHERE NOT %s OR g.revoked_at IS NULL
           ORDER BY g.gateway_id""",
        [live_only],
    )
    return await cur.fetchall()


async def revoke_gateway(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    """Revoke the live gateway ``name``: it leaves the broker's files, and ingest refuses its site's telemetry
    unless another live gateway covers that site."""
    cur = await conn.execute(
        "UPDATE gateways SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING gateway_id", [name]
    )
    if await cur.fetchone() is None:
        raise GatewayError(f"no live gateway {name!r} (wearline gateways list)")


def broker_files(gateways: list[Gateway], topic_prefix: str) -> tuple[str, str]:
    """Mosquitto's password file and ACL file for the live ``gateways``."""
    passwd = [f"{g.name}:{g.password_hash}" for g in gateways if g.revoked_at is None and g.password_hash is not None]
    acl = [
        "# Written by `wearline gateways files` from the registry; edits are lost on the next run.",
        "# No pattern lines: a user not named here, or a topic not listed for it, is refused.",
    ]
    for g in gateways:
        if g.revoked_at is not None:
            continue
        acl.append("")
        if g.kind == "service":
            acl += [
                f"# service account {g.name}: ingest and alerts",
                f"user {g.name}",
                f"topic read {topic_prefix}/#",
                f"topic write {topic_prefix}/+/tickets/#",
                "topic readwrite spBv1.0/#",
                # Ingest asks the broker what it is, to choose its subscription scheme (ingest/_scheme.py).
                "topic read $SYS/broker/version",
                "topic read $SYS/brokers/+/version",
            ]
        else:
            acl += [
                f"# gateway {g.name}: tenant {g.tenant}, site {g.site}",
                f"user {g.name}",
                f"topic write {topic_prefix}/{g.tenant}/{g.site}/+/+/telemetry",
            ]
    return "\n".join(passwd) + ("\n" if passwd else ""), "\n".join(acl) + "\n"


def _replace(path: Path, text: str, default_mode: int) -> None:
    """Write ``path`` whole or not at all; an existing file keeps its mode and owner (the broker's user reads it)."""
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = default_mode, None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        if owner is not None and hasattr(os, "chown"):
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_broker_files(gateways: list[Gateway], topic_prefix: str, *, password_file: Path, acl_file: Path) -> None:
    """Replace the broker's password and ACL files (each atomically) with what the registry says."""
    passwd, acl = broker_files(gateways, topic_prefix)
    for path in (password_file, acl_file):
        if not path.parent.is_dir():
            raise GatewayError(f"cannot write {path}: its directory {path.parent} does not exist")
    try:
        # New files readable by the owner and group only: give the group to the broker's user (chgrp mosquitto).
        _replace(password_file, passwd, 0o640)
        _replace(acl_file, acl, 0o644)
    except OSError as exc:
        raise GatewayError(f"cannot write the broker's files: {exc}") from exc
