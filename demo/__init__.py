"""The demo layer: a small simulated fleet through ingest, analytics and alerts in one process, until a ticket.

It sits above the stages (it imports every one of them, through their public names) and beside the core, which
imports none; ``wearline demo`` is its command.
"""

from demo._run import DemoError, DemoResult, run_demo

__all__ = ["DemoError", "DemoResult", "run_demo"]
