"""API tokens: each scoped to one tenant, read-only or read-write, stored as a hash only."""

COMMON = """
CREATE TABLE api_tokens (
    token_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name         text NOT NULL,
    -- sha256 of the token: tokens are 256 random bits, so a fast hash cannot be reversed by guessing.
    token_hash   bytea NOT NULL UNIQUE,
    can_write    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
"""
