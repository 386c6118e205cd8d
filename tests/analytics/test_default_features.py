"""`anomaly fit` and `rul fit` never take a time or unit column as a feature unless told to (issue 13 item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from wearline.cli import app

runner = CliRunner()


def _normal(path: Path, header: str) -> None:
    rng = np.random.default_rng(3)
    rows = [header]
    for u in range(4):
        for h in range(100):
            rows.append(f"{u},{1000 * u + h},{u * 100 + h},{1.0 + 0.05 * rng.normal():.4f},{50 + rng.normal():.3f}")
    path.write_text("\n".join(rows) + "\n")


def test_anomaly_fit_leaves_time_unit_and_counters_out_and_scores_later_rows_as_normal(tmp_path: Path) -> None:
    # "machine" and "time" by name, "seq" because it rises at every row (a clock under another name).
    data = tmp_path / "normal.csv"
    _normal(data, "machine,time,seq,vib,temp")
    model = tmp_path / "a.model"
    result = runner.invoke(app, ["anomaly", "fit", "--train", str(data), "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.model.json").read_text())["features"] == ["vib", "temp"]
    # Later rows of the same normal operation (times ten times beyond the training span) are not anomalies.
    later = tmp_path / "later.csv"
    _normal(later, "machine,time,seq,vib,temp")
    text = later.read_text().splitlines()
    shifted = [text[0]] + [",".join([r.split(",")[0], str(float(r.split(",")[1]) + 40_000), *r.split(",")[2:]])
                           for r in text[1:]]  # fmt: skip
    later.write_text("\n".join(shifted) + "\n")
    out = runner.invoke(app, ["anomaly", "score", "--model", str(model), "--data", str(later)])
    assert out.exit_code == 0, out.output
    flags = [line.split(",")[1] for line in out.output.strip().splitlines()[1:]]
    assert len(flags) == 400
    assert flags.count("1") <= 4


def test_a_time_column_named_as_a_feature_is_still_used(tmp_path: Path) -> None:
    data = tmp_path / "normal.csv"
    _normal(data, "machine,time,seq,vib,temp")
    model = tmp_path / "b.model"
    args = ["anomaly", "fit", "--train", str(data), "--features", "vib,time", "--out", str(model)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.model.json").read_text())["features"] == ["vib", "time"]
