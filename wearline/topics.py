"""The MQTT topic scheme: ``<prefix>/<tenant>/<site>/<line>/<machine>/telemetry``.

Each level names one node of the asset hierarchy, so a broker ACL can confine a tenant's gateways to
``<prefix>/<tenant>/#`` and a subscriber can pick a site or line with ordinary wildcards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MachinePath", "TopicError", "parse_telemetry_topic", "telemetry_filter", "telemetry_topic"]

LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TELEMETRY = "telemetry"


class TopicError(ValueError):
    """A topic does not follow the scheme."""


@dataclass(frozen=True, slots=True)
class MachinePath:
    """Where a machine sits: tenant, site, line and the machine's own name."""

    tenant: str
    site: str
    line: str
    machine: str

    def __post_init__(self) -> None:
        for name in ("tenant", "site", "line", "machine"):
            if not LEVEL.match(getattr(self, name)):
                raise TopicError(f"{name} {getattr(self, name)!r} is not 1-64 of [A-Za-z0-9_.-]")

    def __str__(self) -> str:
        return f"{self.tenant}/{self.site}/{self.line}/{self.machine}"


def telemetry_topic(prefix: str, path: MachinePath) -> str:
    """The topic a gateway publishes one machine's telemetry on."""
    return f"{prefix}/{path}/{TELEMETRY}"


def telemetry_filter(prefix: str, shared_group: str | None = None) -> str:
    """The subscription that receives every machine's telemetry, optionally as an MQTT 5 shared subscription."""
    topic = f"{prefix}/+/+/+/+/{TELEMETRY}"
    return f"$share/{shared_group}/{topic}" if shared_group else topic


def parse_telemetry_topic(prefix: str, topic: str) -> MachinePath:
    """The machine a telemetry topic names, or :class:`TopicError`."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} is not under the prefix {prefix!r}")
    levels = topic[len(head) :].split("/")
    if len(levels) != 5 or levels[4] != TELEMETRY:
        raise TopicError(f"topic {topic!r} is not <prefix>/<tenant>/<site>/<line>/<machine>/telemetry")
    return MachinePath(*levels[:4])
