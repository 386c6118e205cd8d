"""Ticket events on MQTT and work requests in a CMMS, each fed by a transactional outbox like the webhooks': a ticket
change and what it owes other systems commit together."""

COMMON = """
-- Every ticket event, to be published on MQTT: written in the event's own transaction, the ticket as it left it.
CREATE TABLE mqtt_outbox (
    event_id     bigint PRIMARY KEY REFERENCES ticket_events ON DELETE CASCADE,
    ticket_id    bigint NOT NULL,
    ticket_state jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    published_at timestamptz
);
CREATE INDEX mqtt_outbox_pending_idx ON mqtt_outbox (event_id) WHERE published_at IS NULL;

-- A maintenance system (CMMS) of a tenant that gets a work request for every new ticket.
CREATE TABLE cmms_adapters (
    adapter_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  integer NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind       text NOT NULL DEFAULT 'rest' CHECK (kind IN ('rest')),
    url        text NOT NULL CHECK (url ~ '^https?://'),
    -- Kept as it is: signing needs the secret itself.
    secret     text NOT NULL,
    -- The CMMS's status names -> ticket statuses, for status sent back.
    statuses   jsonb NOT NULL,
    -- Where the CMMS's answer to a creation names its work request's id.
    id_field   text NOT NULL DEFAULT 'id',
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz,
    UNIQUE (tenant_id, name)
);

-- One work request per ticket and adapter: its filing (retried like a webhook delivery) and the CMMS's id of it.
CREATE TABLE cmms_requests (
    request_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    adapter_id      integer NOT NULL REFERENCES cmms_adapters ON DELETE CASCADE,
    ticket_id       bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    filed_at        timestamptz,
    failed_at       timestamptz,
    last_error      text,
    work_request_id text,
    cmms_status     text,
    cmms_status_at  timestamptz,
    UNIQUE (adapter_id, ticket_id),
    UNIQUE (adapter_id, work_request_id)
);
CREATE INDEX cmms_requests_due_idx ON cmms_requests (next_attempt_at) WHERE filed_at IS NULL AND failed_at IS NULL;

CREATE FUNCTION ticket_event_to_delivery() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO mqtt_outbox (event_id, ticket_id, ticket_state)
    SELECT NEW.event_id, NEW.ticket_id, to_jsonb(t) FROM tickets t WHERE t.ticket_id = NEW.ticket_id;
    IF NEW.kind = 'opened' THEN
        INSERT INTO cmms_requests (adapter_id, ticket_id)
        SELECT a.adapter_id, NEW.ticket_id
        FROM cmms_adapters a JOIN tickets t ON t.tenant_id = a.tenant_id
        WHERE t.ticket_id = NEW.ticket_id AND a.removed_at IS NULL
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ticket_events_delivery AFTER INSERT ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION ticket_event_to_delivery();

-- The API's ticket list walks a tenant's tickets in its order (most urgent first) and stops at a page; one machine's
-- tickets are found by machine. Without these a list sorted every ticket of the tenant: 15-39 ms over 100,000
-- tickets, 1.4-2.9 ms with them (wearline bench tickets).
CREATE INDEX tickets_list_idx ON tickets (tenant_id, priority, opened_at, ticket_id);
CREATE INDEX tickets_machine_idx ON tickets (machine_id);
"""
