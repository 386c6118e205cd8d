"""Anomalies, RUL estimates, the analytics watermark, and service tickets with their event history."""

COMMON = """
-- Per machine and detector: the newest reading time already scored, so a restarted worker resumes there.
CREATE TABLE analytics_watermarks (
    machine_id  integer NOT NULL REFERENCES machines ON DELETE CASCADE,
    detector    text NOT NULL,
    last_time   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (machine_id, detector)
);

CREATE TABLE anomalies (
    anomaly_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id  integer NOT NULL REFERENCES machines ON DELETE CASCADE,
    time        timestamptz NOT NULL,
    detector    text NOT NULL,
    score       float8 NOT NULL,
    threshold   float8 NOT NULL,
    sensors     text[] NOT NULL DEFAULT '{}',
    details     jsonb NOT NULL DEFAULT '{}',
    detected_at timestamptz NOT NULL DEFAULT now(),
    ticket_id   bigint,
    handled_at  timestamptz,
    UNIQUE (machine_id, detector, time)
);
CREATE INDEX anomalies_unhandled_idx ON anomalies (anomaly_id) WHERE handled_at IS NULL;
CREATE INDEX anomalies_machine_time_idx ON anomalies (machine_id, time);

CREATE TABLE rul_estimates (
    machine_id    integer NOT NULL REFERENCES machines ON DELETE CASCADE,
    time          timestamptz NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    rul_hours     float8 NOT NULL,
    lower_hours   float8 NOT NULL,
    upper_hours   float8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    handled_at    timestamptz,
    PRIMARY KEY (machine_id, time, model),
    CHECK (lower_hours <= rul_hours AND rul_hours <= upper_hours)
);

CREATE TABLE tickets (
    ticket_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    machine_id   integer NOT NULL REFERENCES machines ON DELETE CASCADE,
    reason       text NOT NULL,
    priority     smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),
    status       text NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'acknowledged', 'in_progress', 'resolved', 'closed')),
    title        text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}',
    occurrences  integer NOT NULL DEFAULT 1,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz
);
-- Deduplication: at most one live ticket per machine and reason.
CREATE UNIQUE INDEX tickets_one_live_idx ON tickets (machine_id, reason)
    WHERE status IN ('open', 'acknowledged', 'in_progress');
CREATE INDEX tickets_tenant_status_idx ON tickets (tenant_id, status, priority);

ALTER TABLE anomalies ADD FOREIGN KEY (ticket_id) REFERENCES tickets ON DELETE SET NULL;

CREATE TABLE ticket_events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL CHECK (kind IN ('opened', 'occurrence', 'status', 'priority', 'comment')),
    actor      text NOT NULL DEFAULT 'wearline',
    data       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ticket_events_ticket_idx ON ticket_events (ticket_id, at);
"""
