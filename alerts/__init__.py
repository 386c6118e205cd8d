"""Alerts: anomalies and low remaining life become deduplicated, prioritised service tickets with a lifecycle."""

from alerts._api import create_app, serve_api
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
    TicketQuery,
    find_tickets,
    list_tickets,
    priority_for,
    priority_for_rul,
    process_anomalies,
    process_rul,
    ticket_history,
)
from alerts._tokens import Scope, TokenError, TokenInfo, create_token, list_tokens, revoke_token
from alerts._worker import AlertsSummary, run_alerts

__all__ = [
    "LIVE_STATUSES",
    "STATUSES",
    "AlertsSummary",
    "Evidence",
    "Filed",
    "Scope",
    "Ticket",
    "TicketError",
    "TicketEvent",
    "TicketQuery",
    "TokenError",
    "TokenInfo",
    "assign",
    "comment",
    "create_app",
    "create_token",
    "escalate_unacknowledged",
    "file_evidence",
    "find_tickets",
    "list_tickets",
    "list_tokens",
    "priority_for",
    "priority_for_rul",
    "process_anomalies",
    "process_rul",
    "resolve_cleared",
    "revoke_token",
    "run_alerts",
    "serve_api",
    "set_status",
    "ticket_history",
]
