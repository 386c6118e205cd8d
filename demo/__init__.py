"""The demo layer: a small simulated fleet through ingest, analytics and alerts in one process, until a ticket.

It sits above the stages (it imports every one of them, through their public names) and beside the core, which
imports none; ``wearline demo`` is its command.
"""

from typing import TYPE_CHECKING

from wearline.lazy import lazy_exports

if TYPE_CHECKING:
    from demo._run import DemoError, DemoResult, run_demo
    from demo._soak import SoakError, SoakOptions, SoakReport, run_soak

__all__ = ["DemoError", "DemoResult", "SoakError", "SoakOptions", "SoakReport", "run_demo", "run_soak"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DemoError": "demo._run",
        "DemoResult": "demo._run",
        "run_demo": "demo._run",
        "SoakError": "demo._soak",
        "SoakOptions": "demo._soak",
        "SoakReport": "demo._soak",
        "run_soak": "demo._soak",
    },
)
