"""`models register` refuses a model the worker could never use, with the reason, instead of the worker skipping it
on every pass (issue 13, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg

from analytics import RulModel, read_table, save_model
from tests.conftest import TEST_DSN, unique
from wearline.settings import Settings

WEARLINE = str(Path(sys.executable).with_name("wearline"))


SMALL = {"iterations": 30, "folds": 3}


def _model(tmp_path: Path, name: str, condition: str | None) -> Path:
    rng = np.random.default_rng(2)
    rows = ["unit,time,vib,temp,regime"]
    for u in range(5):
        life = 50 + 10 * u
        rows += [f"u{u},{h},{h / life + rng.normal(0, 0.05):.3f},{rng.normal():.3f},{'ab'[h % 2]}" for h in range(life)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    model = RulModel.fit(
        read_table(tmp_path / "runs.csv"),
        unit="unit",
        time="time",
        features=["vib", "temp"],
        condition=[condition] if condition else (),
        params=SMALL,  # each `models register` loads the archive: a small model keeps the test to seconds
    )
    save_model(model, tmp_path / name, "rul", {"features": model.features, "condition": model.conditions.columns})
    return tmp_path / name


def _register(settings: Settings, path: Path, machine_type: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name,
    }
    return subprocess.run(
        [WEARLINE, "models", "register", str(path), "--machine-type", machine_type],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_register_refuses_what_the_worker_could_never_use(migrated: Settings, tmp_path: Path) -> None:
    text = _register(migrated, _model(tmp_path, "text.model", "regime"), "pump")
    print(text.stderr)
    assert text.returncode == 2
    assert "condition column(s) regime are text" in text.stderr
    with psycopg.connect(TEST_DSN, options=f"-c search_path={migrated.database.schema_name}") as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES (%s) RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 's' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'l' FROM s RETURNING line_id),
                    ty AS (INSERT INTO machine_types (name) VALUES ('pump') RETURNING type_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name, type_id)
                          SELECT (SELECT tenant_id FROM t), line_id, 'p1', (SELECT type_id FROM ty) FROM l
                          RETURNING machine_id)
               INSERT INTO sensors (machine_id, position, name) SELECT machine_id, 1, 'vib' FROM m""",
            [unique("acme")],
        )
    plain = _model(tmp_path, "plain.model", None)
    missing = _register(migrated, plain, "pump")
    print(missing.stderr)
    assert missing.returncode == 2
    assert "no pump machine has sensor(s) temp" in missing.stderr
    fresh = _register(migrated, plain, "fan")
    assert fresh.returncode == 0, "a type without machines yet: nothing to check against"
    assert "registered rul model" in fresh.stdout
