"""An example Alertmanager webhook receiver: prints one JSON line per alert (status, name, severity, summary,
runbook) and answers 200. Standard library only, so it runs in Wearline's image or any Python 3.11+.

    python receiver.py [PORT]      # default 9095; POST Alertmanager's webhook payload (version 4) to any path
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def lines(payload: dict[str, Any]) -> list[str]:
    """One JSON line per alert of an Alertmanager webhook payload."""
    out = []
    for alert in payload.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        out.append(
            json.dumps(
                {
                    "status": alert.get("status"),
                    "alert": labels.get("alertname"),
                    "severity": labels.get("severity"),
                    "labels": labels,
                    "summary": notes.get("summary"),
                    "runbook": notes.get("runbook_url"),
                    "starts_at": alert.get("startsAt"),
                },
                sort_keys=True,
            )
        )
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_error(400, "the body is not JSON")
            return
        for line in lines(payload):
            print(line, flush=True)  # noqa: T201 (the receiver's output is its point)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """The alerts are the log; requests are not."""


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9095
    # In a container the Alertmanager is another host.
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104
