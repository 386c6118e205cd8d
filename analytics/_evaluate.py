"""`wearline eval`: anomaly and RUL figures on a held-out fleet written as train/test CSV files with truth."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from analytics._base import DataError, Vector, clone
from analytics._offline import AnomalyModel, DetectorName, RulModel, RulName, default_features
from analytics._rul_score import phm08_score
from analytics._tabular import Table, read_table
from wearline.progress import SILENT, Bar

__all__ = ["EventCounts", "anomaly_metrics", "evaluate_dir", "phm08_score", "rul_metrics"]

Flags = npt.NDArray[np.bool_]


@dataclass
class EventCounts:
    """Event-level outcome of alarms against labelled fault intervals."""

    events: int = 0
    detected: int = 0
    alarm_episodes: int = 0
    true_alarm_episodes: int = 0
    false_alarms: int = 0
    early_alarms: int = 0
    hours: float = 0.0
    delays_h: list[float] | None = None


def _episodes(mask: Flags) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist(), strict=True))


def count_events(
    time: Vector,
    fault: Flags,
    flags: Flags,
    grace_h: float,
    counts: EventCounts,
    *,
    incipient: Flags | None = None,
) -> None:
    """Add one unit's alarms (``flags``) against its truth (``fault``) to ``counts``.

    A fault event is detected when an alarm starts inside it or within ``grace_h`` after it ends; an alarm
    episode that touches no event (give or take ``grace_h``) is a false alarm, unless it starts on an
    ``incipient`` row (real wear below the label's visibility level): that is an early alarm, counted apart and
    in neither precision nor the false alarms.
    """
    if counts.delays_h is None:
        counts.delays_h = []
    events = _episodes(fault)
    counts.events += len(events)
    counts.hours += float(time[-1] - time[0]) if len(time) else 0.0
    alarms = _episodes(flags)
    for s, e in events:
        hit = np.flatnonzero(flags & (time >= time[s]) & (time <= time[e] + grace_h))
        if len(hit):
            counts.detected += 1
            counts.delays_h.append(float(time[hit[0]] - time[s]))
    for s, e in alarms:
        near = any(time[s] <= time[fe] + grace_h and time[e] >= time[fs] - 0.0 for fs, fe in events)
        if near:
            counts.true_alarm_episodes += 1
        elif incipient is not None and incipient[s]:
            counts.early_alarms += 1
            continue
        else:
            counts.false_alarms += 1
        counts.alarm_episodes += 1


def anomaly_metrics(c: EventCounts) -> dict[str, float]:
    """Precision (alarm episodes that were real), recall (events caught), F1, false alarms per machine-day,
    and median/mean detection delay in hours."""
    precision = c.true_alarm_episodes / c.alarm_episodes if c.alarm_episodes else 1.0
    recall = c.detected / c.events if c.events else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    delays = c.delays_h or []
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "false_alarms_per_machine_day": round(c.false_alarms / (c.hours / 24.0), 4) if c.hours else 0.0,
        "detection_delay_h_median": round(float(np.median(delays)), 3) if delays else math.nan,
        "detection_delay_h_mean": round(float(np.mean(delays)), 3) if delays else math.nan,
        "events": c.events,
        "alarm_episodes": c.alarm_episodes,
        "false_alarms": c.false_alarms,
        "early_alarms": c.early_alarms,
    }


def rul_metrics(
    true: Vector, pred: Vector, lower: Vector, upper: Vector, mean_life: float, *, cap_h: float | None = None
) -> dict[str, float]:
    """RMSE, MAE (hours and share of mean life), PHM08 score and interval coverage.

    The PHM08 constants were set for engine lives of about 200 cycles; here the error is counted in percent of
    the mean life (so 10 % of a life late costs e - 1), which keeps the score comparable across time units and
    machine types (in hours, a 100 h error alone scored e^10).

    With ``cap_h``, also the same figures on the piecewise-linear target of the PHM literature (true RUL,
    prediction and interval all capped at ``cap_h``: "more than ``cap_h`` left" is all a planner needs), and the
    RMSE over the units whose true RUL is within ``cap_h``. The uncapped figures stay the headline.
    """
    err = pred - true
    rmse = float(np.sqrt(np.mean(err**2)))
    capped: dict[str, float] = {}
    if cap_h is not None and len(true):
        c_err = np.minimum(pred, cap_h) - np.minimum(true, cap_h)
        c_rmse = float(np.sqrt(np.mean(c_err**2)))
        inside = true <= cap_h
        lo_c, hi_c, true_c = np.minimum(lower, cap_h), np.minimum(upper, cap_h), np.minimum(true, cap_h)
        capped = {
            "rul_cap_h": round(cap_h, 3),
            "rul_rmse_h_capped": round(c_rmse, 3),
            "rul_rmse_share_of_mean_life_capped": round(c_rmse / mean_life, 4) if mean_life else math.nan,
            "rul_interval_coverage_capped": round(float(np.mean((lo_c <= true_c) & (true_c <= hi_c))), 4),
            "rul_rmse_h_within_cap": round(float(np.sqrt(np.mean(err[inside] ** 2))), 3) if inside.any() else math.nan,
            "units_within_cap": int(inside.sum()),
        }
    return {
        "rul_rmse_h": round(rmse, 3),
        "rul_mae_h": round(float(np.mean(np.abs(err))), 3),
        "rul_rmse_share_of_mean_life": round(rmse / mean_life, 4) if mean_life else math.nan,
        "rul_phm08_score": round(phm08_score(err * 100.0 / mean_life), 3) if mean_life else math.nan,
        "rul_phm08_score_per_unit": round(phm08_score(err * 100.0 / mean_life) / len(err), 4)
        if mean_life and len(err)
        else math.nan,
        "rul_interval_coverage": round(float(np.mean((lower <= true) & (true <= upper))), 4),
        "rul_interval_width_h_mean": round(float(np.mean(upper - lower)), 3),
        "mean_life_h": round(mean_life, 3),
        "units": len(true),
        **capped,
    }


def _truth_by_row(
    data: Table, truth: Table, unit: str, time: str, column: str = "fault"
) -> dict[tuple[str, float], float]:
    t = truth.hours(time)
    values = truth.numeric(column)
    if column == "fault":
        values = (values > 0).astype(np.float64)
    return {(u, float(tt)): float(v) for u, tt, v in zip(truth.cols[unit], t, values, strict=True)}


def evaluate_dir(
    folder: Path,
    *,
    detectors: Sequence[DetectorName] = ("pca", "mahalanobis", "knn", "ewma"),
    ruls: Sequence[RulName] = ("gbm",),
    persistence: int = 3,
    grace_h: float = 24.0,
    rul_cap_share: float = 0.5,
    incipient_health: float = 0.8,
    normal_share: float = 0.5,
    changes: bool = True,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    bar: Bar = SILENT,
) -> dict[str, Any]:
    """Fit on ``train.csv`` (+ ``train_truth.csv``), score ``test.csv`` against ``test_truth.csv`` and
    ``test_rul.csv``; returns the figures (best detector and RUL model by F1 and RMSE, and each one's).

    An alarm outside every labelled fault that starts while the unit's true health is below ``incipient_health``
    (its wear is real but below the simulator's visibility label) is an early alarm: neither true nor false;
    ``incipient_health=0`` counts it as a false alarm. RUL figures are also given capped at ``rul_cap_share`` x the
    mean training life (see :func:`rul_metrics`). Detectors learn from the training rows labelled fault-free in
    the first ``normal_share`` of each life. With ``changes`` the detectors also see each sensor's change from
    the unit's row before. ``echo`` gets a table of every model's and detector's figures (see
    :func:`figures_table`); ``bar`` shows progress."""
    names = {n: folder / f"{n}.csv" for n in ("train", "train_truth", "test", "test_rul", "test_truth")}
    for n, p in names.items():
        if not p.is_file():
            raise DataError(f"{folder}: {n}.csv is missing (expected train, train_truth, test, test_rul, test_truth)")
    train, train_truth = read_table(names["train"]), read_table(names["train_truth"])
    test, test_truth, test_rul = (
        read_table(names["test"]),
        read_table(names["test_truth"]),
        read_table(names["test_rul"]),
    )
    unit, time = "unit", "time"
    by = "machine_type" if "machine_type" in train.names else None
    condition = [c for c in ("condition",) if c in train.names]
    features = default_features(train, [unit, time, *condition, *([by] if by else [])])
    out: dict[str, Any] = {
        "folder": str(folder),
        "features": len(features),
        "persistence": persistence,
        "normal_share": normal_share,
    }

    # -- RUL -----------------------------------------------------------------------------------------------
    truth_rul = dict(zip(test_rul.cols[unit], test_rul.numeric("rul"), strict=True))
    lives: list[float] = []
    tt = train.hours(time)
    for u in dict.fromkeys(train.cols[unit]):
        m = np.array(train.cols[unit]) == u
        lives.append(float(tt[m].max() - tt[m].min()))
    mean_life = float(np.mean(lives))
    rul_results: dict[str, dict[str, float]] = {}
    for name in ruls:
        bar.phase(f"RUL model {name}: fit and predict")
        model = RulModel.fit(
            train, unit=unit, time=time, features=features, condition=condition, by=by, model=name, seed=seed
        )
        preds = model.predict(test)
        true = np.array([truth_rul[p.unit] for p in preds])
        rul_results[name] = rul_metrics(
            true,
            np.array([p.rul for p in preds]),
            np.array([p.lower for p in preds]),
            np.array([p.upper for p in preds]),
            mean_life,
            cap_h=rul_cap_share * mean_life,
        )
    if rul_results:
        best_rul = min(rul_results, key=lambda k: rul_results[k]["rul_rmse_h"])
        out.update({"rul_model": best_rul, **rul_results[best_rul], "rul_all": rul_results})

    # -- anomalies -----------------------------------------------------------------------------------------
    ttrain = _truth_by_row(train, train_truth, unit, time)
    ttest = _truth_by_row(test, test_truth, unit, time)
    htest = _truth_by_row(test, test_truth, unit, time, "health") if "health" in test_truth.names else {}
    det_results: dict[str, dict[str, float]] = {}
    train_t, test_t = train.hours(time), test.hours(time)
    groups_train = np.array(train.cols[by]) if by else np.full(len(train), "all")
    groups_test = np.array(test.cols[by]) if by else np.full(len(test), "all")
    test_units = len(dict.fromkeys(test.cols[unit]))
    for det_name in detectors:
        bar.phase(f"detector {det_name}: fit and score {test_units} test units", total=test_units)
        counts = EventCounts()
        for g in dict.fromkeys(groups_test.tolist()):
            # Normal operation to learn from: training rows labelled fault-free early in each life.
            normal = np.array(
                [
                    gt == g and not ttrain.get((u, float(t)), 0)
                    for gt, u, t in zip(groups_train, train.cols[unit], train_t, strict=True)
                ]
            )
            normal &= _early(train, unit, train_t, normal_share)
            sub = _subset(train, normal)
            amodel = AnomalyModel.fit(
                sub,
                features=features,
                condition=condition,
                detector=det_name,
                persistence=persistence,
                unit=unit,
                changes=changes,
                seed=seed,
            )
            for u in dict.fromkeys(np.array(test.cols[unit])[groups_test == g].tolist()):
                rows = np.flatnonzero(np.array(test.cols[unit]) == u)
                rows = rows[np.argsort(test_t[rows], kind="stable")]
                part = _subset(test, rows)
                det = clone(amodel.detector.detector) if det_name == "ewma" else amodel.detector.detector
                if det_name == "ewma":
                    det.set_features(amodel.detector.detector.feature_names)
                wrapper = amodel.detector.restarted()
                wrapper.detector = det
                mat = amodel.matrix(part)
                scores = det.process_many(mat) if det_name == "ewma" else det.score_many(mat)
                flags = wrapper.flag_many(scores)
                fault = np.array([bool(ttest.get((u, float(t)), 0)) for t in test_t[rows]])
                health = np.array([htest.get((u, float(t)), 1.0) for t in test_t[rows]])
                count_events(
                    test_t[rows], fault, flags, grace_h, counts, incipient=(health < incipient_health) & ~fault
                )
                bar.advance()
        det_results[det_name] = anomaly_metrics(counts)
    if det_results:
        best = max(det_results, key=lambda k: (det_results[k]["f1"], -det_results[k]["false_alarms_per_machine_day"]))
        out.update({"detector": best, **det_results[best], "anomaly_all": det_results})
    for line in figures_table(out):
        echo(line)
    return out


_RUL_COLUMNS = (
    ("RMSE h", "rul_rmse_h"),
    ("MAE h", "rul_mae_h"),
    ("RMSE/life", "rul_rmse_share_of_mean_life"),
    ("PHM08/unit", "rul_phm08_score_per_unit"),
    ("coverage", "rul_interval_coverage"),
    ("width h", "rul_interval_width_h_mean"),
    ("RMSE h capped", "rul_rmse_h_capped"),
)
_ANOMALY_COLUMNS = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("F1", "f1"),
    ("false/machine-day", "false_alarms_per_machine_day"),
    ("delay h median", "detection_delay_h_median"),
    ("events", "events"),
    ("false", "false_alarms"),
    ("early", "early_alarms"),
)


def figures_table(figures: dict[str, Any]) -> list[str]:
    """``evaluate_dir``'s figures as aligned text: one row per RUL model and per detector, ``*`` on the best."""
    lines: list[str] = []
    for title, key, best, columns in (
        ("RUL model", "rul_all", figures.get("rul_model"), _RUL_COLUMNS),
        ("detector", "anomaly_all", figures.get("detector"), _ANOMALY_COLUMNS),
    ):
        results: dict[str, dict[str, float]] = figures.get(key, {})
        if not results:
            continue
        header = [f"  {title}", *(label for label, _ in columns)]
        rows = [
            [("* " if name == best else "  ") + name, *(_cell(r.get(k, math.nan)) for _, k in columns)]
            for name, r in results.items()
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            lines.append("  ".join(cells).rstrip())
        lines.append("")
    life = f", mean training life {figures['mean_life_h']:,.1f} h" if "mean_life_h" in figures else ""
    lines.append(
        f"* best by F1 (detectors) and RMSE (RUL models); {figures.get('features', 0)} features{life}; "
        "every figure is in the JSON line below"
    )
    return lines


def _cell(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if math.isnan(v):
        return "-"
    return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"


def _early(table: Table, unit: str, t: Vector, share: float) -> Flags:
    units = np.array(table.cols[unit])
    out = np.zeros(len(t), dtype=bool)
    for u in dict.fromkeys(units.tolist()):
        m = units == u
        lo, hi = t[m].min(), t[m].max()
        out[m] = t[m] <= lo + share * (hi - lo)
    return out


def _subset(table: Table, rows: npt.NDArray[Any]) -> Table:
    idx = np.flatnonzero(rows) if rows.dtype == bool else rows
    cols = {n: [v[i] for i in idx] for n, v in table.cols.items()}
    return Table(table.path, table.names, cols, [table.line(int(i)) for i in idx])
