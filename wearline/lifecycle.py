"""How a long-running Wearline process lives and stops.

``run_service`` serves metrics, runs the stage's coroutine, and on SIGTERM or SIGINT sets a stop event that the
stage watches: the stage stops taking new work, finishes what it holds within the grace period, and returns. If it
has not returned by then it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from wearline.health import PROCESS_HEALTH, Health, MetricsPortError, beat_while, serve_health

__all__ = ["MetricsPortError", "run_service", "serve_metrics"]

log = logging.getLogger(__name__)


def serve_metrics(
    port: int,
    registry: CollectorRegistry = REGISTRY,
    *,
    setting: str = "metrics_port",
    host: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes from another host; metrics_host narrows it
    health: Health = PROCESS_HEALTH,
) -> None:
    """Expose ``registry`` on ``http://host:port/metrics`` with ``/healthz`` and ``/readyz``; port 0 turns it off.

    ``setting`` names the setting the port came from (``ingest.metrics_port``), for the message when it is taken.
    """
    serve_health(host, port, registry=registry, health=health, setting=setting)


async def run_service(
    name: str,
    main: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    grace_s: float,
    stop: asyncio.Event | None = None,
    health: Health = PROCESS_HEALTH,
) -> None:
    """Run ``main(stop)`` until it returns; signals set ``stop``, and ``grace_s`` later the task is cancelled.

    While it runs, the loop ticks ``health`` every second: ``/healthz`` fails when the loop stalls."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    task = asyncio.create_task(main(stop), name=name)
    stop_wait = asyncio.create_task(stop.wait())
    beating = asyncio.create_task(beat_while(health, stop), name=f"{name}-heartbeat")
    try:
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("%s: stop requested, finishing in-flight work (grace %.1f s)", name, grace_s)
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                log.warning("%s: grace period of %.1f s over, cancelling", name, grace_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
        await task  # re-raises what the stage raised
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    finally:
        stop_wait.cancel()
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        for sig in installed:
            loop.remove_signal_handler(sig)
