"""Work requests in a maintenance system (CMMS): filed for every new ticket, their status synced back.

An adapter (:class:`CmmsAdapter`) knows one kind of CMMS: how to create a work request from a work order, and how
to read the status the CMMS sends back. One generic adapter ships, ``rest``: it POSTs the work order as JSON to a
configured URL, signed like a webhook, with ``Idempotency-Key: <the ticket's external_id>`` (a retry never files a
second request in a CMMS that honours the key), and takes the new request's id from a field of the JSON answer.

Filing is a transactional outbox: the event that opens a ticket writes one ``cmms_requests`` row per adapter of the
tenant in its own transaction (migration 13); the alerts worker files due rows one per transaction (SKIP LOCKED),
retrying with the webhooks' backoff and giving up after ``alerts.webhook_max_attempts``. The CMMS's status comes back
through ``POST /api/v1/cmms/{adapter}/status`` (:func:`apply_status`): its status names map to ticket statuses, and
each change is a ticket event whose actor is the CMMS.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx
import orjson
import psycopg
from psycopg.rows import class_row

from alerts._lifecycle import LIVE_STATUSES, STATUSES, Status, set_status
from alerts._tickets import ticket_history, ticket_json
from alerts._webhooks import _backoff, sign
from wearline.errors import WearlineError
from wearline.settings import AlertsSettings

__all__ = [
    "DEFAULT_STATUSES",
    "CmmsAdapter",
    "CmmsAdapterInfo",
    "CmmsError",
    "Filing",
    "RestAdapter",
    "StatusApplied",
    "StatusReport",
    "add_cmms_adapter",
    "apply_status",
    "file_work_requests",
    "list_cmms_adapters",
    "remove_cmms_adapter",
]

# What a generic CMMS calls its work request's stages, and the ticket status each means.
DEFAULT_STATUSES: dict[str, Status] = {
    "requested": "open",
    "accepted": "acknowledged",
    "approved": "acknowledged",
    "assigned": "acknowledged",
    "scheduled": "acknowledged",
    "in_progress": "in_progress",
    "started": "in_progress",
    "completed": "resolved",
    "done": "resolved",
    "closed": "closed",
}


class CmmsError(WearlineError):
    """A CMMS command or status that cannot be done: an unknown tenant, adapter or status, a bad URL or mapping."""


class FilingError(WearlineError):
    """A work request the CMMS did not take (yet): retried."""


@dataclass(frozen=True)
class StatusReport:
    """What a CMMS says of one of its work requests."""

    work_request_id: str
    status: str
    note: str = ""


class CmmsAdapter(Protocol):
    """One kind of CMMS."""

    async def create_work_request(self, client: httpx.AsyncClient, order: dict[str, Any], *, key: str) -> str:
        """File ``order`` (a work order, :func:`alerts.ticket_json`'s shape) idempotently on ``key``; returns the
        CMMS's id of the work request, or raises :class:`FilingError` (the filing is retried)."""
        ...

    def receive_status(self, body: Mapping[str, Any]) -> StatusReport:
        """Read a status the CMMS sent back; :class:`CmmsError` naming what is wrong."""
        ...


class RestAdapter:
    """The generic REST CMMS: POST JSON, answer JSON with the new request's id in ``id_field``."""

    def __init__(self, *, url: str, secret: str, id_field: str = "id", timeout_s: float = 10.0) -> None:
        self.url, self.secret, self.id_field, self.timeout_s = url, secret, id_field, timeout_s

    async def create_work_request(self, client: httpx.AsyncClient, order: dict[str, Any], *, key: str) -> str:
        body = orjson.dumps({"work_order": order})
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Wearline-Signature": sign(self.secret, int(time.time()), body),
            "User-Agent": "wearline-cmms",
        }
        try:
            response = await client.post(self.url, content=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise FilingError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        if not response.is_success:
            raise FilingError(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            found = orjson.loads(response.content).get(self.id_field)
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise FilingError(f"HTTP {response.status_code} without a JSON object: {response.text[:200]}") from exc
        if not isinstance(found, str | int) or isinstance(found, bool) or str(found) == "":
            raise FilingError(f"HTTP {response.status_code} without a work request id in {self.id_field!r}")
        return str(found)

    def receive_status(self, body: Mapping[str, Any]) -> StatusReport:
        rid, status, note = body.get("work_request_id"), body.get("status"), body.get("note", "")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            raise CmmsError("work_request_id is required: the id the CMMS answered the creation with")
        if not isinstance(status, str) or not status:
            raise CmmsError("status is required: the CMMS's name of the work request's status")
        if not isinstance(note, str):
            raise CmmsError("note must be text")
        return StatusReport(str(rid), status, note)


ADAPTER_KINDS = ("rest",)


def _adapter(kind: str, url: str, secret: str, id_field: str, settings: AlertsSettings) -> CmmsAdapter:
    if kind == "rest":
        return RestAdapter(url=url, secret=secret, id_field=id_field, timeout_s=settings.webhook_timeout_s)
    raise CmmsError(f"no CMMS adapter kind {kind!r} (known: {', '.join(ADAPTER_KINDS)})")


@dataclass
class CmmsAdapterInfo:
    adapter_id: int
    tenant: str
    name: str
    kind: str
    url: str
    statuses: dict[str, str]
    created_at: datetime
    removed_at: datetime | None
    pending: int
    filed: int
    failed: int


def check_statuses(statuses: Mapping[str, Any]) -> dict[str, Status]:
    """A CMMS status map, each value a ticket status."""
    if not statuses:
        raise CmmsError("the status map is empty: map at least one CMMS status to a ticket status")
    for k, v in statuses.items():
        if not isinstance(k, str) or not k or v not in STATUSES:
            raise CmmsError(f"status map: {k!r} -> {v!r}: each CMMS status must map to one of {', '.join(STATUSES)}")
    return dict(statuses)


async def add_cmms_adapter(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str,
    name: str,
    url: str,
    secret: str,
    kind: str = "rest",
    statuses: Mapping[str, Any] | None = None,
    id_field: str = "id",
) -> int:
    """A CMMS for ``tenant``: every ticket opened from now on gets a work request there. Returns its id."""
    if kind not in ADAPTER_KINDS:
        raise CmmsError(f"no CMMS adapter kind {kind!r} (known: {', '.join(ADAPTER_KINDS)})")
    if not url.startswith(("http://", "https://")):
        raise CmmsError(f"CMMS URL must start with http:// or https://: {url!r}")
    mapping = check_statuses(DEFAULT_STATUSES if statuses is None else statuses)
    cur = await conn.execute("SELECT tenant_id FROM tenants WHERE name = %s", [tenant])
    row = await cur.fetchone()
    if row is None:
        raise CmmsError(f"no tenant {tenant!r}")
    try:
        cur = await conn.execute(
            """INSERT INTO cmms_adapters (tenant_id, name, kind, url, secret, statuses, id_field)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING adapter_id""",
            [row[0], name, kind, url, secret, orjson.dumps(mapping).decode(), id_field],
        )
    except psycopg.errors.UniqueViolation as exc:
        raise CmmsError(f"tenant {tenant} already has a CMMS adapter named {name!r}") from exc
    except psycopg.errors.CheckViolation as exc:
        raise CmmsError(f"CMMS adapter name {name!r} is not 1-64 of [A-Za-z0-9_.-] (it is part of a URL)") from exc
    created = await cur.fetchone()
    assert created is not None
    return int(created[0])


async def remove_cmms_adapter(conn: psycopg.AsyncConnection[Any], adapter_id: int) -> None:
    """No new work requests for this CMMS; status it sends back is still taken."""
    cur = await conn.execute(
        "UPDATE cmms_adapters SET removed_at = coalesce(removed_at, now()) WHERE adapter_id = %s RETURNING 1",
        [adapter_id],
    )
    if await cur.fetchone() is None:
        raise CmmsError(f"no CMMS adapter #{adapter_id}")


async def list_cmms_adapters(conn: psycopg.AsyncConnection[Any]) -> list[CmmsAdapterInfo]:
    cur = conn.cursor(row_factory=class_row(CmmsAdapterInfo))
    await cur.execute(
        """SELECT a.adapter_id, t.name AS tenant, a.name, a.kind, a.url, a.statuses, a.created_at, a.removed_at,
                  count(r.request_id) FILTER (WHERE r.filed_at IS NULL AND r.failed_at IS NULL) AS pending,
                  count(r.filed_at) AS filed, count(r.failed_at) AS failed
           FROM cmms_adapters a JOIN tenants t USING (tenant_id) LEFT JOIN cmms_requests r USING (adapter_id)
           GROUP BY a.adapter_id, t.name ORDER BY a.adapter_id"""
    )
    return await cur.fetchall()


@dataclass(frozen=True)
class Filing:
    adapter: str
    request_id: int
    status: Literal["filed", "retry", "failed"]
    detail: str


async def file_work_requests(
    conn: psycopg.AsyncConnection[Any],
    client: httpx.AsyncClient,
    settings: AlertsSettings,
    *,
    now: datetime | None = None,
    limit: int = 100,
) -> list[Filing]:
    """File up to ``limit`` due work requests, one transaction each; returns what happened to each."""
    done: list[Filing] = []
    for _ in range(limit):
        async with conn.transaction():
            cur = await conn.execute(
                """SELECT r.request_id, r.attempts, r.ticket_id, a.name, a.kind, a.url, a.secret, a.id_field,
                          coalesce(%(now)s, now())
                   FROM cmms_requests r JOIN cmms_adapters a USING (adapter_id)
                   WHERE r.filed_at IS NULL AND r.failed_at IS NULL AND r.next_attempt_at <= coalesce(%(now)s, now())
                   ORDER BY r.next_attempt_at, r.request_id
                   LIMIT 1
                   FOR UPDATE OF r SKIP LOCKED""",
                {"now": now},
            )
            row = await cur.fetchone()
            if row is None:
                break
            request_id, attempts, ticket_id, name, kind, url, secret, id_field, at = row
            ticket, _ = await ticket_history(conn, ticket_id)
            adapter = _adapter(kind, url, secret, id_field, settings)
            try:
                work_request_id = await adapter.create_work_request(client, ticket_json(ticket), key=ticket.external_id)
            except FilingError as exc:
                error = str(exc)
                give_up = attempts + 1 >= settings.webhook_max_attempts
                await conn.execute(
                    """UPDATE cmms_requests SET attempts = attempts + 1, last_error = %s,
                              failed_at = CASE WHEN %s THEN %s END, next_attempt_at = %s
                       WHERE request_id = %s""",
                    [error, give_up, at, at + _backoff(attempts + 1), request_id],
                )
                done.append(Filing(name, request_id, "failed" if give_up else "retry", error))
                continue
            await conn.execute(
                """UPDATE cmms_requests SET filed_at = %s, attempts = attempts + 1, work_request_id = %s,
                          last_error = NULL
                   WHERE request_id = %s""",
                [at, work_request_id, request_id],
            )
            done.append(Filing(name, request_id, "filed", work_request_id))
    return done


@dataclass(frozen=True)
class StatusApplied:
    ticket_id: int
    cmms_status: str
    status: str
    changes: list[str]


class UnknownWorkRequest(CmmsError):
    """A status for an adapter or work request the tenant does not have."""


async def apply_status(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant_id: int,
    adapter: str,
    body: Mapping[str, Any],
    actor: str,
    now: datetime,
) -> StatusApplied:
    """Move the ticket behind one of ``adapter``'s work requests to the status the CMMS reports. Call inside a
    transaction. A status the ticket already has changes nothing (a CMMS may send it twice); a CMMS's "closed" for a
    live ticket resolves it first (one event each). :class:`UnknownWorkRequest`, :class:`CmmsError` or
    :class:`alerts.TicketError` (a transition the ticket's status does not allow) say what is wrong."""
    cur = await conn.execute(
        "SELECT adapter_id, statuses FROM cmms_adapters WHERE tenant_id = %s AND name = %s", [tenant_id, adapter]
    )
    found = await cur.fetchone()
    if found is None:
        raise UnknownWorkRequest(f"no CMMS adapter {adapter!r}")
    adapter_id, statuses = found
    report = RestAdapter(url="", secret="").receive_status(body)
    to = statuses.get(report.status)
    if to is None:
        raise CmmsError(f"CMMS status {report.status!r} is not mapped for {adapter}; known: {', '.join(statuses)}")
    cur = await conn.execute(
        """SELECT r.request_id, r.ticket_id, k.status FROM cmms_requests r JOIN tickets k USING (ticket_id)
           WHERE r.adapter_id = %s AND r.work_request_id = %s FOR UPDATE OF r""",
        [adapter_id, report.work_request_id],
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownWorkRequest(f"no work request {report.work_request_id!r} filed with {adapter}")
    request_id, ticket_id, status = row
    why = f"{report.status} in {adapter} (work request {report.work_request_id})"
    if report.note:
        why += f": {report.note}"
    changes: list[str] = []
    path: list[Status] = [to]
    if to == "closed" and status in LIVE_STATUSES:
        path = ["resolved", "closed"]
    elif to == "open" and status in LIVE_STATUSES:
        path = []  # still to be done, as the ticket says; "open" for a resolved ticket reopens it
    for step in path:
        if step == status:
            continue
        await set_status(conn, ticket_id, step, actor=actor, why=why, now=now)
        changes.append(f"{status} -> {step}")
        status = step
    await conn.execute(
        "UPDATE cmms_requests SET cmms_status = %s, cmms_status_at = %s WHERE request_id = %s",
        [report.status, now, request_id],
    )
    return StatusApplied(ticket_id, report.status, status, changes)
