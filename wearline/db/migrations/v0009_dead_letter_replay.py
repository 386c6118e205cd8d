"""Dead letters remember when they were replayed (``wearline dead-letters replay``)."""

COMMON = """
-- Set once the broker has acknowledged the re-published payload (PUBACK). NULL: not replayed. A replayed payload
-- that is refused again becomes a new dead letter; this row stays as the record of what was sent back.
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz;
CREATE INDEX dead_letters_pending_idx ON dead_letters (dead_letter_id) WHERE replayed_at IS NULL;
"""
