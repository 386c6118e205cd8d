"""Small synthetic fleets made inside the tests: correlated sensors, two operating conditions, known faults."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from analytics import RunHistory

SENSORS = ["vib", "temp", "current", "pressure", "flow", "const"]


def healthy(n: int, seed: int, *, condition: bool = True) -> np.ndarray:
    """Rows of normal operation: columns SENSORS plus a last 'cond' column (0 or 1, switching every 50 rows)."""
    rng = np.random.default_rng(seed)
    cond = (np.arange(n) // 50) % 2 if condition else np.zeros(n, dtype=int)
    load = 0.7 + 0.1 * np.sin(np.arange(n) / 40.0) + 0.3 * cond
    x = np.column_stack(
        [
            1.0 + 0.8 * load + 0.05 * rng.normal(size=n),
            40 + 15 * load + 0.3 * rng.normal(size=n),
            20 + 25 * load + 0.3 * rng.normal(size=n),
            2 + 3 * load**2 + 0.03 * rng.normal(size=n),
            100 * load + 0.5 * rng.normal(size=n),
            np.full(n, 7.0),
        ]
    )
    return np.column_stack([x, cond])


def faulty(n: int, seed: int) -> np.ndarray:
    """Healthy rows with a bearing fault growing over the second half: vibration and temperature rise."""
    x = healthy(n, seed)
    k = np.arange(n) - n // 2
    wear = np.clip(k / (n / 4), 0, 1)
    x[:, 0] += 0.6 * wear
    x[:, 1] += 4.0 * wear
    return x


def fault_labels(n: int) -> np.ndarray:
    return np.arange(n) >= n // 2 + n // 16


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative."""
    allv = np.concatenate([neg, pos])
    ranks = np.argsort(np.argsort(allv, kind="stable"), kind="stable") + 1.0
    return float((ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


def runs(units: int, seed: int, *, const: bool = True) -> list[RunHistory]:
    """Run-to-failure histories: exponential wear with lives of very different length, hourly rows."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(units):
        life = float(rng.uniform(150, 400))
        t = np.arange(0.0, life + 1e-9, 1.0)
        h = np.exp((t - life) / (life / 4))  # wear: ~0 early, 1 at failure
        cond = rng.integers(0, 2, len(t))
        vals = np.column_stack(
            [
                1 + 0.5 * cond + 2.0 * h + 0.05 * rng.normal(size=len(t)),
                40 + 10 * cond + 15 * h + 0.5 * rng.normal(size=len(t)),
                20 + 5 * cond + 0.3 * rng.normal(size=len(t)),
                np.full(len(t), 3.0) if const else rng.normal(size=len(t)),
            ]
        )
        out.append(RunHistory(f"u{u}", t, vals, cond.astype(np.int64)))
    return out


def truncate(run: RunHistory, share: float) -> tuple[RunHistory, float]:
    """The run cut at ``share`` of its rows, and the true RUL at the cut."""
    k = max(int(len(run.time) * share), 12)
    cut = RunHistory(run.unit, run.time[:k], run.values[:k], None if run.condition is None else run.condition[:k])
    return cut, float(run.time[-1] - run.time[k - 1])


def write_fleet(folder: Path, *, units: int = 8, seed: int = 0) -> None:
    """The offline simulator's file shape: train/test CSVs and their truth, two machine types, hourly rows."""
    rng = np.random.default_rng(seed)
    files: dict[str, list[str]] = {
        "train": ["unit,time,machine_type,condition,vib,temp,const"],
        "train_truth": ["unit,time,health,rul,fault,fault_type,failure_mode"],
        "test": ["unit,time,machine_type,condition,vib,temp,const"],
        "test_truth": ["unit,time,health,rul,fault,fault_type,failure_mode"],
        "test_rul": ["unit,rul"],
    }
    for split in ("train", "test"):
        for u in range(units):
            name = f"{split}-{u}"
            mtype = ("pump", "motor")[u % 2]
            life = float(rng.uniform(200, 400))
            onset = life * 0.6
            t = np.arange(0.0, life + 1e-9, 1.0)
            cut = len(t) if split == "train" else int(len(t) * rng.uniform(0.4, 0.95))
            for k in range(cut):
                wear = max(0.0, (t[k] - onset) / (life - onset)) ** 2
                cond = int(rng.integers(0, 2))
                vib = 1 + 0.5 * cond + 3.0 * wear + 0.05 * rng.normal()
                temp = 40 + 10 * cond + 20 * wear + 0.3 * rng.normal()
                files[split].append(f"{name},{t[k]},{mtype},{cond},{vib:.4f},{temp:.3f},5")
                fault = int(t[k] >= onset + 0.1 * (life - onset))
                files[f"{split}_truth"].append(
                    f"{name},{t[k]},{1 - wear:.4f},{life - t[k]},{fault},{'wear' if fault else ''},bearing"
                )
            if split == "test":
                files["test_rul"].append(f"{name},{life - t[cut - 1]}")
    for n, lines in files.items():
        (folder / f"{n}.csv").write_text("\n".join(lines) + "\n")


CMAPSS_POINTS = np.array([[0.0, 0.0, 100.0], [10.0, 0.25, 100.0], [20.0, 0.7, 100.0], [25.0, 0.62, 60.0],
                          [35.0, 0.84, 100.0], [42.0, 0.84, 100.0]])  # fmt: skip
"""Six operating points (two settings and a throttle angle), as C-MAPSS's multi-condition files have."""


def write_cmapss(path: Path, *, units: int, seed: int, conditions: int = 6) -> None:
    """A gzip file of C-MAPSS's shape (unit, cycle, three settings, 21 sensors; whitespace, no header): wear that
    shows only after an onset, sensors offset per operating point, most sensors constant as in the real files."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, units + 1):
        life = int(rng.uniform(120, 260))
        onset = life * rng.uniform(0.3, 0.6)
        for c in range(1, life + 1):
            wear = max(0.0, (c - onset) / (life - onset)) ** 1.5
            p = int(rng.integers(0, conditions))
            setting = CMAPSS_POINTS[p] + [0.002 * rng.normal(), 0.0003 * rng.normal(), 0.0]
            sensors = np.full(21, 10.0)
            sensors[1] = 640 + 3 * p + 2.0 * wear + 0.3 * rng.normal()
            sensors[2] = 1590 + 20 * p + 25 * wear + 4 * rng.normal()
            sensors[6] = 550 - 5 * p - 3.0 * wear + 0.5 * rng.normal()
            sensors[10] = 47 + 0.5 * p + 1.2 * wear + 0.2 * rng.normal()
            values = [u, c, *setting, *sensors]
            lines.append(" ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values) + " ")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
