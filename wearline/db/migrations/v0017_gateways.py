"""Gateways (issue 14, item 2): the MQTT clients the broker admits, kept in the registry. A gateway publishes
telemetry for one tenant's site; a service account (ingest, alerts) reads telemetry and publishes ticket events.
`wearline gateways files` writes Mosquitto's password and ACL files from this table, and ingest refuses telemetry
whose tenant and site no live gateway covers. Only the operator's login reads password hashes; ingest sees which
tenant and site each live gateway covers (wearline/db/_roles.py)."""

COMMON = """
CREATE TABLE gateways (
    gateway_id    serial PRIMARY KEY,
    -- The broker's user name, and the common name of the gateway's client certificate.
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind          text NOT NULL DEFAULT 'gateway' CHECK (kind IN ('gateway', 'service')),
    tenant_id     integer REFERENCES tenants,
    site_id       integer REFERENCES sites,
    -- mosquitto_passwd's $7$ (PBKDF2-SHA512) hash; NULL for a gateway that logs in with its certificate only.
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK ((kind = 'gateway') = (tenant_id IS NOT NULL AND site_id IS NOT NULL))
);
-- A name is one broker user at a time; a revoked gateway's name may be given again.
CREATE UNIQUE INDEX gateways_live_name_idx ON gateways (name) WHERE revoked_at IS NULL;
"""
