"""The CMMS's way back in: ``POST /api/v1/cmms/{adapter}/status`` moves the ticket behind a work request.

The CMMS authenticates with a read-write API token of the tenant (``wearline tokens create --write``), so an
adapter of another tenant, and its work requests, are "not found" exactly like another tenant's tickets.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from alerts._api import DbConn, Text, Writer, actor
from alerts._cmms import CmmsError, UnknownWorkRequest, apply_status
from alerts._lifecycle import TicketError

__all__ = ["cmms_router"]

cmms_router = APIRouter()


class CmmsStatusIn(BaseModel):
    """What the CMMS says of one of its work requests."""

    model_config = {"extra": "forbid"}

    work_request_id: Text = Field(min_length=1, max_length=200, description="The id the CMMS answered creation with.")
    status: Text = Field(min_length=1, max_length=100, description="The CMMS's name of the status (its status map).")
    note: Text = Field(default="", max_length=2000, description="For the ticket's history.")


class CmmsStatusOut(BaseModel):
    ticket_id: int
    cmms_status: str
    status: str = Field(description="The ticket's status now.")
    changes: list[str] = Field(description="Transitions made, as 'from -> to'; empty when it already had the status.")


AdapterName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


@cmms_router.post("/api/v1/cmms/{adapter}/status", response_model=CmmsStatusOut, tags=["cmms"])
async def cmms_status(conn: DbConn, who: Writer, adapter: AdapterName, body: CmmsStatusIn) -> CmmsStatusOut:
    """Sync a work request's status back: its ticket moves to the status the adapter's map names, each change an
    event whose actor is the CMMS (404 for an unknown adapter or work request, 409 for a transition the ticket's
    status does not allow, 422 for a status the map does not name)."""
    try:
        async with conn.transaction():
            cur = await conn.execute("SELECT now()")
            row = await cur.fetchone()
            assert row is not None
            done = await apply_status(
                conn,
                tenant_id=who.tenant_id,
                adapter=adapter,
                body=body.model_dump(),
                actor=actor(who, f"cmms:{adapter}"),
                now=row[0],
            )
    except UnknownWorkRequest as exc:
        raise HTTPException(404, str(exc)) from exc
    except CmmsError as exc:
        raise HTTPException(422, str(exc)) from exc
    except TicketError as exc:
        raise HTTPException(409, str(exc)) from exc
    return CmmsStatusOut(**vars(done))
