"""A sensor's first stored value at an instant stays; dead letters record their size as received; tenants record
whether ingest created them (its auto-registration limits count them)."""

COMMON = """
-- Re-sends cannot rewrite history: a stored value wins over a re-sent one, a NULL is filled (was: the newest won).
-- Ingest keeps each conflicting re-send as a dead letter with reason 'conflict'.
CREATE OR REPLACE FUNCTION merge_vals(old float8[], new float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(
    SELECT coalesce(o, n)
    FROM unnest(old, new) AS u(o, n)
);

-- True when some position holds a value in both arrays and the two differ.
CREATE FUNCTION vals_conflict(old float8[], new float8[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN EXISTS (SELECT 1 FROM unnest(old, new) AS u(o, n) WHERE o <> n);

-- Ingest stores at most ingest.dead_letter_max_payload_bytes of a refused payload; this is its size as received
-- (NULL on rows written before this migration, which kept the whole payload).
ALTER TABLE dead_letters ADD COLUMN original_size integer;

-- Tenants created by ingest's auto-registration, which ingest.max_auto_tenants bounds.
ALTER TABLE tenants ADD COLUMN auto_registered boolean NOT NULL DEFAULT false;
"""
