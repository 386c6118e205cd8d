"""Least-privilege database roles, one per stage, and row-level security for the API (issue 14, item 3).

``wearline db migrate`` applies this after the migrations, every time (it is idempotent, and a table a new
migration adds gets its grants here in the same release). Five group roles (``NOLOGIN``) hold the grants;
operators give each stage a login that is a member of its role, or point a shared login at it with
``database.role`` (``SET ROLE`` at connection start). The schema's owner, the login that migrates, keeps every
right and is what the operator's commands (``db``, ``models register``, ``tokens``, ``webhooks``, ``simulate``)
use.

- ingest writes readings, dead letters and the registry it may auto-fill; it cannot touch models or tickets.
- analytics reads readings and models and writes anomalies and estimates; it cannot write models, so a database
  login that leaks from a stage cannot plant one (model files are also loaded without running code).
- alerts owns tickets, rules' state and the outbox.
- api reads and acts on tickets of **one tenant per request**: every tenant-scoped table it can reach has a
  row-level security policy keyed by ``wearline.tenant_id``, which only ``api_authenticate`` (a
  ``SECURITY DEFINER`` function, the API's only way to read ``api_tokens``) sets, to the token's tenant.
- readonly is the dashboards' (Grafana's PostgreSQL data source): it reads the registry, readings, evidence, tickets
  and the stages' bookkeeping across tenants, and writes nothing. Grafana runs whatever SQL a dashboard editor types,
  so its login must not be a stage's: with this role a typed ``DELETE`` is refused, and secrets (token hashes,
  webhook and CMMS secrets, gateway passwords), model blobs and refused payloads stay out of reach.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["GRANTS", "READONLY", "ROLES", "apply_roles"]

log = logging.getLogger(__name__)

INGEST, ANALYTICS, ALERTS, API = "wearline_ingest", "wearline_analytics", "wearline_alerts", "wearline_api"
READONLY = "wearline_readonly"
ROLES = (INGEST, ANALYTICS, ALERTS, API, READONLY)

R = "SELECT"
RW = "SELECT, INSERT, UPDATE, DELETE"
_REGISTRY = {INGEST: "SELECT, INSERT, UPDATE", ANALYTICS: R, ALERTS: R, API: R, READONLY: R}

# Every table and view of the schema, with what each stage may do to it; a table missing here fails
# tests/test_roles.py, so a new migration cannot leave its table unreachable or open by accident.
GRANTS: dict[str, dict[str, str]] = {
    "schema_migrations": dict.fromkeys(ROLES, R),
    "meta": dict.fromkeys(ROLES, R),
    "tenants": {INGEST: "SELECT, INSERT", ANALYTICS: R, ALERTS: R, API: R, READONLY: R},
    "sites": _REGISTRY,
    "lines": _REGISTRY,
    "machine_types": _REGISTRY,
    "machines": _REGISTRY,
    "sensors": _REGISTRY,
    "readings": {INGEST: "SELECT, INSERT, UPDATE", ANALYTICS: R, ALERTS: R, API: R, READONLY: R},
    "readings_hourly": {ANALYTICS: R, ALERTS: R, API: R, READONLY: R},
    # Dashboards count refused messages by reason and topic; the payloads themselves stay with the operator.
    "dead_letters": {
        INGEST: RW,
        ALERTS: R,
        READONLY: "SELECT (dead_letter_id, received_at, topic, reason, replayed_at)",
    },
    "ingest_members": {INGEST: RW, READONLY: R},
    "analytics_workers": {ANALYTICS: RW, READONLY: R},
    "analytics_leases": {ANALYTICS: RW, READONLY: R},
    "analytics_watermarks": {ANALYTICS: RW, ALERTS: R, API: R, READONLY: R},
    "anomalies": {ANALYTICS: "SELECT, INSERT, UPDATE", ALERTS: "SELECT, UPDATE", API: R, READONLY: R},
    "rul_estimates": {ANALYTICS: "SELECT, INSERT", ALERTS: "SELECT, UPDATE", API: R, READONLY: R},
    "models": {ANALYTICS: R},
    "tickets": {ALERTS: RW, API: "SELECT, UPDATE", READONLY: R},
    "ticket_events": {ALERTS: "SELECT, INSERT", API: "SELECT, INSERT", READONLY: R},
    "outbox": {ALERTS: RW},
    "webhooks": {ALERTS: R},
    "api_tokens": {},
    "rule_watch": {ALERTS: RW},
    "mqtt_outbox": {ALERTS: RW},
    # The API maps a CMMS's status back to a ticket: never the adapter's URL or secret.
    "cmms_adapters": {ALERTS: R, API: "SELECT (adapter_id, tenant_id, name, statuses, removed_at)"},
    "cmms_requests": {ALERTS: RW, API: "SELECT, UPDATE (cmms_status, cmms_status_at)"},
    "sparkplug_nodes": {INGEST: RW, ALERTS: R},
    # Ingest learns which tenant and site each live gateway covers; password hashes stay with the operator's login.
    "gateways": {INGEST: "SELECT (gateway_id, kind, tenant_id, site_id, revoked_at)"},
    "sim_runs": {},
    "sim_events": {},
    "sim_truth": {},
}

_TENANT = "nullif(current_setting('wearline.tenant_id', true), '')::int"
_OWN_MACHINES = f"machine_id IN (SELECT machine_id FROM machines WHERE tenant_id = {_TENANT})"
# What the API may see of each tenant-scoped table: the rows of the tenant its request authenticated as.
POLICIES: dict[str, str] = {
    "tenants": f"tenant_id = {_TENANT}",
    "sites": f"tenant_id = {_TENANT}",
    "lines": f"site_id IN (SELECT site_id FROM sites WHERE tenant_id = {_TENANT})",
    "machines": f"tenant_id = {_TENANT}",
    "sensors": _OWN_MACHINES,
    "readings": _OWN_MACHINES,
    "analytics_watermarks": _OWN_MACHINES,
    "anomalies": _OWN_MACHINES,
    "rul_estimates": _OWN_MACHINES,
    "tickets": f"tenant_id = {_TENANT}",
    "ticket_events": f"ticket_id IN (SELECT ticket_id FROM tickets WHERE tenant_id = {_TENANT})",
    "cmms_adapters": f"tenant_id = {_TENANT}",
    "cmms_requests": f"adapter_id IN (SELECT adapter_id FROM cmms_adapters WHERE tenant_id = {_TENANT})",
}

# Functions that act beyond their caller's grants, each for one narrow purpose: creating and dropping partitions
# (ingest must not need CREATE on the schema), setting the readings retention policy (ingest's housekeeping applies
# database.retention_days; a policy is the hypertable owner's), filing a ticket's outbox rows and line (the API
# writes events but may not read webhooks).
_DEFINERS = (
    "ensure_partitions(date, date)",
    "drop_partitions_before(date)",
    "set_readings_retention(integer)",
    "ticket_event_to_outbox()",
    "ticket_event_to_delivery()",
    "ticket_line()",
)

_AUTHENTICATE = """
CREATE OR REPLACE FUNCTION api_authenticate(token_hash bytea)
RETURNS TABLE (token_id integer, tenant_id integer, tenant text, name text, can_write boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY SELECT k.token_id, k.tenant_id, t.name, k.name, k.can_write
                 FROM api_tokens k JOIN tenants t ON t.tenant_id = k.tenant_id
                 WHERE k.token_hash = api_authenticate.token_hash AND k.revoked_at IS NULL;
    -- The session acts for this tenant from here on (row-level security); an unknown token for none.
    PERFORM set_config('wearline.tenant_id',
                       coalesce((SELECT k.tenant_id::text FROM api_tokens k
                                 WHERE k.token_hash = api_authenticate.token_hash AND k.revoked_at IS NULL), ''),
                       false);
    -- Once a minute at most: a write per request would make every read a write.
    UPDATE api_tokens k SET last_used_at = now()
    WHERE k.token_hash = api_authenticate.token_hash AND k.revoked_at IS NULL
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute');
END $$;
"""


async def apply_roles(conn: psycopg.AsyncConnection[Any], schema: str, mode: str) -> bool:
    """Create the stage roles if missing, grant each its tables, and set the API's row-level security. Returns
    False (with a warning) when the migrating login may not create roles and they do not exist: everything then
    runs as that login, as before."""
    cur = await conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(ROLES)])
    existing = {r[0] for r in await cur.fetchall()}
    cur = await conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    row = await cur.fetchone()
    may_create = bool(row and row[0])
    missing = [r for r in ROLES if r not in existing]
    roles: tuple[str, ...] = ROLES
    if READONLY in missing and not may_create:
        # Added after the stage roles: an installation whose administrator created those four keeps its grants.
        log.warning(
            "database role %s is missing and this login may not create it: dashboards have no read-only role; "
            "create it once as an administrator (docs/metrics.md)",
            READONLY,
        )
        missing.remove(READONLY)
        roles = tuple(r for r in ROLES if r != READONLY)
    if missing and not may_create:
        log.warning(
            "database roles %s are missing and %s may not create them: every stage keeps using its own login; "
            "create them once as an administrator (docs/security.md)",
            ", ".join(missing),
            "this login",
        )
        return False
    for role in missing:
        # Roles belong to the cluster: another schema's migration may create one at the same moment.
        await conn.execute(
            sql.SQL(
                "DO $$ BEGIN CREATE ROLE {} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ).format(sql.Identifier(role))
        )
    s = sql.Identifier(schema)
    await conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, sql.SQL(", ").join(map(sql.Identifier, roles)))
    )
    # Not the reader's: nextval() is a write.
    await conn.execute(
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            s, sql.SQL(", ").join(sql.Identifier(r) for r in roles if r != READONLY)
        )
    )
    cur = await conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
""",
        [schema],
    )
    tables = {r[0] for r in await cur.fetchall()}
    for table in sorted(tables):
        t = sql.Identifier(schema, table)
        await conn.execute(
            sql.SQL("REVOKE ALL ON {} FROM {}").format(t, sql.SQL(", ").join(map(sql.Identifier, roles)))
        )
        for role, privileges in GRANTS.get(table, {}).items():
            if role not in roles:
                continue
            await conn.execute(sql.SQL(f"GRANT {privileges} ON {{}} TO {{}}").format(t, sql.Identifier(role)))
    for fn in _DEFINERS:
        cur = await conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", [f"{schema}.{fn}"])
        present = await cur.fetchone()
        if present and present[0]:  # the partition functions are native-only, the policy one TimescaleDB-only
            await conn.execute(sql.SQL(f"ALTER FUNCTION {{}}.{fn} SECURITY DEFINER").format(s))
    await conn.execute(_AUTHENTICATE)
    if mode == "native" and "readings_hourly" in tables:
        # A view runs with its owner's rights unless told otherwise: the API must meet readings' policy through it.
        await conn.execute("ALTER VIEW readings_hourly SET (security_invoker = true)")
    # The reader is cross-tenant too (an operator's dashboards); its grants keep it from writing.
    others = sql.SQL(", ").join(sql.Identifier(r) for r in (INGEST, ANALYTICS, ALERTS, READONLY) if r in roles)
    for table, rule in POLICIES.items():
        # A hypertable's chunks are tables of TimescaleDB's own schema: there the API meets readings only through
        # readings_hourly, and its queries name the tenant (the policy guards the native path).
        if table not in tables or (table == "readings" and mode == "timescaledb"):
            continue
        t = sql.Identifier(schema, table)
        await conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t))
        await conn.execute(sql.SQL("DROP POLICY IF EXISTS api_one_tenant ON {}").format(t))
        await conn.execute(sql.SQL("DROP POLICY IF EXISTS stages_all ON {}").format(t))
        await conn.execute(
            sql.SQL(f"CREATE POLICY api_one_tenant ON {{}} TO {{}} USING ({rule}) WITH CHECK ({rule})").format(
                t, sql.Identifier(API)
            )
        )
        # The other stages work across tenants by design (ingest files every tenant's readings).
        await conn.execute(
            sql.SQL("CREATE POLICY stages_all ON {} TO {} USING (true) WITH CHECK (true)").format(t, others)
        )
    return True
