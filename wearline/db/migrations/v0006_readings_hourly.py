"""Hourly rollup of readings per machine (``readings_hourly``), the RUL models' input, in both storage modes.

One row per machine and hour: ``bucket`` (the hour's start, UTC-aligned), ``n_readings`` (rows in the hour) and
``mean_1`` .. ``mean_16``, the mean of each value position (``mean_1`` of ``vals[1]``). A NULL element means "not
measured" and stays out of its mean; a position that no reading of the hour has is NULL. The width is fixed
because a continuous aggregate cannot unnest an array; positions past it are not rolled up.

With TimescaleDB it is a continuous aggregate with real-time aggregation (the hours not yet materialized are
computed from ``readings`` at query time, so the current hour is always there). Its refresh policy has no start
offset: each run re-materializes every hour that received late rows since the last run, however old (an ingest
backlog replays 30 h and more; a backfill, years), so the rollup always converges to what ``readings`` holds.
A run costs only the invalidated hours plus the new ones. The last hour is left to real-time aggregation.
Natively it is a plain view with the same columns, computed at query time.
"""

POSITIONS = 16
"""Value positions rolled up (``mean_1`` .. ``mean_16``)."""


def _rollup(bucket: str) -> str:
    means = ",\n    ".join(f"avg(vals[{p}]) AS mean_{p}" for p in range(1, POSITIONS + 1))
    return f"""SELECT
    machine_id,
    {bucket} AS bucket,
    count(*) AS n_readings,
    {means}
FROM readings
GROUP BY machine_id, bucket"""


COMMON = ""

# WITH NO DATA: a materializing CREATE cannot run in the migration's transaction; the policy's first run fills it
# and real-time aggregation serves every hour until then.
TIMESCALEDB = f"""
CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
{_rollup("time_bucket(interval '1 hour', time)")}
WITH NO DATA;

SELECT add_continuous_aggregate_policy(
    'readings_hourly',
    start_offset => NULL,
    end_offset => interval '1 hour',
    schedule_interval => interval '30 minutes'
);
"""

# date_bin with a fixed UTC origin, not date_trunc: hours must not depend on the session's time zone.
NATIVE = f"""
CREATE VIEW readings_hourly AS
{_rollup("date_bin(interval '1 hour', time, timestamptz '2000-01-01 00:00:00+00')")};
"""
