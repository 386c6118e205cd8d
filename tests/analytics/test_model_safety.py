"""Loading a model never runs code from it (issue 14, item 4).

A pickle whose ``__reduce__`` calls ``os.system`` ran as root inside the analytics worker within one pass when it
was inserted into ``models``. Models are now skops archives loaded with only Wearline's, scikit-learn's, numpy's and
scipy's types trusted; a pickle, or an archive naming any other type, is refused with a clear error and never run.
Each attack below would create a marker file if its code ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from analytics import ModelError, RulModel, load_model, read_table, save_model
from analytics._registry import ModelCache
from analytics._store import sidecar
from tests.conftest import TEST_DSN, TEST_MQTT
from wearline.db import connect
from wearline.settings import Settings

WEARLINE = str(Path(sys.executable).with_name("wearline"))


class _Attack:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _pickle_attack(marker: Path) -> bytes:
    return pickle.dumps(_Attack(marker))


def _as_model_file(path: Path, blob: bytes, kind: str = "rul") -> Path:
    """``blob`` dressed as a model file: a sidecar whose hash matches, as an attacker with write access makes it."""
    path.write_bytes(blob)
    meta = {"format": 1, "kind": kind, "version": "evil", "sha256": hashlib.sha256(blob).hexdigest()}
    sidecar(path).write_text(json.dumps(meta))
    return path


def _small_rul(tmp_path: Path) -> RulModel:
    rng = np.random.default_rng(5)
    rows = ["unit,time,a,b"]
    for u in range(6):
        life = 60 + 10 * u
        rows += [f"u{u},{h},{h / life + rng.normal(0, 0.05):.4f},{rng.normal():.4f}" for h in range(life)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    # Small (30 trees, 3 folds): the CLI processes below load the archive each time.
    return RulModel.fit(
        read_table(tmp_path / "runs.csv"), unit="unit", time="time", params={"iterations": 30, "folds": 3}
    )


def test_a_pickled_model_file_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _as_model_file(tmp_path / "evil.model", _pickle_attack(marker))
    with pytest.raises(ModelError, match="a pickle \\(format 1\\) can run code when loaded and is refused"):
        load_model(path, "rul")
    assert not marker.exists()


def test_a_skops_archive_naming_a_foreign_type_is_refused_and_never_run(tmp_path: Path) -> None:
    """skops can carry a function (here ``os.system`` inside a scikit-learn transformer); building it is refused
    before any object is made, and the error names the type."""
    marker = tmp_path / "pwned"
    blob = sio.dumps(FunctionTransformer(func=os.system, kw_args={}))
    path = _as_model_file(tmp_path / "evil.model", blob)
    with pytest.raises(ModelError) as exc:
        load_model(path, "rul")
    print(exc.value)
    assert "refused, it would build types a Wearline model never holds" in str(exc.value)
    assert "system" in str(exc.value)
    assert not marker.exists()


def test_a_damaged_archive_is_one_clear_error(tmp_path: Path) -> None:
    path = _as_model_file(tmp_path / "broken.model", b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="not a readable model"):
        load_model(path, "rul")


def test_a_model_survives_the_round_trip_with_the_same_predictions(tmp_path: Path) -> None:
    model = _small_rul(tmp_path)
    save_model(model, tmp_path / "r.model", "rul", {})
    assert (tmp_path / "r.model").read_bytes().startswith(b"PK"), "written as a skops archive"
    loaded, meta = load_model(tmp_path / "r.model", "rul")
    assert meta["format"] == 2
    table = read_table(tmp_path / "runs.csv")
    before = model.predict(table)
    after = loaded.predict(table)
    assert [(p.unit, p.rul, p.lower, p.upper) for p in before] == [(p.unit, p.rul, p.lower, p.upper) for p in after]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    host, port = TEST_MQTT.rsplit(":", 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_MQTT__HOST": host,
        "WEARLINE_MQTT__PORT": port,
    }
    return subprocess.run([WEARLINE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_models_convert_needs_the_owners_word_and_then_keeps_version_and_predictions(tmp_path: Path) -> None:
    model = _small_rul(tmp_path)
    old = _as_model_file(tmp_path / "old.model", pickle.dumps(model))
    refused = _cli("models", "convert", str(old))
    assert refused.returncode == 2
    assert "add --trust-pickle if you wrote it" in refused.stderr
    done = _cli("models", "convert", str(old), "--trust-pickle")
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    assert "converted" in done.stdout
    loaded, meta = load_model(old, "rul")
    assert (meta["version"], meta["format"], meta["converted_from_pickle"]) == ("evil", 2, True)
    table = read_table(tmp_path / "runs.csv")
    assert [p.rul for p in loaded.predict(table)] == [p.rul for p in model.predict(table)]


def test_registering_a_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _as_model_file(tmp_path / "evil.model", _pickle_attack(marker))
    done = _cli("models", "register", str(path), "--machine-type", "pump")
    print(done.stderr)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "is refused" in done.stderr
    assert not marker.exists()


async def test_a_pickle_written_into_the_models_table_is_refused_by_the_worker_and_never_run(
    migrated: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack of the issue: whoever can write to the database inserts a pickle; the worker logs the refusal
    once, goes on without that model, and the attack's command never runs."""
    marker = tmp_path / "pwned"
    async with await connect(migrated.database) as conn:
        await conn.execute(
            "INSERT INTO models (kind, machine_type, version, metadata, blob) VALUES ('rul', 'pump', 'evil', '{}', %s)",
            [_pickle_attack(marker)],
        )
        await conn.commit()
        cache = ModelCache()
        with caplog.at_level("ERROR", logger="analytics._worker"):
            assert await cache.rul(conn, "pump") is None
            assert await cache.rul(conn, "pump") is None
    refusals = [r.getMessage() for r in caplog.records if "registered rul model evil for pump" in r.getMessage()]
    print(refusals)
    assert len(refusals) == 1, "said once per version, not every pass"
    assert "is refused" in refusals[0]
    assert not marker.exists()
