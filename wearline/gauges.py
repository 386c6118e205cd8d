"""Gauges of our own: one absent until it has a value, and the build's identity.

A plain Gauge reads 0 from the start, and 0 as a Unix time means 1970: ``time() - newest_scored`` would then be
fifty years of lag, and the other way round a lag of 0 would say "up to date" for a worker that never scored
anything. Absent is what PromQL can tell apart (``absent()``, ``unless``).
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wearline import __version__

__all__ = ["BUILD_INFO", "BuildInfo", "NewestTimestamp"]


class NewestTimestamp(Collector):
    """The newest Unix time (seconds) seen, exported only once one was; it never goes back."""

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._name = name
        self._doc = documentation
        self._value: float | None = None
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    @property
    def value(self) -> float | None:
        return self._value

    def observe(self, seconds: float) -> None:
        """Record ``seconds`` if it is newer than what is held (a late sample does not move it back)."""
        with self._lock:
            if self._value is None or seconds > self._value:
                self._value = seconds

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Named at registration even before a value, so a second collector of the same name is refused.
        yield GaugeMetricFamily(self._name, self._doc)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._value
        if value is not None:
            yield GaugeMetricFamily(self._name, self._doc, value=value)


class BuildInfo(Collector):
    """``wearline_build_info{version, python_version} 1``: which release a process runs, for joins in PromQL (``*
    on(instance) group_left(version)``) and for seeing a rollout's progress across replicas."""

    def __init__(self, version: str = __version__, python_version: str = platform.python_version()) -> None:
        self._labels = {"version": version, "python_version": python_version}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self.collect()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "wearline_build_info",
            "Always 1; the labels say which Wearline release and Python run.",
            labels=list(self._labels),
        )
        family.add_metric(list(self._labels.values()), 1.0)
        yield family


BUILD_INFO = BuildInfo()
"""This process's build, served beside its metrics by :func:`wearline.health.serve_health`."""
