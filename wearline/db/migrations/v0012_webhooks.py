"""Webhooks per tenant and their transactional outbox: a ticket event and its deliveries commit together."""

COMMON = """
CREATE TABLE webhooks (
    webhook_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name        text NOT NULL,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    format      text NOT NULL DEFAULT 'wearline' CHECK (format IN ('wearline', 'alertmanager')),
    -- Kept as it is: signing needs the secret itself, not a hash of it.
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    removed_at  timestamptz,
    UNIQUE (tenant_id, name)
);

CREATE TABLE outbox (
    outbox_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      integer NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES ticket_events ON DELETE CASCADE,
    ticket_id       bigint NOT NULL,
    -- The ticket as the event left it: a delivery made later (a retry) still tells what was true then.
    ticket_state    jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_ticket_idx ON outbox (webhook_id, ticket_id, outbox_id) WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Every event, whoever writes it (the worker, the CLI, the API), gets one outbox row per live webhook of its
-- tenant in the same transaction: nothing is committed without its deliveries, nothing delivered uncommitted.
CREATE FUNCTION ticket_event_to_outbox() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT  -- this schema's tables, whatever the writer's search_path
    AS $$
BEGIN
    INSERT INTO outbox (webhook_id, event_id, ticket_id, ticket_state)
    SELECT w.webhook_id, NEW.event_id, NEW.ticket_id, to_jsonb(t)
    FROM webhooks w JOIN tickets t ON t.tenant_id = w.tenant_id
    WHERE t.ticket_id = NEW.ticket_id AND w.removed_at IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER ticket_events_outbox AFTER INSERT ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION ticket_event_to_outbox();
"""
