"""Retention a running process can change (issue 15): in TimescaleDB mode, one function that makes the readings
retention policy what ``database.retention_days`` says (replace it when the value changed, remove it at 0). A
policy belongs to the hypertable's owner; the function runs with the owner's rights (``SECURITY DEFINER``, see
wearline/db/_roles.py) so that ingest's housekeeping, acting as wearline_ingest, can call it and nothing more.
Native mode drops whole partitions with ``drop_partitions_before`` (migration 2).

Numbered 18 though written before 17: stages check only the highest version applied, so a schema already at 17
would have looked current without it."""

COMMON = ""

TIMESCALEDB = """
CREATE FUNCTION set_readings_retention(days integer) RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    current_after interval;
    wanted interval := CASE WHEN days > 0 THEN make_interval(days => days) END;
BEGIN
    -- Several ingest workers run the same housekeeping: one at a time, the others then find it done.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.readings retention'));
    SELECT (j.config->>'drop_after')::interval INTO current_after
      FROM timescaledb_information.jobs j
     WHERE j.proc_name = 'policy_retention'
       AND j.hypertable_schema = current_schema() AND j.hypertable_name = 'readings';
    IF current_after IS NOT DISTINCT FROM wanted THEN
        RETURN 'unchanged';
    END IF;
    IF current_after IS NOT NULL THEN
        PERFORM remove_retention_policy('readings');
    END IF;
    IF wanted IS NULL THEN
        RETURN 'removed';
    END IF;
    PERFORM add_retention_policy('readings', wanted);
    RETURN 'set';
END
$$;
"""
