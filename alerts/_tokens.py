"""API tokens: one tenant each, read-only or read-write; only their sha256 is stored, the token is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from wearline.errors import WearlineError

__all__ = ["PREFIX", "Scope", "TokenError", "TokenInfo", "authenticate", "create_token", "list_tokens", "revoke_token"]

PREFIX = "wlt_"  # recognisable in a leaked log or a secret scanner


class TokenError(WearlineError):
    """A token command that cannot be done: an unknown tenant or token."""


@dataclass(frozen=True)
class Scope:
    """Who a request is: the token's tenant, and whether it may change tickets."""

    token_id: int
    tenant_id: int
    tenant: str
    name: str
    can_write: bool


@dataclass
class TokenInfo:
    token_id: int
    tenant: str
    name: str
    can_write: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    conn: psycopg.AsyncConnection[Any], *, tenant: str, name: str, can_write: bool
) -> tuple[int, str]:
    """A new token for ``tenant``; returns (its id, the token), the only time the token is seen."""
    if not name.strip():
        raise TokenError("a token needs a name (--name), to tell tokens apart when one must be revoked")
    cur = await conn.execute("SELECT tenant_id FROM tenants WHERE name = %s", [tenant])
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute("SELECT string_agg(name, ', ' ORDER BY name) FROM tenants")
        known = await cur.fetchone()
        raise TokenError(f"no tenant {tenant!r} (tenants: {(known and known[0]) or 'none yet'})")
    token = PREFIX + secrets.token_urlsafe(32)
    cur = await conn.execute(
        "INSERT INTO api_tokens (tenant_id, name, token_hash, can_write) VALUES (%s, %s, %s, %s) RETURNING token_id",
        [row[0], name, _hash(token), can_write],
    )
    created = await cur.fetchone()
    assert created is not None
    return int(created[0]), token


async def list_tokens(conn: psycopg.AsyncConnection[Any]) -> list[TokenInfo]:
    cur = conn.cursor(row_factory=class_row(TokenInfo))
    await cur.execute(
        """SELECT k.token_id, t.name AS tenant, k.name, k.can_write, k.created_at, k.last_used_at, k.revoked_at
           FROM api_tokens k JOIN tenants t USING (tenant_id) ORDER BY k.token_id"""
    )
    return await cur.fetchall()


async def revoke_token(conn: psycopg.AsyncConnection[Any], token_id: int) -> None:
    cur = await conn.execute(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = %s RETURNING token_id",
        [token_id],
    )
    if await cur.fetchone() is None:
        raise TokenError(f"no token #{token_id}")


async def authenticate(conn: psycopg.AsyncConnection[Any], token: str) -> Scope | None:
    """The scope of a live token, or None for an unknown or revoked one."""
    if not token.startswith(PREFIX):
        return None
    cur = conn.cursor(row_factory=class_row(Scope))
    # The API's role cannot read api_tokens: this function can, and makes the session act for the token's tenant
    # (row-level security), or for none.
    await cur.execute("SELECT * FROM api_authenticate(%s)", [_hash(token)])
    return await cur.fetchone()
