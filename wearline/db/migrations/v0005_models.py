"""Analytics workers and their machine leases, and the model registry the worker scores with."""

COMMON = """
-- Live analytics workers; a worker whose heartbeat is older than its lease is gone and its machines are free.
CREATE TABLE analytics_workers (
    worker      text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat   timestamptz NOT NULL DEFAULT now()
);

-- Which worker scores which machine, until when. Claims are serialised by an advisory lock; an expired lease
-- is free for any worker to take.
CREATE TABLE analytics_leases (
    machine_id  integer PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    worker      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX analytics_leases_worker_idx ON analytics_leases (worker);

-- Trained models per machine type, newest version wins; the blob is the model file, metadata its sidecar.
CREATE TABLE models (
    model_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('anomaly', 'rul')),
    machine_type text NOT NULL,
    version      text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    blob         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, machine_type, version)
);
CREATE INDEX models_latest_idx ON models (kind, machine_type, created_at DESC);
"""
