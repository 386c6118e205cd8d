"""The REST API for maintenance teams: tickets (list, detail, lifecycle actions) and machines' health, one tenant
per token. FastAPI serves its OpenAPI document at /openapi.json and the interactive docs at /docs.

Every request runs its queries on a pooled connection; every answer to a bad request is a 4xx whose ``detail``
names the problem. A ticket of another tenant is "not found", never "forbidden": a token must not learn which
ticket numbers exist elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from alerts._lifecycle import LIVE_STATUSES, Status, TicketError, assign, comment, set_status
from alerts._tickets import TicketQuery, find_tickets, ticket_history, ticket_json
from alerts._tokens import Scope, authenticate

__all__ = ["router"]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]


def _storable(v: str) -> str:
    if "\x00" in v:
        raise ValueError("contains a NUL character (\\x00), which PostgreSQL text cannot hold")
    return v


# Every free-text input: a NUL byte would otherwise reach PostgreSQL and fail there, as a 500.
Text = Annotated[str, AfterValidator(_storable)]


class TicketOut(BaseModel):
    """A service ticket in the shape maintenance systems file work orders in."""

    id: int
    external_id: str = Field(description="Stable key for idempotent filing in another system.")
    title: str
    tenant: str
    site: str
    line: str
    machine: str | None = Field(description="None: the ticket is about the line's gateway (silence, dead letters).")
    failure_mode: str = Field(description="With the machine, what deduplicates tickets: one live ticket each.")
    type: Literal["predictive", "corrective"]
    priority: int = Field(ge=1, le=4, description="1 urgent .. 4 low")
    status: Literal["open", "acknowledged", "in_progress", "resolved", "closed"]
    team: str | None
    assignee: str | None
    requested_at: datetime = Field(description="When the ticket was opened.")
    due_at: datetime | None = Field(description="Predictive tickets: the pessimistic end of the remaining life.")
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    escalation_level: int
    reopened: int
    evidence: dict[str, Any] = Field(description="The newest evidence: scores and sensors, or the RUL interval.")


class EventOut(BaseModel):
    at: datetime
    kind: str
    actor: str
    why: str
    data: dict[str, Any]


class TicketDetail(TicketOut):
    events: list[EventOut]


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Action(BaseModel):
    why: Text = Field(default="", max_length=2000, description="For the ticket's history.")
    by: Text | None = Field(default=None, max_length=200, description="Who, if not the token's name.")


class Assignment(Action):
    team: Text | None = Field(default=None, max_length=200)
    assignee: Text | None = Field(default=None, max_length=200)


class Comment(BaseModel):
    text: Text = Field(min_length=1, max_length=10_000)
    by: Text | None = Field(default=None, max_length=200)


class RulOut(BaseModel):
    at: datetime
    hours: float
    lower_hours: float
    upper_hours: float


class MachineHealth(BaseModel):
    id: int
    site: str
    line: str
    machine: str
    scored_through: datetime | None = Field(description="Analytics has scored the machine's readings up to here.")
    last_anomaly_at: datetime | None
    last_anomaly_score: float | None
    rul: RulOut | None
    live_tickets: int
    top_priority: int | None


def _cursor(t: Any) -> str:
    raw = f"{t.priority}|{t.opened_at.isoformat()}|{t.ticket_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(cursor: str) -> tuple[int, datetime, int]:
    try:
        p, at, tid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return int(p), datetime.fromisoformat(at), int(tid)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "cursor is not one this API handed out (use next_cursor as it is)") from exc


_bearer = HTTPBearer(auto_error=False, description="An API token from `wearline tokens create`.")
router = APIRouter()


async def connection(request: Request) -> AsyncIterator[Conn]:
    try:
        async with request.app.state.pool.connection() as conn:
            try:
                yield conn
            finally:
                if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    # The next request on this pooled connection may be another tenant's: it starts as none.
                    await conn.execute("SELECT set_config('wearline.tenant_id', '', false)")
    except psycopg.OperationalError as exc:
        raise HTTPException(503, "the database is unavailable; retry shortly") from exc


# scope="function": the pooled connection (and with it the transaction a handler left open) is given back, and so
# committed, before the response is sent, not after: the board follows a redirect at once and API clients read
# right after they write (with the default, request scope, the board once showed a ticket it had just
# acknowledged still open).
DbConn = Annotated[Conn, Depends(connection, scope="function")]


async def scope(conn: DbConn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Scope:
    if credentials is None:
        raise HTTPException(
            401, "an API token is required: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
        )
    found = await authenticate(conn, credentials.credentials)
    if found is None:
        raise HTTPException(401, "unknown or revoked API token", {"WWW-Authenticate": "Bearer"})
    return found


Who = Annotated[Scope, Depends(scope)]


async def writer(who: Who) -> Scope:
    if not who.can_write:
        raise HTTPException(403, f"token {who.name!r} is read-only; changing tickets needs a read-write token")
    return who


Writer = Annotated[Scope, Depends(writer)]
TicketId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class TicketFilters(BaseModel):
    model_config = {"extra": "forbid"}

    status: list[Literal["open", "acknowledged", "in_progress", "resolved", "closed"]] = Field(
        default=[], description="Default: the live ones (open, acknowledged, in_progress)."
    )
    priority: list[Annotated[int, Field(ge=1, le=4)]] = []
    site: Text | None = None
    machine: Text | None = None
    since: AwareDatetime | None = Field(default=None, description="Last evidence at or after (ISO 8601, with zone).")
    until: AwareDatetime | None = Field(default=None, description="First evidence before (ISO 8601, with zone).")
    limit: int | None = Field(default=None, ge=1, le=1000, description="Default: api.page_size.")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")


async def owned(conn: Conn, who: Scope, ticket_id: int) -> None:
    cur = await conn.execute(
        "SELECT 1 FROM tickets WHERE ticket_id = %s AND tenant_id = %s", [ticket_id, who.tenant_id]
    )
    if await cur.fetchone() is None:
        raise HTTPException(404, f"no ticket #{ticket_id}")


async def detail(conn: Conn, ticket_id: int) -> TicketDetail:
    ticket, events = await ticket_history(conn, ticket_id)
    return TicketDetail(**ticket_json(ticket), events=[EventOut(**vars(e)) for e in events])


@router.get("/api/v1/tickets", response_model=TicketPage, tags=["tickets"])
async def list_tickets(request: Request, conn: DbConn, who: Who, q: Annotated[TicketFilters, Query()]) -> TicketPage:
    """Tickets of the token's tenant, most urgent first, a page at a time."""
    size = q.limit or request.app.state.settings.api.page_size
    found = await find_tickets(
        conn,
        TicketQuery(
            tenant_id=who.tenant_id,
            statuses=tuple(q.status) or LIVE_STATUSES,
            priorities=tuple(q.priority),
            site=q.site,
            machine=q.machine,
            since=q.since,
            until=q.until,
            after=_parse_cursor(q.cursor) if q.cursor else None,
            limit=size + 1,
        ),
    )
    page = found[:size]
    more = len(found) > size
    return TicketPage(
        items=[TicketOut(**ticket_json(t)) for t in page], next_cursor=_cursor(page[-1]) if more else None
    )


@router.get("/api/v1/tickets/{ticket_id}", response_model=TicketDetail, tags=["tickets"])
async def get_ticket(conn: DbConn, who: Who, ticket_id: TicketId) -> TicketDetail:
    """One ticket with its whole history (who, when, why)."""
    await owned(conn, who, ticket_id)
    return await detail(conn, ticket_id)


async def act(conn: Conn, who: Scope, ticket_id: int, change: Any) -> TicketDetail:
    async with conn.transaction():
        await owned(conn, who, ticket_id)
        cur = await conn.execute("SELECT now()")
        row = await cur.fetchone()
        assert row is not None
        try:
            await change(row[0])
        except TicketError as exc:
            raise HTTPException(409, str(exc)) from exc
    return await detail(conn, ticket_id)


def actor(who: Scope, by: str | None) -> str:
    # The person if the client names one, always with the token that vouched for them.
    return f"{by} via {who.name}" if by else who.name


TRANSITIONS: dict[str, Status] = {
    "acknowledge": "acknowledged",
    "start": "in_progress",
    "resolve": "resolved",
    "close": "closed",
    "reopen": "open",
}
for verb, to in TRANSITIONS.items():

    def route(to: Any = to, verb: str = verb) -> None:
        async def change_status(
            conn: DbConn, who: Writer, ticket_id: TicketId, body: Action | None = None
        ) -> TicketDetail:
            body = body or Action()
            return await act(
                conn,
                who,
                ticket_id,
                lambda now: set_status(conn, ticket_id, to, actor=actor(who, body.by), why=body.why, now=now),
            )

        change_status.__name__ = f"{verb}_ticket"
        change_status.__doc__ = f"Move the ticket to {to.replace('_', ' ')} (409 when its status does not allow it)."
        router.post(f"/api/v1/tickets/{{ticket_id}}/{verb}", response_model=TicketDetail, tags=["tickets"])(
            change_status
        )

    route()


@router.post("/api/v1/tickets/{ticket_id}/assign", response_model=TicketDetail, tags=["tickets"])
async def assign_ticket(conn: DbConn, who: Writer, ticket_id: TicketId, body: Assignment) -> TicketDetail:
    """Give the ticket to a team and/or a person."""
    if body.team is None and body.assignee is None:
        raise HTTPException(400, "assign needs team, assignee or both")
    return await act(
        conn,
        who,
        ticket_id,
        lambda now: assign(
            conn,
            ticket_id,
            team=body.team,
            assignee=body.assignee,
            actor=actor(who, body.by),
            why=body.why,
            now=now,
        ),
    )


@router.post("/api/v1/tickets/{ticket_id}/comments", response_model=TicketDetail, tags=["tickets"])
async def comment_ticket(conn: DbConn, who: Writer, ticket_id: TicketId, body: Comment) -> TicketDetail:
    """Add a note to the ticket's history."""
    return await act(
        conn, who, ticket_id, lambda now: comment(conn, ticket_id, body.text, actor=actor(who, body.by), now=now)
    )


@router.get("/api/v1/machines", response_model=list[MachineHealth], tags=["machines"])
async def machines(conn: DbConn, who: Who, site: Annotated[Text | None, Query()] = None) -> list[MachineHealth]:
    """The tenant's machines with their latest health: analytics' progress, the last anomaly, the newest
    remaining-life estimate with its interval, and their live tickets."""
    cur = await conn.execute(
        """SELECT m.machine_id, s.name, l.name, m.name,
                  (SELECT max(w.last_time) FROM analytics_watermarks w WHERE w.machine_id = m.machine_id),
                  a.time, a.score, r.time, r.rul_hours, r.lower_hours, r.upper_hours, k.n, k.top
           FROM machines m
           JOIN lines l USING (line_id) JOIN sites s USING (site_id)
           LEFT JOIN LATERAL (SELECT time, score FROM anomalies WHERE machine_id = m.machine_id
                              ORDER BY time DESC LIMIT 1) a ON true
           LEFT JOIN LATERAL (SELECT time, rul_hours, lower_hours, upper_hours FROM rul_estimates
                              WHERE machine_id = m.machine_id ORDER BY time DESC LIMIT 1) r ON true
           LEFT JOIN LATERAL (SELECT count(*) AS n, min(priority) AS top FROM tickets
                              WHERE machine_id = m.machine_id
                                AND status IN ('open', 'acknowledged', 'in_progress')) k ON true
           WHERE m.tenant_id = %s AND (%s::text IS NULL OR s.name = %s)
           ORDER BY s.name, l.name, m.name""",
        [who.tenant_id, site, site],
    )
    out = []
    for mid, s, ln, name, scored, a_at, a_score, r_at, rul, lo, hi, n, top in await cur.fetchall():
        out.append(
            MachineHealth(
                id=mid,
                site=s,
                line=ln,
                machine=name,
                scored_through=scored,
                last_anomaly_at=a_at,
                last_anomaly_score=a_score,
                rul=RulOut(at=r_at, hours=rul, lower_hours=lo, upper_hours=hi) if r_at else None,
                live_tickets=n,
                top_priority=top,
            )
        )
    return out


@router.get("/healthz", tags=["operations"], include_in_schema=False)
async def healthz(conn: DbConn) -> dict[str, str]:
    await conn.execute("SELECT 1")
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], include_in_schema=False)
async def readyz(conn: DbConn) -> dict[str, str]:
    """Ready: the database answers through the pool (a request that cannot get a connection fails as 503). The
    metrics port serves the process's own /healthz and /readyz too (wearline.health)."""
    await conn.execute("SELECT 1")
    return {"status": "ready"}
