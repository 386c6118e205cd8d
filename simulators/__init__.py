"""Simulated machines that play the plant: physics, degradation, injected faults, gateways, and the ground truth.

A :class:`Scenario` (usually a TOML file, see ``docs/simulator.md``) describes a fleet; :class:`Fleet` steps it;
:func:`write_offline_dataset` writes run-to-failure histories as CSV; :func:`publish_fleet` publishes it over MQTT.
"""

from simulators._fleet import FAULT_LABELS, Fleet, Frame, SimEvent
from simulators._gateway import GatewayStats
from simulators._load import LoadResult, run_load
from simulators._machines import MACHINE_TYPES, MachineType, machine_type
from simulators._offline import TRAIN_COLUMNS, TRUTH_COLUMNS, OfflineDataset, write_offline_dataset
from simulators._publish import PublishSummary, publish_fleet
from simulators._scenario import (
    FAULT_KINDS,
    Fault,
    FaultSpec,
    FleetSpec,
    GatewaySpec,
    MachineGroup,
    Scenario,
    ScenarioError,
    load_scenario,
)
from simulators._truth import TRUTH_CSV_COLUMNS, TruthSink, open_truth

__all__ = [
    "FAULT_KINDS",
    "FAULT_LABELS",
    "MACHINE_TYPES",
    "TRAIN_COLUMNS",
    "TRUTH_COLUMNS",
    "TRUTH_CSV_COLUMNS",
    "Fault",
    "FaultSpec",
    "Fleet",
    "FleetSpec",
    "Frame",
    "GatewaySpec",
    "GatewayStats",
    "LoadResult",
    "MachineGroup",
    "MachineType",
    "OfflineDataset",
    "PublishSummary",
    "Scenario",
    "ScenarioError",
    "SimEvent",
    "TruthSink",
    "load_scenario",
    "machine_type",
    "open_truth",
    "publish_fleet",
    "run_load",
    "write_offline_dataset",
]
