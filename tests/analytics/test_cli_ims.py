"""The offline CLI on the real IMS bearing run-to-failure data and on malformed files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from analytics._tabular import _parse_time
from wearline.cli import app

IMS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ims-bearing"
BEARINGS = "Bearing 1,Bearing 2,Bearing 3,Bearing 4"
runner = CliRunner()


def _ims(name: str, drop: int) -> list[list[str]]:
    if not IMS.is_dir():
        pytest.skip(f"the IMS bearing data is not at {IMS} (it lives in the shared data folder next to the repo)")
    with (IMS / name).open() as f:
        rows = list(csv.reader(f))
    return rows[: len(rows) - drop] if drop else rows  # the README: trailing rows after the rig stopped are ~0


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("detector", ["mahalanobis", "knn"])
def test_anomaly_on_ims_test_2_flags_the_end_of_life_not_the_start(tmp_path: Path, detector: str) -> None:
    rows = _ims("ims_2nd_test_mean_abs.csv", drop=2)
    train = _write(tmp_path / "normal.csv", rows[:301])  # header and the first 300 snapshots (about two days)
    data = _write(tmp_path / "all.csv", rows)
    model = tmp_path / "m.model"
    args = ["anomaly", "fit", "--train", str(train), "--features", BEARINGS, "--detector", detector]
    out = _ok([*args, "--out", str(model)])
    assert "threshold" in out
    meta = json.loads((tmp_path / "m.model.json").read_text())
    assert meta["kind"] == "anomaly"
    assert meta["training"]["rows"] == 300
    _ok(["anomaly", "score", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "s.csv")])
    with (tmp_path / "s.csv").open() as f:
        scored = list(csv.DictReader(f))
    flags = np.array([int(r["flag"]) for r in scored])
    assert len(flags) == len(rows) - 1
    n = len(flags)
    assert flags[: n // 2].mean() < 0.01, "false alarms in the healthy first half"
    assert flags[-n // 10 :].mean() > 0.9, "the failing last tenth must be flagged"
    # Bearing 1 is the one that failed (outer race): it must drive the late flags.
    late = [r["sensors"] for r in scored[-n // 10 :] if r["flag"] == "1"]
    assert sum(s.startswith("Bearing 1;") for s in late) > 0.8 * len(late)


def _rul_file(tmp_path: Path) -> tuple[Path, Path, float]:
    """Tests 1 and 3 as training units; test 2 cut at 80 % as the unit to predict, with its true RUL."""
    out_rows = [["unit", "time", "vmax", "vmed"]]
    cut: list[list[str]] = [out_rows[0]]
    true_rul = 0.0
    for unit, name, drop in (("t1", "ims_1st_test_mean_abs.csv", 0), ("t3", "ims_3rd_test_mean_abs.csv", 1),
                             ("t2", "ims_2nd_test_mean_abs.csv", 2)):  # fmt: skip
        rows = _ims(name, drop)[1:]
        vals = np.array([[float(v) for v in r[2:]] for r in rows])
        feats = [[r[1], f"{m:.6f}", f"{d:.6f}"] for r, m, d in zip(rows, vals.max(1), np.median(vals, 1), strict=True)]
        if unit == "t2":
            k = int(len(feats) * 0.8)
            cut += [[unit, *f] for f in feats[:k]]
            true_rul = _parse_time(feats[-1][0], "") - _parse_time(feats[k - 1][0], "")
        else:
            out_rows += [[unit, *f] for f in feats]
    return _write(tmp_path / "train.csv", out_rows), _write(tmp_path / "test.csv", cut), true_rul


def test_rul_on_ims_gives_an_ordered_interval_per_unit(tmp_path: Path) -> None:
    train, test, true_rul = _rul_file(tmp_path)
    path = tmp_path / "rul.model"
    _ok(["rul", "fit", "--train", str(train), "--unit", "unit", "--time", "time", "--out", str(path)])
    meta = json.loads((tmp_path / "rul.model.json").read_text())
    assert meta["features"] == ["vmax", "vmed"]
    assert meta["version"]
    out = _ok(["rul", "predict", "--model", str(path), "--data", str(test)])
    lines = out.strip().splitlines()
    assert lines[0] == "unit,time,rul,lower,upper"
    assert len(lines) == 2
    unit, _, rul, lower, upper = lines[1].split(",")
    assert unit == "t2"
    assert 0 <= float(lower) <= float(rul) <= float(upper)
    assert true_rul > 0  # two training units say little; the check here is that real data goes through


def test_whitespace_file_with_names_on_the_command_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "plain.txt"
    data.write_text("\n".join(" ".join(f"{v:.4f}" for v in row) for row in rng.normal(size=(300, 3))) + "\n")
    model = tmp_path / "w.model"
    _ok(["anomaly", "fit", "--train", str(data), "--columns", "a,b,c", "--out", str(model)])
    out = _ok(["anomaly", "score", "--model", str(model), "--data", str(data), "--columns", "a,b,c"])
    assert out.splitlines()[0] == "score,flag,sensors"
    assert len(out.splitlines()) == 301


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("a,b\n1,2\n3\n", [], "line 3 has 1 fields, expected 2"),
        ("a,b\n1,2\n3,x\n", ["--features", "a,b"], "line 3, column b: 'x' is not a number"),
        ("a,b\n1,2\n", ["--features", "a,zz"], "column(s) zz not found; the columns are: a, b"),
        ("1 2\n3 4\n", [], "looks like data, not a header"),
        ("", [], "is empty"),
    ],
)
def test_bad_files_fail_with_a_message_naming_the_problem(
    tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = runner.invoke(app, ["anomaly", "fit", "--train", str(bad), "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_rul_fit_names_a_missing_unit_column_and_a_tampered_model(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("id,t,x\n1,0,1\n1,1,2\n2,0,1\n2,1,3\n")
    result = runner.invoke(app, ["rul", "fit", "--train", str(f), "--unit", "unit", "--time", "t", "--out", "m"])
    assert result.exit_code == 2
    assert "unit/time column(s) unit not found" in result.output
    model = tmp_path / "ok.model"
    _ok(["rul", "fit", "--train", str(f), "--unit", "id", "--time", "t", "--out", str(model)])
    model.write_bytes(model.read_bytes() + b"x")
    result = runner.invoke(app, ["rul", "predict", "--model", str(model), "--data", str(f)])
    assert result.exit_code == 2
    assert "does not match its sidecar" in result.output
