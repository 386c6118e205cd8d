"""What the alerts worker owes other systems beyond webhooks: ticket events on MQTT and work requests in CMMSs,
both drained from their outboxes each pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from alerts._cmms import Filing, file_work_requests
from alerts._ticket_mqtt import TicketPublisher
from wearline.settings import Settings

__all__ = ["Drained", "Outlets"]

log = logging.getLogger(__name__)


@dataclass
class Drained:
    published: int = 0
    publish_failed: int = 0
    filings: list[Filing] = field(default_factory=list)


class Outlets:
    """The MQTT publisher and the CMMS filer of one alerts worker; ``aclose`` when the worker ends."""

    def __init__(self, settings: Settings, *, mqtt_retry_s: float = 1.0) -> None:
        self._settings = settings
        self.publisher = TicketPublisher(settings.mqtt, settings.topic_prefix, retry_s=mqtt_retry_s)
        self._client = httpx.AsyncClient(follow_redirects=False)

    async def drain(self, conn: psycopg.AsyncConnection[Any]) -> Drained:
        """Publish pending ticket events and file due work requests; returns what happened, for the metrics."""
        failed = self.publisher.failed
        published = await self.publisher.drain(conn)
        filings = await file_work_requests(conn, self._client, self._settings.alerts)
        for f in filings:
            if f.status == "filed":
                log.info("CMMS %s: work request %s filed (request row %d)", f.adapter, f.detail, f.request_id)
            elif f.status == "retry":
                log.warning("CMMS %s: filing failed, will retry: %s", f.adapter, f.detail)
            else:
                log.error("CMMS %s: gave up on request row %d: %s", f.adapter, f.request_id, f.detail)
        return Drained(published, self.publisher.failed - failed, filings)

    async def aclose(self) -> None:
        await self.publisher.aclose()
        await self._client.aclose()
