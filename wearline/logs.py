"""Logging set up once, at the entry point: plain text for a terminal, one JSON object a line for collectors."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from wearline.settings import LogSettings

__all__ = ["setup_logging"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(settings: LogSettings) -> None:
    """Route every logger to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # paho logs every packet at DEBUG; keep it quiet unless asked for explicitly.
    logging.getLogger("paho").setLevel(max(logging.INFO, root.level))
