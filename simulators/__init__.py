"""Simulated machines that publish telemetry like a plant's gateways, with faults whose truth we know."""

from simulators._fleet import Fault, FleetSpec, PumpFleet
from simulators._publish import PublishSummary, publish_fleet

__all__ = ["Fault", "FleetSpec", "PublishSummary", "PumpFleet", "publish_fleet"]
