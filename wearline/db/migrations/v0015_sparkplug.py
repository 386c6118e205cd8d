"""Sparkplug B host application (issue 16): each edge node's session kept across ingest restarts, and whether a
machine is offline (its edge node or device died), for the alert rules and the board."""

COMMON = """
-- One row per Sparkplug edge node: birth/death sequence (bdSeq) of the session in force, the last message
-- sequence number, and in session the metric names, datatypes and aliases of its births (node and devices),
-- the sequence numbers still missing and when a rebirth was last asked. Written in the transaction that commits
-- the readings of the same messages, so a restart resumes exactly where the committed data stops.
CREATE TABLE sparkplug_nodes (
    group_id   text NOT NULL,
    edge_node  text NOT NULL,
    online     boolean NOT NULL DEFAULT false,
    bdseq      bigint,
    seq        integer CHECK (seq BETWEEN 0 AND 255),
    session    jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, edge_node)
);

-- Set when the machine's Sparkplug device (or its edge node) died: its latest values are stale from then on.
-- NULL for machines that are online or that are not Sparkplug devices (JSON gateways have no death message).
ALTER TABLE machines ADD COLUMN offline_since timestamptz;
"""
