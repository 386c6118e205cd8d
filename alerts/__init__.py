"""Alerts: anomalies and low remaining life become deduplicated, prioritised service tickets."""

from alerts._tickets import LIVE_STATUSES, Ticket, list_tickets, priority_for, process_anomalies
from alerts._worker import AlertsSummary, run_alerts

__all__ = [
    "LIVE_STATUSES",
    "AlertsSummary",
    "Ticket",
    "list_tickets",
    "priority_for",
    "process_anomalies",
    "run_alerts",
]
