"""The demo layer: a small simulated fleet through ingest, analytics and alerts in one process, until a ticket.

It sits above the stages (it imports every one of them, through their public names) and beside the core, which
imports none; ``wearline demo`` is its command.
"""

from demo._run import DemoError, DemoResult, run_demo
from demo._soak import SoakError, SoakOptions, SoakReport, run_soak

__all__ = ["DemoError", "DemoResult", "SoakError", "SoakOptions", "SoakReport", "run_demo", "run_soak"]
