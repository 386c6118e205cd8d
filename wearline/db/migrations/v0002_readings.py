"""Readings: one wide row per machine and instant, values in sensor-position order (see docs/architecture.md)."""

COMMON = """
CREATE FUNCTION merge_vals(old float8[], new float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(
    SELECT coalesce(n, o)
    FROM unnest(old, new) AS u(o, n)
);

CREATE TABLE dead_letters (
    dead_letter_id  bigint GENERATED ALWAYS AS IDENTITY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    reason          text NOT NULL,
    detail          text NOT NULL,
    payload         bytea NOT NULL,
    PRIMARY KEY (dead_letter_id)
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);
"""

TIMESCALEDB = """
CREATE TABLE readings (
    machine_id  integer NOT NULL,
    time        timestamptz NOT NULL,
    vals        float8[] NOT NULL,
    PRIMARY KEY (machine_id, time)
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'machine_id',
    timescaledb.compress_orderby = 'time'
);
SELECT add_compression_policy('readings', interval '7 days');
"""

NATIVE = """
CREATE TABLE readings (
    machine_id  integer NOT NULL,
    time        timestamptz NOT NULL,
    vals        float8[] NOT NULL,
    PRIMARY KEY (machine_id, time)
) PARTITION BY RANGE (time);

-- Daily partitions named readings_pYYYYMMDD, created on demand and ahead of time. The advisory lock makes
-- concurrent callers (several ingest processes) take turns instead of failing on a duplicate name.
CREATE FUNCTION ensure_partitions(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    d date;
    part text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.readings partitions'));
    d := from_day;
    WHILE d <= to_day LOOP
        part := 'readings_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(current_schema()) || '.' || part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF %I.readings FOR VALUES FROM (%L) TO (%L)',
                current_schema(), part, current_schema(), d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00'
            );
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Native counterpart of a retention policy: detach and drop whole partitions that end before the cut-off.
CREATE FUNCTION drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE p.relname = 'readings' AND n.nspname = current_schema()
          AND c.relname ~ '^readings_p[0-9]{8}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') + 1 <= cutoff
    LOOP
        EXECUTE format('DROP TABLE %I.%I', current_schema(), part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
"""
