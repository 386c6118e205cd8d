"""Asset registry: tenant > site > line > machine, machine types, and each machine's sensors."""

COMMON = """
CREATE TABLE tenants (
    tenant_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    site_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name        text NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE lines (
    line_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id     integer NOT NULL REFERENCES sites ON DELETE CASCADE,
    name        text NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE machine_types (
    type_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT ''
);

-- tenant_id repeats the line's tenant so that every tenant-scoped query filters one indexed column;
-- the composite foreign key below keeps the copy honest.
CREATE TABLE machines (
    machine_id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    line_id         integer NOT NULL REFERENCES lines ON DELETE CASCADE,
    name            text NOT NULL,
    type_id         integer REFERENCES machine_types,
    auto_registered boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (line_id, name)
);
CREATE INDEX machines_tenant_idx ON machines (tenant_id);

-- A machine's sensors, in the order their values sit in readings.vals (position 1 = vals[1]). Positions are
-- only ever appended, so rows written before a sensor was added stay readable.
CREATE TABLE sensors (
    machine_id  integer NOT NULL REFERENCES machines ON DELETE CASCADE,
    position    smallint NOT NULL CHECK (position >= 1),
    name        text NOT NULL,
    unit        text NOT NULL DEFAULT '',
    PRIMARY KEY (machine_id, position),
    UNIQUE (machine_id, name)
);
"""
