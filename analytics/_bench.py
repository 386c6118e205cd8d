"""`wearline bench analytics`: scoring throughput per detector and a fleet RUL refresh, on synthetic data."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from analytics._base import DataError, RunHistory
from analytics._ewma import EwmaMad
from analytics._offline import DETECTORS
from analytics._rul_gbm import GbmRul
from wearline.progress import SILENT, Bar

__all__ = ["run_bench"]


def _rows(n: int, sensors: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    load = 0.75 + 0.2 * np.sin(np.arange(n) / 600.0)
    return np.asarray(load[:, None] * np.linspace(1, 50, sensors) + rng.normal(size=(n, sensors)), dtype=np.float64)


def _runs(units: int, rows: int, sensors: int, seed: int, *, to_failure: bool) -> list[RunHistory]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(units):
        life = float(rng.uniform(2 * rows, 6 * rows))
        n = rows if not to_failure else int(life)
        t = np.arange(n, dtype=np.float64) + (0.0 if to_failure else float(rng.uniform(0, life - rows)))
        wear = np.exp((t - life) / (life / 4))
        vals = rng.normal(size=(n, sensors)) * 0.1 + wear[:, None] * np.linspace(0.5, 2, sensors)
        out.append(RunHistory(f"m{u}", t, vals, None, failed=to_failure))
    return out


def run_bench(
    *,
    machines: int,
    rows: int,
    sensors: int,
    history: int,
    seed: int,
    echo: Callable[[str], None],
    bar: Bar = SILENT,
) -> None:
    """Print one line per figure, then one JSON object with all of them; ``bar`` shows which part runs.

    Options that describe no work (no machines, rows or sensors, fewer than 2 history rows, a negative seed) raise
    :class:`DataError` naming the command-line option, before any work.
    """
    for option, value, least in (
        ("--machines", machines, 1),
        ("--rows", rows, 1),
        ("--sensors", sensors, 1),
        ("--history", history, 2),
        ("--seed", seed, 0),
    ):
        if value < least:
            raise DataError(f"{option} {value}: must be at least {least}")
    figures: dict[str, object] = {
        "rows": rows,
        "sensors": sensors,
        "machines": machines,
        "history_rows": history,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads_env": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
    data = _rows(rows, sensors, seed)
    base = _rows(2000, sensors, seed + 1)
    for name, make in DETECTORS.items():
        bar.phase(f"{name}: scoring {rows:,} rows x {sensors} sensors")
        det = make()
        det.learn_many(base)
        det.score_many(base[:10])  # fit outside the timing
        t0, c0 = time.perf_counter(), time.process_time()
        if isinstance(det, EwmaMad):
            det.process_many(data)
        else:
            det.score_many(data)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rate = rows * sensors / wall
        per_core = rows * sensors / max(cpu, 1e-9)
        figures[f"{name}_readings_per_s"] = round(rate)
        figures[f"{name}_readings_per_cpu_s"] = round(per_core)
        echo(f"{name:12s} {rate:14,.0f} readings/s wall  {per_core:14,.0f} readings per CPU-second")
    bar.phase("rul: fitting on 40 run-to-failure histories")
    train = _runs(40, history, sensors, seed + 2, to_failure=True)
    t0 = time.perf_counter()
    model = GbmRul(seed=seed).fit(train, [f"s{i}" for i in range(sensors)])
    fit_s = time.perf_counter() - t0
    bar.phase(f"rul: refreshing {machines:,} machines")
    fleet = _runs(machines, history, sensors, seed + 3, to_failure=False)
    t0, c0 = time.perf_counter(), time.process_time()
    preds = model.predict(fleet)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(preds) == machines
    figures.update(
        rul_fit_s=round(fit_s, 3),
        rul_refresh_s=round(wall, 3),
        rul_refresh_cpu_s=round(cpu, 3),
        rul_machines_per_s=round(machines / wall),
    )
    echo(f"rul fit      {fit_s:8.2f} s on {len(train)} run-to-failure histories")
    echo(f"rul refresh  {wall:8.2f} s wall ({cpu:.2f} s CPU) for {machines:,} machines x {history} rows")
    echo(json.dumps(figures, sort_keys=True))
