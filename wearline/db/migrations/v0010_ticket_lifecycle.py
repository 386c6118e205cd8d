"""Tickets become work orders with a lifecycle: who acknowledged, assigned, escalated, resolved, and why."""

COMMON = """
ALTER TABLE tickets
    -- predictive: remaining life says it will fail; corrective: it behaves abnormally now.
    ADD COLUMN kind text NOT NULL DEFAULT 'corrective' CHECK (kind IN ('predictive', 'corrective')),
    ADD COLUMN team text,
    ADD COLUMN assignee text,
    ADD COLUMN due_at timestamptz,
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN escalation_level smallint NOT NULL DEFAULT 0,
    ADD COLUMN escalated_at timestamptz,
    ADD COLUMN reopened integer NOT NULL DEFAULT 0,
    ADD COLUMN reopened_at timestamptz,
    -- The key a maintenance system files the work order under: stable, so a re-delivery is recognised.
    ADD COLUMN external_id text NOT NULL DEFAULT 'wl-' || gen_random_uuid()::text UNIQUE;

-- Escalation looks for open tickets nobody acknowledged; auto-resolution for live ones whose condition cleared.
CREATE INDEX tickets_live_idx ON tickets (status, opened_at) WHERE status IN ('open', 'acknowledged', 'in_progress');
CREATE INDEX tickets_recent_resolved_idx ON tickets (machine_id, reason, resolved_at) WHERE status = 'resolved';

ALTER TABLE ticket_events DROP CONSTRAINT ticket_events_kind_check;
ALTER TABLE ticket_events ADD CONSTRAINT ticket_events_kind_check CHECK (kind IN (
    'opened', 'occurrence', 'status', 'priority', 'comment', 'assigned', 'escalated', 'reopened'));
-- Remaining-life estimates become evidence for predictive tickets; those made before this version are history.
UPDATE rul_estimates SET handled_at = now() WHERE handled_at IS NULL;
CREATE INDEX rul_estimates_unhandled_idx ON rul_estimates (time) WHERE handled_at IS NULL;

-- Traceability: every change says why, beside who (actor) and when (at).
ALTER TABLE ticket_events ADD COLUMN why text NOT NULL DEFAULT '';
"""
