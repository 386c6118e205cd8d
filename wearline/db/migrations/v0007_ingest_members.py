"""Ingest workers' identities and heartbeats, so that a dead member (a stranded share) can be seen."""

COMMON = """
-- One row per ingest identity: its MQTT client id, which is also the persistent session a replacement resumes.
-- A row whose heartbeat is older than three intervals, not stopped and not retired, is a dead member: the broker
-- keeps queueing its share and nobody writes it until a worker with the same identity starts.
CREATE TABLE ingest_members (
    identity      text PRIMARY KEY,
    scheme        text NOT NULL CHECK (scheme IN ('shared', 'partitioned')),
    share         text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat_s   double precision NOT NULL,
    stopped_at    timestamptz,
    session_ended boolean NOT NULL DEFAULT false
);
"""
