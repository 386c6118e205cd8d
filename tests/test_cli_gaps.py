"""`wearline models list` and `wearline tickets list` with nothing to list: the real commands on the real database.

The commands run in this process through the same Typer app the installed ``wearline`` runs (a process of its own
costs 3 s of imports), with their settings from the environment as a user's would be.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from analytics import AnomalyModel, RulModel, read_table, save_model
from analytics._registry import ModelCache
from tests.conftest import TEST_DSN, make_settings, unique
from tests.ingest._support import connect_db
from wearline.cli import app
from wearline.db import connect
from wearline.settings import Settings


def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WEARLINE_")}
    env |= {"WEARLINE_DATABASE__DSN": TEST_DSN, "WEARLINE_DATABASE__SCHEMA": settings.database.schema_name}
    result = CliRunner().invoke(app, list(args), env=env)
    print(f"$ wearline {' '.join(args)} -> exit {result.exit_code}\n{result.stdout}{result.stderr}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _anomaly_file(tmp_path: Path, name: str, detector: str, shift: float) -> Path:
    rng = np.random.default_rng(int(shift * 10))
    rows = ["a,b"] + [f"{shift + rng.normal()},{2 * shift + rng.normal()}" for _ in range(120)]
    (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    model = AnomalyModel.fit(read_table(tmp_path / f"{name}.csv"), detector=detector)  # type: ignore[arg-type]
    save_model(model, tmp_path / f"{name}.model", "anomaly", {"detector": detector})
    return tmp_path / f"{name}.model"


def _rul_file(tmp_path: Path) -> Path:
    rows = ["unit,time,s"] + [f"u{u},{h},{h / (100 + 20 * u)}" for u in range(4) for h in range(100 + 20 * u + 1)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    model = RulModel.fit(read_table(tmp_path / "runs.csv"), unit="unit", time="time")
    save_model(model, tmp_path / "r.model", "rul", {"estimator": "gbm"})
    return tmp_path / "r.model"


def test_models_list_marks_the_newest_per_kind_and_type_as_in_use(migrated: Settings, tmp_path: Path) -> None:
    assert _cli(migrated, "models", "list")[1].startswith(
        f"no registered models in schema {migrated.database.schema_name}"
    )
    files = [
        ("pump", _anomaly_file(tmp_path, "p1", "mahalanobis", 1.0)),
        ("pump", _anomaly_file(tmp_path, "p2", "knn", 2.0)),
        ("fan", _anomaly_file(tmp_path, "f1", "pca", 3.0)),
        ("pump", _rul_file(tmp_path)),
    ]
    for machine_type, path in files:
        code, out, _ = _cli(migrated, "models", "register", str(path), "--machine-type", machine_type)
        assert code == 0, out

    code, out, _ = _cli(migrated, "models", "list")
    assert code == 0
    lines = [line for line in out.splitlines()[1:] if line[:2] in ("* ", "  ")]
    rows = [(line[0] == "*", line[2:].split()) for line in lines]
    # kind, machine type, version, method, date, time, size, "B"
    got = [(star, f[0], f[1], f[3]) for star, f in rows]
    assert got == [
        (True, "anomaly", "fan", "pca"),
        (True, "anomaly", "pump", "knn"),  # registered after mahalanobis: newest wins
        (False, "anomaly", "pump", "mahalanobis"),
        (True, "rul", "pump", "gbm"),
    ]
    sizes = {f[3]: int(f[6].replace(",", "")) for _, f in rows}
    assert sizes["knn"] == (tmp_path / "p2.model").stat().st_size

    async def worker_uses() -> str | None:
        async with await connect(migrated.database) as conn:
            got = await ModelCache().anomaly(conn, "pump")
            return got[0] if got else None

    starred = next(f[2] for star, f in rows if star and f[1] == "pump" and f[0] == "anomaly")
    assert asyncio.run(worker_uses()) == starred  # "in use" is what the worker loads

    only = _cli(migrated, "models", "list", "--kind", "rul")[1]
    assert "gbm" in only
    assert "knn" not in only
    none = _cli(migrated, "models", "list", "--machine-type", "compressor")[1]
    assert "match these filters" in none
    code, _, err = _cli(migrated, "models", "list", "--kind", "tree")
    assert code == 2
    assert "error: --kind 'tree': must be anomaly or rul" in err


def test_tickets_list_says_when_there_are_none(migrated: Settings) -> None:
    schema = migrated.database.schema_name
    assert _cli(migrated, "tickets", "list")[1].startswith(f"no live tickets in schema {schema}")
    assert _cli(migrated, "tickets", "list", "--all")[1] == f"no tickets in schema {schema}\n"
    with connect_db(schema) as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site1' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line1' FROM s RETURNING line_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name) SELECT tenant_id, line_id, 'pump-1' FROM t, l
                          RETURNING machine_id, tenant_id)
               INSERT INTO tickets (tenant_id, machine_id, reason, priority, status, title, first_seen, last_seen)
               SELECT tenant_id, machine_id, 'anomaly', 2, 'resolved', 'Abnormal vibration', now(), now() FROM m"""
        )
    # A resolved ticket is not live: still none by default, listed with --all.
    assert _cli(migrated, "tickets", "list")[1].startswith(f"no live tickets in schema {schema}")
    out = _cli(migrated, "tickets", "list", "--all")[1]
    assert "resolved" in out
    assert "Abnormal vibration" in out
    assert "no tickets" not in out
    assert _cli(migrated, "tickets", "list", "--all", "--tenant", "beta")[1].startswith(
        f"no tickets for tenant beta in schema {schema}"
    )


@pytest.mark.parametrize("command", [("models", "list"), ("tickets", "list")])
def test_a_schema_never_migrated_is_one_line(schema: str, command: tuple[str, str]) -> None:
    settings = make_settings(schema, unique("wlt/"))
    code, _, err = _cli(settings, *command)
    assert code == 2
    assert err.count("error:") == 1
    assert settings.database.schema_name in err
    assert "wearline db migrate" in err


@pytest.mark.parametrize(
    "command", [("dead-letters", "list"), ("dead-letters", "replay"), ("models", "list"), ("tickets", "list")]
)
def test_help_renders(command: tuple[str, str]) -> None:
    # Typer renders help through rich markup, where a usage such as TENANT[/SITE] is a malformed tag: a traceback.
    result = CliRunner().invoke(app, [*command, "--help"], prog_name="wearline")
    assert result.exit_code == 0, result.output
    assert f"Usage: wearline {' '.join(command)}" in " ".join(result.stdout.split())
