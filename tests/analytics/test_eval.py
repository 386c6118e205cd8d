"""Evaluation: the metric definitions on hand-made cases, and `wearline eval` end to end on a small fleet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from analytics._evaluate import EventCounts, anomaly_metrics, count_events, phm08_score, rul_metrics
from tests.analytics import synth
from wearline.cli import app


def test_events_alarms_and_delay() -> None:
    t = np.arange(10.0)
    fault = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    flags = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 0], dtype=bool)  # one false alarm, one hit 1 h late
    counts = EventCounts()
    count_events(t, fault, flags, grace_h=0.0, counts=counts)
    m = anomaly_metrics(counts)
    assert m["recall"] == 1.0
    assert m["precision"] == 0.5
    assert m["f1"] == round(2 * 0.5 / 1.5, 4)
    assert m["detection_delay_h_median"] == 1.0
    assert m["false_alarms_per_machine_day"] == round(1 / (9 / 24), 4)


def test_a_missed_fault_counts_against_recall() -> None:
    counts = EventCounts()
    t = np.arange(5.0)
    count_events(t, np.array([0, 0, 1, 1, 0], dtype=bool), np.zeros(5, dtype=bool), grace_h=0.0, counts=counts)
    m = anomaly_metrics(counts)
    assert m["recall"] == 0.0
    assert math.isnan(m["detection_delay_h_median"])


def test_phm08_punishes_late_more_than_early() -> None:
    assert phm08_score(np.array([10.0])) > phm08_score(np.array([-10.0])) > 0
    assert phm08_score(np.array([0.0])) == 0.0
    m = rul_metrics(np.array([10.0, 20.0]), np.array([12.0, 20.0]), np.array([5.0, 25.0]), np.array([15.0, 30.0]), 100)
    assert m["rul_interval_coverage"] == 0.5
    assert m["rul_rmse_h"] == round(math.sqrt(2.0), 3)


def test_capped_rul_figures_only_count_error_inside_the_horizon() -> None:
    true, pred = np.array([50.0, 900.0]), np.array([60.0, 300.0])
    lower, upper = np.array([40.0, 250.0]), np.array([70.0, 400.0])
    m = rul_metrics(true, pred, lower, upper, 500.0, cap_h=200.0)
    # Both "more than 200 h left" for the second unit: no capped error there, and its interval covers.
    assert m["rul_rmse_h_capped"] == round(math.sqrt(100.0 / 2), 3)
    assert m["rul_interval_coverage_capped"] == 1.0
    assert m["rul_interval_coverage"] == 0.5
    assert m["rul_rmse_h_within_cap"] == 10.0
    assert m["units_within_cap"] == 1
    assert m["rul_rmse_h"] == round(math.sqrt((100.0 + 600.0**2) / 2), 3)  # the headline is unchanged
    assert "rul_rmse_h_capped" not in rul_metrics(true, pred, lower, upper, 500.0)


def test_eval_command_ends_with_one_json_line(tmp_path: Path) -> None:
    synth.write_fleet(tmp_path, units=6, seed=1)
    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path), "--detectors", "pca,ewma", "--models", "gbm"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for key in ("precision", "recall", "f1", "false_alarms_per_machine_day", "detection_delay_h_median",
                "rul_rmse_h", "rul_mae_h", "rul_phm08_score", "rul_interval_coverage", "rul_rmse_h_capped"):  # fmt: skip
        assert key in figures
    assert set(figures["anomaly_all"]) == {"pca", "ewma"}
    assert figures["anomaly_all"]["pca"]["recall"] > 0.5
    assert figures["rul_model"] == "gbm"


def test_eval_names_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.csv is missing" in result.output


def test_an_alarm_during_incipient_wear_is_early_not_false() -> None:
    t = np.arange(10.0)
    fault = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
    flags = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    incipient = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], dtype=bool)  # wear is real, below the label's level
    counts = EventCounts()
    count_events(t, fault, flags, 0.0, counts, incipient=incipient)
    m = anomaly_metrics(counts)
    assert (m["false_alarms"], m["early_alarms"], m["alarm_episodes"]) == (1, 1, 2)
    assert m["precision"] == 0.5
    old = EventCounts()
    count_events(t, fault, flags, 0.0, old)  # without the truth's health every such alarm is false
    assert anomaly_metrics(old)["false_alarms"] == 2
