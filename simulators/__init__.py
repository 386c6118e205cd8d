"""Simulated machines that play the plant: physics, degradation, injected faults, gateways, and the ground truth.

A :class:`Scenario` (usually a TOML file, see ``docs/simulator.md``) describes a fleet; :class:`Fleet` steps it;
:func:`write_offline_dataset` writes run-to-failure histories as CSV; :func:`publish_fleet` publishes it over MQTT,
on the simulated clock :func:`plan_live` sets (accelerated through recent history, never ahead of the wall clock).
"""

from typing import TYPE_CHECKING

from wearline.lazy import lazy_exports

if TYPE_CHECKING:
    from simulators._backlog import BacklogStats, PublishBacklog
    from simulators._clock import DEFAULT_HISTORY_S, LivePlan, default_history_s, plan_live
    from simulators._fleet import FAULT_LABELS, Fleet, Frame, SimEvent
    from simulators._gateway import GatewayStats
    from simulators._load import LoadResult, run_load
    from simulators._machines import MACHINE_TYPES, MachineType, machine_type
    from simulators._offline import TRAIN_COLUMNS, TRUTH_COLUMNS, OfflineDataset, write_offline_dataset
    from simulators._publish import PublishError, PublishSummary, publish_fleet
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
    "DEFAULT_HISTORY_S",
    "FAULT_KINDS",
    "FAULT_LABELS",
    "MACHINE_TYPES",
    "TRAIN_COLUMNS",
    "TRUTH_COLUMNS",
    "TRUTH_CSV_COLUMNS",
    "BacklogStats",
    "Fault",
    "FaultSpec",
    "Fleet",
    "FleetSpec",
    "Frame",
    "GatewaySpec",
    "GatewayStats",
    "LivePlan",
    "LoadResult",
    "MachineGroup",
    "MachineType",
    "OfflineDataset",
    "PublishBacklog",
    "PublishError",
    "PublishSummary",
    "Scenario",
    "ScenarioError",
    "SimEvent",
    "TruthSink",
    "default_history_s",
    "load_scenario",
    "machine_type",
    "open_truth",
    "plan_live",
    "publish_fleet",
    "run_load",
    "write_offline_dataset",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BacklogStats": "simulators._backlog",
        "PublishBacklog": "simulators._backlog",
        "DEFAULT_HISTORY_S": "simulators._clock",
        "LivePlan": "simulators._clock",
        "default_history_s": "simulators._clock",
        "plan_live": "simulators._clock",
        "FAULT_LABELS": "simulators._fleet",
        "Fleet": "simulators._fleet",
        "Frame": "simulators._fleet",
        "SimEvent": "simulators._fleet",
        "GatewayStats": "simulators._gateway",
        "LoadResult": "simulators._load",
        "run_load": "simulators._load",
        "MACHINE_TYPES": "simulators._machines",
        "MachineType": "simulators._machines",
        "machine_type": "simulators._machines",
        "TRAIN_COLUMNS": "simulators._offline",
        "TRUTH_COLUMNS": "simulators._offline",
        "OfflineDataset": "simulators._offline",
        "write_offline_dataset": "simulators._offline",
        "PublishError": "simulators._publish",
        "PublishSummary": "simulators._publish",
        "publish_fleet": "simulators._publish",
        "FAULT_KINDS": "simulators._scenario",
        "Fault": "simulators._scenario",
        "FaultSpec": "simulators._scenario",
        "FleetSpec": "simulators._scenario",
        "GatewaySpec": "simulators._scenario",
        "MachineGroup": "simulators._scenario",
        "Scenario": "simulators._scenario",
        "ScenarioError": "simulators._scenario",
        "load_scenario": "simulators._scenario",
        "TRUTH_CSV_COLUMNS": "simulators._truth",
        "TruthSink": "simulators._truth",
        "open_truth": "simulators._truth",
    },
)
