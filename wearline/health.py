"""What a long-running process says about itself: ``/healthz`` (alive), ``/readyz`` (connected and keeping up), and
``/metrics``, on one HTTP port.

A :class:`Health` holds named readiness checks. A stage sets a check's state where it learns it (``database`` after
a failed or a successful write, ``broker`` on (re)subscribing) or registers a function asked at each request
(``keeping_up``: is work waiting longer than it should). A check declared and never set reads as not ready: a
process that has not reached its database yet is not ready, which is the point.

Liveness is the event loop's own heartbeat: the HTTP server runs in a thread of its own and would answer even with
the loop wedged, so ``/healthz`` fails once the loop has not ticked for ``stall_s``.

The same states are metrics, so that Prometheus sees a stage waiting for its database from its first scrape:
``wearline_ready`` and ``wearline_readiness_check{check}`` (1 passing, 0 failing). Beside them every process serves
``wearline_build_info``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wearline.errors import WearlineError
from wearline.gauges import BUILD_INFO

__all__ = [
    "PROCESS_HEALTH",
    "Health",
    "HealthServer",
    "MetricsPortError",
    "PassClock",
    "beat_while",
    "serve_health",
]

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
"""A check asked at request time: (passing, why not)."""

STALL_S = 120.0
"""How long the event loop may go without a tick before ``/healthz`` fails. Generous: an analytics pass over many
machines holds the loop in numpy for seconds at a time, and a restart costs more than a slow pass."""


class MetricsPortError(WearlineError, OSError):
    """The metrics and health endpoint could not bind its address."""


class Health(Collector):
    """Readiness checks and the loop's heartbeat of one process; also a Prometheus collector of both."""

    def __init__(self, *, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[bool, str]] = {}
        self._probes: dict[str, Probe] = {}
        self._stall_s = stall_s
        self._clock = clock
        self._beat = clock()

    def declare(self, *names: str) -> None:
        """Checks this process must pass before it is ready; each reads ``starting`` until set."""
        with self._lock:
            for name in names:
                self._states.setdefault(name, (False, "starting"))

    def set(self, name: str, ok: bool, why: str = "") -> None:
        """Record a check's state; ``why`` says what is wrong when it fails (one line, shown by ``/readyz``)."""
        with self._lock:
            self._states[name] = (ok, "" if ok else (" ".join(why.split()) or "failing"))

    def probe(self, name: str, fn: Probe) -> None:
        """Ask ``fn`` for the check ``name`` at every request (it runs in the HTTP thread: read state, no I/O)."""
        with self._lock:
            self._probes[name] = fn

    def beat(self) -> None:
        """The event loop is alive (called every second by :func:`beat_while`)."""
        self._beat = self._clock()

    def alive(self) -> tuple[bool, str]:
        stalled = self._clock() - self._beat
        if stalled > self._stall_s:
            return False, f"event loop stalled for {stalled:.0f} s"
        return True, ""

    def checks(self) -> dict[str, tuple[bool, str]]:
        """Every check's (passing, why not), the probes asked now."""
        with self._lock:
            states = dict(self._states)
            probes = dict(self._probes)
        for name, fn in probes.items():
            try:
                states[name] = fn()
            except Exception as exc:  # noqa: BLE001 (a broken probe is a failing check, not a 500)
                states[name] = (False, f"probe failed: {exc!r}")
        alive, why = self.alive()
        states["alive"] = (alive, why)
        return states

    def ready(self) -> tuple[bool, dict[str, tuple[bool, str]]]:
        checks = self.checks()
        return all(ok for ok, _ in checks.values()), checks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready, checks = self.ready()
        yield GaugeMetricFamily("wearline_ready", "1 while /readyz answers 200: every readiness check passes.", ready)
        family = GaugeMetricFamily(
            "wearline_readiness_check",
            "1 while the named readiness check passes (database, broker, keeping_up, alive), 0 while it fails.",
            labels=["check"],
        )
        for name, (ok, _) in sorted(checks.items()):
            family.add_metric([name], 1.0 if ok else 0.0)
        yield family


class PassClock:
    """The ``keeping_up`` check of a stage that works in passes: failing once no pass has ended for ``limit_s``."""

    def __init__(self, health: Health, limit_s: float, *, name: str = "keeping_up") -> None:
        self._last = time.monotonic()
        self._limit_s = limit_s
        health.declare(name)
        health.probe(name, self._check)

    def passed(self) -> None:
        """A pass ended (it did its work, or found none)."""
        self._last = time.monotonic()

    def _check(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._last
        return idle < self._limit_s, f"no pass completed for {idle:.0f} s (limit {self._limit_s:.0f} s)"


PROCESS_HEALTH = Health()
"""The health of this process, as ``REGISTRY`` is its metrics: stages report to it unless given their own."""


async def beat_while(health: Health, stop: asyncio.Event) -> None:
    """Tick ``health`` every second until ``stop`` is set."""
    while not stop.is_set():
        health.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _json(status: str, body: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data


def make_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/healthz``, ``/readyz``, ``/metrics``; anything else 404."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, why = health.alive()
            reply = _json("200 OK" if ok else "503 Service Unavailable", {"status": "ok" if ok else why})
        elif path == "/readyz":
            ready, checks = health.ready()
            reply = _json(
                "200 OK" if ready else "503 Service Unavailable",
                {
                    "status": "ready" if ready else "not ready",
                    "checks": {name: "ok" if ok else why for name, (ok, why) in sorted(checks.items())},
                },
            )
        else:
            reply = _json("404 Not Found", {"status": "not found", "paths": ["/healthz", "/readyz", "/metrics"]})
        status, headers, data = reply
        start_response(status, headers)
        return [data]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line each."""


class HealthServer(ThreadingMixIn, WSGIServer):
    """A threaded WSGI server: a slow scrape does not hold up a probe."""

    daemon_threads = True
    allow_reuse_address = True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def serve_health(
    host: str,
    port: int,
    *,
    registry: CollectorRegistry = REGISTRY,
    health: Health = PROCESS_HEALTH,
    setting: str = "metrics_port",
) -> HealthServer | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon thread; port 0 turns it off.

    ``setting`` names the setting the port came from (``ingest.metrics_port``), for the message when it is taken.
    """
    if not port:
        return None
    for collector in (health, BUILD_INFO):
        with contextlib.suppress(ValueError):  # already registered: a second server of the same process
            registry.register(collector)
    server_cls = type("Server", (HealthServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    try:
        server: WSGIServer = make_server(
            host, port, make_app(registry, health), server_class=server_cls, handler_class=_Quiet
        )
    except OSError as exc:
        env = "WEARLINE_" + setting.upper().replace(".", "__")
        raise MetricsPortError(
            f"cannot serve metrics on {host} port {port}: {exc.strerror or exc}. Each Wearline process on one host "
            f"needs a port of its own: set {setting} ({env}), or 0 to turn the endpoint off; the address is "
            "metrics_host (WEARLINE_METRICS_HOST)"
        ) from exc
    assert isinstance(server, HealthServer)
    threading.Thread(target=server.serve_forever, name="wearline-health", daemon=True).start()
    log.info("metrics on %s:%d/metrics, health on /healthz and /readyz", host, port)
    return server
