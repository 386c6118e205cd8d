"""Alert rules: tickets for a whole gateway (a line), the rule kind behind each ticket, and what the rules have
watched of each machine's readings so far."""

COMMON = """
-- A gateway that went dark or floods dead letters is one problem, not one per machine behind it: such a ticket
-- names the line (the topic level a gateway publishes under) and no machine.
ALTER TABLE tickets ADD COLUMN line_id integer REFERENCES lines ON DELETE CASCADE;
UPDATE tickets k SET line_id = m.line_id FROM machines m WHERE m.machine_id = k.machine_id;
ALTER TABLE tickets ALTER COLUMN line_id SET NOT NULL;
-- A machine's ticket is on the machine's line: writers that name only the machine need not look it up.
CREATE FUNCTION ticket_line() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF NEW.line_id IS NULL THEN
        NEW.line_id := (SELECT line_id FROM machines WHERE machine_id = NEW.machine_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tickets_line BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION ticket_line();
ALTER TABLE tickets ALTER COLUMN machine_id DROP NOT NULL;
DROP INDEX tickets_one_live_idx;
CREATE UNIQUE INDEX tickets_one_live_idx ON tickets (line_id, coalesce(machine_id, 0), reason)
    WHERE status IN ('open', 'acknowledged', 'in_progress');
DROP INDEX tickets_recent_resolved_idx;
CREATE INDEX tickets_recent_resolved_idx ON tickets (line_id, machine_id, reason, resolved_at)
    WHERE status = 'resolved';

-- The kind of rule that files a ticket's evidence decides how far its condition has been watched (auto-resolve).
ALTER TABLE tickets ADD COLUMN source text NOT NULL DEFAULT 'anomaly'
    CHECK (source IN ('anomaly', 'remaining_life', 'threshold', 'silence', 'dead_letters'));
UPDATE tickets SET source = 'remaining_life' WHERE reason = 'remaining_life';

-- Per machine: readings the threshold and silence rules have looked at (time of the newest), the usual interval
-- between readings (for silence), and since when each threshold rule has been breached (rule name -> time).
CREATE TABLE rule_watch (
    machine_id      integer PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    checked_through timestamptz NOT NULL,
    interval_s      float8,
    breaches        jsonb NOT NULL DEFAULT '{}'
);
"""
