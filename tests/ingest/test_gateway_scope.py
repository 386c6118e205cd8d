"""Ingest checks again what the broker's ACL already should (issue 14, defence in depth): while gateways are in use,
telemetry for a tenant and site no live gateway covers is a `no_gateway` dead letter and registers nothing, and
auto-registration inside a gateway's site keeps its limits. Run against a broker that lets anyone publish (the
shipped delivery settings behind the test-only anonymous listener), which is what a misconfigured broker is.
Each limit is crossed tenfold."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from ingest import add_gateway, revoke_gateway
from ingest._gateway_scope import REFRESH_S
from tests.conftest import make_settings, unique
from tests.ingest.test_floods import _ingest, _msg, _scalar
from wearline.db import connect, migrate
from wearline.settings import Settings


async def _settings(schema: str, broker: tuple[str, int], **ing: object) -> Settings:
    host, port = broker
    settings = make_settings(schema, unique("wlt/"), "native", mqtt={"host": host, "port": port}, ingest=ing)
    await migrate(settings.database)
    return settings


def _topic(settings: Settings, tenant: str, site: str, machine: str) -> str:
    return f"{settings.topic_prefix}/{tenant}/{site}/line1/{machine}/telemetry"


def _refused(registry: CollectorRegistry, reason: str) -> int:
    return int(registry.get_sample_value("wearline_ingest_dead_letters_total", {"reason": reason}) or 0)


async def _gateway(settings: Settings, name: str, tenant: str, site: str) -> None:
    async with await connect(settings.database) as conn, conn.transaction():
        await add_gateway(conn, name=name, tenant=tenant, site=site)


async def test_with_a_gateway_no_tenant_or_machine_is_created_outside_its_site(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    limit = 3
    settings = await _settings(schema, shipped_broker, max_auto_tenants=limit, max_machines_per_tenant=limit)
    await _gateway(settings, "gw-a", "acme", "plant1")
    now = int(time.time() * 1000)
    new_tenants = [(_topic(settings, f"t{i:02d}", "site1", "m1"), _msg(now, {"a": 1.0})) for i in range(10 * limit)]
    other_site = [(_topic(settings, "acme", "plant2", f"m{i:02d}"), _msg(now, {"a": 1.0})) for i in range(10 * limit)]
    own_site = [(_topic(settings, "acme", "plant1", f"m{i:02d}"), _msg(now, {"a": 1.0})) for i in range(10 * limit)]
    async with _ingest(settings) as (registry, send):
        await send(new_tenants + other_site + own_site)
        no_gateway, limited = _refused(registry, "no_gateway"), _refused(registry, "registry_limit")
    tenants = _scalar(schema, "SELECT count(*) FROM tenants")
    sites = _scalar(schema, "SELECT count(*) FROM sites")
    machines = _scalar(schema, "SELECT count(*) FROM machines")
    rows = _scalar(schema, "SELECT count(*) FROM readings")
    stored = _scalar(schema, "SELECT count(*) FROM dead_letters WHERE reason = 'no_gateway'")
    print(
        f"published {len(new_tenants)} on new tenants, {len(other_site)} on another site, {len(own_site)} machines "
        f"on the gateway's site: {tenants} tenant(s), {sites} site(s), {machines} machines, {rows} rows; refused "
        f"{no_gateway} no_gateway ({stored} stored), {limited} registry_limit"
    )
    assert tenants == 1  # acme, which `gateways add` created; before issue 14 this was 31
    assert sites == 1
    assert machines == limit
    assert rows == limit
    assert no_gateway == len(new_tenants) + len(other_site)
    assert stored == no_gateway
    assert limited == len(own_site) - limit


async def test_required_gateways_admit_a_site_when_added_and_refuse_it_when_revoked(
    schema: str, shipped_broker: tuple[str, int]
) -> None:
    # As the ingest role: its column grants on gateways are all the check needs.
    owner = await _settings(schema, shipped_broker, require_gateways=True)
    settings = owner.model_copy(update={"database": owner.database.model_copy(update={"role": "wearline_ingest"})})
    n = 10
    stamp = iter(range(10**6))
    base = int(time.time() * 1000) - 60_000

    def batch() -> list[tuple[str, bytes]]:
        return [(_topic(settings, "acme", "plant1", f"m{i}"), _msg(base + next(stamp), {"a": 1.0})) for i in range(n)]

    async with _ingest(settings) as (registry, send):
        await send(batch())  # required, and no gateway yet
        before = (_refused(registry, "no_gateway"), _scalar(schema, "SELECT count(*) FROM tenants"))
        await _gateway(owner, "gw-a", "acme", "plant1")
        await asyncio.sleep(REFRESH_S + 0.5)
        await send(batch())
        admitted = _scalar(schema, "SELECT count(*) FROM readings")
        async with await connect(owner.database) as conn, conn.transaction():
            await revoke_gateway(conn, "gw-a")
        await asyncio.sleep(REFRESH_S + 0.5)
        await send(batch())
        after = _refused(registry, "no_gateway")
    rows = _scalar(schema, "SELECT count(*) FROM readings")
    print(
        f"{n} messages each: before any gateway {before[0]} refused ({before[1]} tenants); with gw-a {admitted} "
        f"rows; after revoking it {after - before[0]} more refused, {rows} rows in all"
    )
    assert before == (n, 0)
    assert admitted == n
    assert after - before[0] == n
    assert rows == n
