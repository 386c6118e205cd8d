"""Defence in depth behind the broker's ACL: which tenants and sites live gateways cover, as ingest sees them.

While gateways are in use (``ingest.require_gateways``, or any gateway in the registry, revoked ones included: once
an installation has gateways it stays closed even if all are revoked), telemetry for a tenant and site that no
live gateway covers becomes a ``no_gateway`` dead letter before it can reach the registry, so auto-registration
happens only inside a gateway's own tenant and site (and within ``ingest.max_*``). A misconfigured or permissive
broker then still cannot create tenants or write another tenant's readings. The set is read again every few
seconds, so a new gateway is admitted and a revoked one refused without restarting ingest.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wearline.topics import MachinePath

__all__ = ["GatewayScope", "NoGateway"]

REFRESH_S = 5.0
"""How stale the covered sites may be: a revocation takes effect in ingest within this long."""

_SCOPES = """
SELECT EXISTS (SELECT 1 FROM gateways WHERE kind = 'gateway'),
       coalesce(array_agg(t.name || '/' || s.name), '{}')
FROM gateways g JOIN tenants t USING (tenant_id) JOIN sites s USING (site_id)
WHERE g.kind = 'gateway' AND g.revoked_at IS NULL
"""


class NoGateway(Exception):
    """Telemetry for a tenant and site no live gateway covers; the message says which."""


class GatewayScope:
    """The tenant/site pairs live gateways cover, refreshed at most every :data:`REFRESH_S` seconds."""

    def __init__(self, *, required: bool) -> None:
        self._required = required
        self._enforced = required
        self._sites: frozenset[str] = frozenset()
        self._loaded_at: float | None = None

    async def refresh(self, pool: AsyncConnectionPool, *, wait_s: float, now: float | None = None) -> None:
        """Read the covered sites again when they are older than :data:`REFRESH_S` (once per batch at most)."""
        now = time.monotonic() if now is None else now
        if self._loaded_at is not None and now - self._loaded_at < REFRESH_S:
            return
        async with pool.connection(timeout=wait_s) as conn:
            row: Any = await (await conn.execute(_SCOPES)).fetchone()
        self._enforced = self._required or bool(row[0])
        self._sites = frozenset(row[1])
        self._loaded_at = now

    def check(self, path: MachinePath) -> None:
        """Raise :class:`NoGateway` when gateways are in use and none covers ``path``'s tenant and site."""
        if self._enforced and f"{path.tenant}/{path.site}" not in self._sites:
            raise NoGateway(
                f"no live gateway covers tenant {path.tenant!r}, site {path.site!r} "
                f"({len(self._sites)} site(s) covered; wearline gateways add --tenant ... --site ...)"
            )
