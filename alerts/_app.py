"""The API process: the REST routes and the board in one FastAPI app, served by uvicorn until told to stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from alerts._api import router
from alerts._board import board
from alerts._cmms_api import cmms_router
from wearline.db import open_pool, require_migrated
from wearline.errors import WearlineError
from wearline.settings import Settings

__all__ = ["create_app", "serve_api"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, pool: AsyncConnectionPool | None = None) -> FastAPI:
    """The API; it opens (and closes) its own pool unless given one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = pool is None
        app.state.pool = pool or await open_pool(settings.database, name="api")
        try:
            async with app.state.pool.connection() as conn:
                await require_migrated(conn, settings.database.schema_name)
            yield
        finally:
            if own:
                await app.state.pool.close()

    app = FastAPI(
        title="Wearline maintenance API",
        version="1",
        summary="Service tickets and machine health for maintenance teams; one tenant per token.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(router)
    app.include_router(cmms_router)
    app.include_router(board)
    return app


async def serve_api(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API until ``stop`` is set; requests in flight finish (uvicorn's graceful shutdown)."""
    # Binding here, not in uvicorn, turns a taken port into one line naming the setting instead of an exit(1).
    sock = socket.socket(socket.AF_INET6 if ":" in settings.api.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.api.host, settings.api.port))
    except OSError as exc:
        sock.close()
        raise WearlineError(
            f"cannot listen on {settings.api.host}:{settings.api.port}: {exc.strerror or exc}; "
            "set api.host / api.port (WEARLINE_API__HOST, WEARLINE_API__PORT)"
        ) from exc
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    log.info("API on http://%s:%d (OpenAPI at /docs)", settings.api.host, settings.api.port)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.wait({serving, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        sock.close()
