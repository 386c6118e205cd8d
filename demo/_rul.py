"""The demo's remaining-life model: fit on a small simulator export of pumps like the demo's, and registered."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import psycopg

import analytics
import simulators

__all__ = ["MACHINE_TYPE", "register_demo_rul"]

MACHINE_TYPE = "centrifugal_pump"
UNITS = 40
"""Run-to-failure histories to fit on: enough for ten folds of four units, a few seconds' fit."""
LIFE_SCALES = (0.06, 0.25)
"""Lives of the training pumps, as shares of a pump's usual ones: half wear out within days like the demo's failing
pump, half last two weeks, so that days of age without wear say "healthy" rather than "old"."""


def _fit(folder: Path) -> Path:
    # The demo's pumps: one steady condition and no ambient swing, and no random sensor faults, whose hours the
    # model would learn as wear.
    scenario = simulators.Scenario(
        name="demo-rul",
        groups=tuple(
            simulators.MachineGroup(MACHINE_TYPE, 1, name=f"pump{i}", conditions=("mid",), life_scale=scale)
            for i, scale in enumerate(LIFE_SCALES)
        ),
        ambient_swing_c=0.0,
        offline_min_life_h=24.0,
        offline_max_life_h=500.0,
    )
    # Hourly means (12 samples an hour, as the demo publishes): the rows the analytics worker gives RUL models.
    data = simulators.write_offline_dataset(
        scenario, folder, units=UNITS, seed=3, test_units=0, fault_rate_per_day=0.0, samples_per_row=12
    )
    table = analytics.read_table(data.train)
    features = list(data.sensors)
    model = analytics.RulModel.fit(
        table, unit="unit", time="time", features=features, condition=[], by=None, model="gbm", coverage=0.9, seed=0
    )
    out = folder / "rul.model"
    analytics.save_model(
        model,
        out,
        "rul",
        {"estimator": "gbm", "coverage": 0.9, "seed": 0, "features": model.features, "condition": [], "by": None},
    )
    return out


async def register_demo_rul(conn: psycopg.AsyncConnection[Any]) -> str:
    """Fit the demo's RUL model (in a thread: seconds of CPU) and register it for the demo's pumps; its version."""
    with tempfile.TemporaryDirectory(prefix="wearline-demo-") as folder:
        path = await asyncio.to_thread(_fit, Path(folder))
        blob, meta = analytics.read_model_file(path)
    return await analytics.register_model(conn, blob, meta, MACHINE_TYPE)
