"""Alerts: anomalies and low remaining life become deduplicated, prioritised service tickets with a lifecycle."""

from alerts._lifecycle import (
    LIVE_STATUSES,
    STATUSES,
    Evidence,
    Filed,
    TicketError,
    assign,
    comment,
    escalate_unacknowledged,
    file_evidence,
    resolve_cleared,
    set_status,
)
from alerts._tickets import (
    Ticket,
    TicketEvent,
    list_tickets,
    priority_for,
    priority_for_rul,
    process_anomalies,
    process_rul,
    ticket_history,
)
from alerts._worker import AlertsSummary, run_alerts

__all__ = [
    "LIVE_STATUSES",
    "STATUSES",
    "AlertsSummary",
    "Evidence",
    "Filed",
    "Ticket",
    "TicketError",
    "TicketEvent",
    "assign",
    "comment",
    "escalate_unacknowledged",
    "file_evidence",
    "list_tickets",
    "priority_for",
    "priority_for_rul",
    "process_anomalies",
    "process_rul",
    "resolve_cleared",
    "run_alerts",
    "set_status",
    "ticket_history",
]
