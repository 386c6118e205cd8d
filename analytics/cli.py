"""Analytics' commands: the worker (`wearline analytics`), offline analytics on users' own exports (`wearline rul
fit|predict`, `wearline anomaly fit|score`), `wearline eval` on a held-out simulated fleet, `wearline models ...` and
`wearline bench analytics`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from wearline.command import OFFLINE, check_output, run_async, run_stage, settings_of
from wearline.settings import Settings

__all__ = ["app", "bench"]

app = typer.Typer()
bench = typer.Typer()
_FILES = (
    "Files: CSV or whitespace-separated; empty cells and NA, NaN, nan, null, NULL, N/A, n/a or - are missing values, "
    "any other text in a numeric column is refused with its line."
)
rul_app = typer.Typer(help=f"Remaining useful life from run-to-failure histories. {_FILES}", no_args_is_help=True)
anomaly_app = typer.Typer(help=f"Anomaly detection fit on normal operation. {_FILES}", no_args_is_help=True)
app.add_typer(rul_app, name="rul")
models_app = typer.Typer(help="Models the analytics worker scores with.", no_args_is_help=True)
app.add_typer(anomaly_app, name="anomaly")
app.add_typer(models_app, name="models")

ColsOpt = Annotated[str | None, typer.Option("--columns", help="Column names COLS when FILE has no header.")]


def _cols(value: str | None) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()] if value else []


@app.command()
def analytics(
    ctx: typer.Context,
    worker: Annotated[
        str | None, typer.Option(help="This worker's name among several (default: host:pid:random).")
    ] = None,
) -> None:
    """Score new readings, record anomalies and RUL estimates; several workers split the machines."""
    from analytics import run_analytics

    async def main(s: Settings, stop: asyncio.Event) -> None:
        await run_analytics(s, stop, worker=worker)

    settings = settings_of(ctx)
    run_stage(ctx, "analytics", main, settings.analytics.metrics_port)


@rul_app.command("fit")
def rul_fit(
    ctx: typer.Context,
    train: Annotated[Path, typer.Option(help="Run-to-failure histories: each unit's rows end at its failure.")],
    unit: Annotated[str, typer.Option(help="Column naming the unit (machine, engine, bearing).")],
    time: Annotated[str, typer.Option(help="Column of time: hours, or timestamps.")],
    out: Annotated[Path, typer.Option(help="Model file to write (plus MODEL.json with its metadata).")],
    features: Annotated[
        str | None, typer.Option(help="Sensor columns COLS (default: every other numeric one).")
    ] = None,
    condition: Annotated[str | None, typer.Option(help="Operating-condition columns COLS.")] = None,
    by: Annotated[str | None, typer.Option(help="Fit one model per value of this column (e.g. machine_type).")] = None,
    columns: ColsOpt = None,
    model: Annotated[str, typer.Option(help="gbm: gradient boosting of the capped remaining life.")] = "gbm",
    coverage: Annotated[float, typer.Option(min=0.5, max=0.99, help="Prediction interval coverage.")] = 0.9,
    cap_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Cap the remaining life the model learns at this share of the mean life (0: no cap); wear shows "
            "only after an onset. Stated in the metadata as rul_cap.",
        ),
    ] = 0.6,
    seed: int = 0,
) -> None:
    """Fit RUL models on run-to-failure histories; retraining is running this again (a new version)."""
    from analytics import RulModel, cv_line, read_table, save_model
    from wearline.progress import progress

    settings_of(ctx, needs=OFFLINE)
    if model == "trend":
        raise typer.BadParameter(
            "trend was removed: it never beat gbm (issue 13; docs/analytics.md, RUL models); use gbm",
            param_hint="--model",
        )
    if model != "gbm":
        raise typer.BadParameter(f"must be gbm, not {model!r}", param_hint="--model")
    check_output(out, "--out")
    with progress(f"reading {train.name}") as bar:
        table = read_table(train, _cols(columns) or None)
        bar.phase(f"fitting {model} on {len(table):,} rows")
        fitted = RulModel.fit(
            table,
            unit=unit,
            time=time,
            features=_cols(features) or None,
            condition=_cols(condition),
            by=by,
            model="gbm",
            coverage=coverage,
            seed=seed,
            params={"cap_share": cap_share},
        )
    meta = save_model(
        fitted,
        out,
        "rul",
        {
            "estimator": model,
            "coverage": coverage,
            "seed": seed,
            "training": {"file": str(train), "rows": len(table), "columns": table.names},
            "unit": unit,
            "time": time,
            "features": fitted.features,
            "condition": fitted.conditions.columns,
            "by": by,
            "groups": {
                g: {"mean_life_hours": round(v, 3), **fitted.estimators[g].summary()}
                for g, v in fitted.life_hours.items()
            },
        },
    )
    typer.echo(
        f"wrote {out} version {meta['version']}: {len(fitted.features)} features, groups {sorted(fitted.life_hours)}"
    )
    for g in fitted.life_hours:
        typer.echo(cv_line(g, fitted.estimators[g].summary(), time))


@rul_app.command("predict")
def rul_predict(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="A model written by `wearline rul fit`.")],
    data: Annotated[Path, typer.Option(help="Histories of units still running (same columns as training).")],
    out: Annotated[Path | None, typer.Option(help="CSV to write (default: standard output).")] = None,
    columns: ColsOpt = None,
) -> None:
    """One row per unit: unit, rul, lower, upper, at the unit's last time."""
    from analytics import RulModel, load_model, read_table, write_rows

    settings_of(ctx, needs=OFFLINE)
    if out is not None:
        check_output(out, "--out")
    fitted, _ = load_model(model, "rul")
    assert isinstance(fitted, RulModel)
    preds = fitted.predict(read_table(data, _cols(columns) or None))
    text = write_rows(
        out, ["unit", "time", "rul", "lower", "upper"], [[p.unit, p.time, p.rul, p.lower, p.upper] for p in preds]
    )
    if out is None:
        typer.echo(text, nl=False)


@anomaly_app.command("fit")
def anomaly_fit(
    ctx: typer.Context,
    train: Annotated[Path, typer.Option(help="Normal operation only; a few hundred rows are enough.")],
    out: Annotated[Path, typer.Option(help="Model file to write (plus MODEL.json with its metadata).")],
    features: Annotated[str | None, typer.Option(help="Sensor columns COLS (default: every numeric one).")] = None,
    condition: Annotated[str | None, typer.Option(help="Operating-condition columns COLS.")] = None,
    columns: ColsOpt = None,
    detector: Annotated[str, typer.Option(help="knn, mahalanobis, pca, iforest or ewma.")] = "knn",
    persistence: Annotated[int, typer.Option(min=1, help="Consecutive rows above threshold to flag.")] = 1,
    unit: Annotated[
        str | None,
        typer.Option(help="Column naming the unit (machine): each unit's rows are a stream of their own."),
    ] = None,
    changes: Annotated[
        bool, typer.Option(help="With --unit: also score each sensor's change from the row before.")
    ] = True,
    seed: int = 0,
    target: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of normal rows that may score above the threshold (0.001: one in 1,000)."
        ),
    ] = 0.001,
) -> None:
    """Fit a detector on normal operation and pick its threshold from held-out normal rows."""
    from analytics import DETECTORS, AnomalyModel, read_table, save_model
    from wearline.progress import progress

    settings_of(ctx, needs=OFFLINE)
    if detector not in DETECTORS:
        raise typer.BadParameter(f"must be one of {', '.join(DETECTORS)}, not {detector!r}", param_hint="--detector")
    check_output(out, "--out")
    with progress(f"reading {train.name}") as bar:
        table = read_table(train, _cols(columns) or None)
        bar.phase(f"fitting {detector} on {len(table):,} rows")
        fitted = AnomalyModel.fit(
            table,
            features=_cols(features) or None,
            condition=_cols(condition),
            detector=detector,  # type: ignore[arg-type]
            persistence=persistence,
            unit=unit,
            changes=changes,
            seed=seed,
            target=target,
        )
    meta = save_model(
        fitted,
        out,
        "anomaly",
        {
            "detector": detector,
            "threshold": fitted.detector.threshold,
            "threshold_method": fitted.detector.method,
            "false_alarm_target": target,
            "persistence": persistence,
            "unit": unit,
            "changes": fitted.changes,
            "seed": seed,
            "training": {"file": str(train), "rows": len(table), "columns": table.names},
            "features": fitted.features,
            "condition": fitted.condition,
        },
    )
    typer.echo(f"wrote {out} version {meta['version']}: threshold {fitted.detector.threshold:.4g} on {len(table)} rows")


@anomaly_app.command("score")
def anomaly_score(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="A model written by `wearline anomaly fit`.")],
    data: Annotated[Path, typer.Option(help="Rows to score, in time order.")],
    out: Annotated[Path | None, typer.Option(help="CSV to write (default: standard output).")] = None,
    columns: ColsOpt = None,
) -> None:
    """Per row: score, flag (1 = anomalous) and, for flagged rows, the sensors that drove it (;-separated)."""
    from analytics import AnomalyModel, load_model, read_table, write_rows

    settings_of(ctx, needs=OFFLINE)
    if out is not None:
        check_output(out, "--out")
    fitted, _ = load_model(model, "anomaly")
    assert isinstance(fitted, AnomalyModel)
    table = read_table(data, _cols(columns) or None)
    scores, flags = fitted.score(table)
    drivers = fitted.drivers(table)
    rows = [[float(s), int(f), ";".join(d) if f else ""] for s, f, d in zip(scores, flags, drivers, strict=True)]
    text = write_rows(out, ["score", "flag", "sensors"], rows)
    if out is None:
        typer.echo(text, nl=False)


@bench.command("analytics")
def bench_analytics(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Machines in the fleet RUL refresh.")] = 10_000,
    rows: Annotated[int, typer.Option(min=1, help="Rows per streaming scoring batch.")] = 200_000,
    sensors: Annotated[int, typer.Option(min=1, max=1000, help="Sensors per row.")] = 5,
    history: Annotated[int, typer.Option(min=2, help="Rows of history per machine for the RUL refresh.")] = 50,
    seed: int = 0,
) -> None:
    """Scoring throughput of every detector (readings = rows x sensors) and a fleet RUL refresh; ends with JSON."""
    from analytics import run_bench
    from wearline.progress import progress

    settings_of(ctx, needs=OFFLINE)
    with progress("benchmark") as bar:
        run_bench(machines=machines, rows=rows, sensors=sensors, history=history, seed=seed, echo=typer.echo, bar=bar)


@models_app.command("register")
def models_register(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="A model written by `wearline rul fit` or `wearline anomaly fit`.")],
    machine_type: Annotated[str, typer.Option(help="Machine type the worker should use it for.")],
) -> None:
    """Store a model in the database; the worker uses the newest version per machine type from its next pass."""
    from analytics import ModelError, read_model_file, register_model, unusable_for_type
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx)
    blob, meta = read_model_file(model)

    async def store() -> str:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, settings.database.schema_name)
            why = await unusable_for_type(conn, meta, machine_type)
            if why is not None:
                raise ModelError(f"model {model} not registered: {why}")
            version = await register_model(conn, blob, meta, machine_type)
            await conn.commit()
            return version

    typer.echo(f"registered {meta['kind']} model {run_async(store())} for machine type {machine_type}")


@models_app.command("convert")
def models_convert(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Argument(help="A model file of format 1 (a pickle, from before Wearline refused them).")
    ],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle", help="Confirm that you know where the file comes from: unpickling runs its code."
        ),
    ] = False,
) -> None:
    """Rewrite an old pickled model in the safe format (skops), keeping its version and metadata."""
    from analytics import ModelError, convert_pickle

    settings_of(ctx, needs={"log"})
    if not trust_pickle:
        raise ModelError(
            f"{model}: converting unpickles the file, which runs any code in it; add --trust-pickle if you wrote it "
            "(or fit the model again)"
        )
    meta = convert_pickle(model)
    typer.echo(f"converted {model} ({meta['kind']} model {meta['version']}) to format {meta['format']}")


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only anomaly or rul models.")] = None,
    machine_type: Annotated[str | None, typer.Option(help="Only models for this machine type.")] = None,
) -> None:
    """Registered models, newest first per kind and machine type; `*` marks the one the worker uses."""
    from analytics import ModelError, RegisteredModel, list_models
    from wearline.db import connect, require_migrated

    if kind not in (None, "anomaly", "rul"):
        raise ModelError(f"--kind {kind!r}: must be anomaly or rul")
    settings = settings_of(ctx, needs={"log", "database"})

    async def fetch() -> list[RegisteredModel]:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, settings.database.schema_name)
            return await list_models(conn, kind=kind, machine_type=machine_type)

    models = run_async(fetch())
    if not models:
        typer.echo(
            f"no registered models in schema {settings.database.schema_name}"
            + ("" if kind is None and machine_type is None else " match these filters")
            + "; add one with `wearline models register`"
        )
        return
    typer.echo(
        f"  {'kind':<8} {'machine type':<20} {'version':<26} {'method':<12} {'registered (UTC)':<19} {'size':>10}"
    )
    for m in models:
        typer.echo(
            f"{'*' if m.in_use else ' '} {m.kind:<8} {m.machine_type:<20} {m.version:<26} {m.method:<12} "
            f"{m.registered_at:%Y-%m-%d %H:%M:%S} {m.size_bytes:>8,} B"
        )
    typer.echo("*: in use, the newest of its kind for its machine type (what the worker loads)")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with train.csv, train_truth.csv, test.csv, test_rul.csv, test_truth.csv."),
    ] = None,
    cmapss: Annotated[
        Path | None,
        typer.Option(
            help="Instead: a folder of run-to-failure files of C-MAPSS's shape (train_*.txt[.gz]); unit-wise "
            "cross-validation of the RUL model on each."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="With --cmapss: folds of units.")] = 5,
    cuts: Annotated[int, typer.Option(min=1, help="With --cmapss: random cuts per held-out unit.")] = 3,
    repeats: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --cmapss: run the cross-validation this many times (seeds SEED, SEED+1, ...: other folds "
            "and cuts) and report the mean, each seed's figures and the spread.",
        ),
    ] = 1,
    detectors: Annotated[str, typer.Option(help="Detectors to compare COLS.")] = "pca,mahalanobis,knn,ewma",
    models: Annotated[str, typer.Option(help="RUL models to compare COLS (gbm; empty for none).")] = "gbm",
    persistence: Annotated[int, typer.Option(min=1, help="Consecutive rows above threshold to flag.")] = 3,
    grace_h: Annotated[float, typer.Option(help="An alarm this many hours after a fault ends still counts.")] = 24.0,
    rul_cap_share: Annotated[
        float, typer.Option(min=0.0, help="Also report RUL figures capped at this share of the mean training life.")
    ] = 0.5,
    incipient_health: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Alarms outside labelled faults while true health is below this are early, not false.",
        ),
    ] = 0.8,
    normal_share: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="Detectors learn from fault-free training rows in this first share of each life."
        ),
    ] = 0.5,
    changes: Annotated[
        bool, typer.Option(help="Detectors also see each sensor's change from the unit's row before.")
    ] = True,
    seed: int = 0,
) -> None:
    """Anomaly precision/recall/F1, false alarms per machine-day, detection delay; RUL RMSE, MAE, PHM08 score and
    interval coverage on a held-out fleet (--data), or RUL figures cross-validated over the units of run-to-failure
    files (--cmapss): a table, then one JSON object as the last line."""
    import json

    from analytics import evaluate_cmapss, evaluate_dir
    from wearline.progress import progress

    settings_of(ctx, needs=OFFLINE)
    if (data is None) == (cmapss is None):
        raise typer.BadParameter("give one of --data (a simulated fleet) or --cmapss (run-to-failure files)")
    if "trend" in _cols(models):
        raise typer.BadParameter("trend was removed: it never beat gbm (issue 13); use gbm", param_hint="--models")
    if cmapss is not None:
        with progress("reading") as bar:
            cv = evaluate_cmapss(cmapss, folds=folds, cuts=cuts, repeats=repeats, seed=seed, echo=typer.echo, bar=bar)
        typer.echo(json.dumps(cv, sort_keys=True, default=float))
        return
    assert data is not None
    with progress("reading") as bar:
        figures = evaluate_dir(
            data,
            detectors=_cols(detectors),  # type: ignore[arg-type]
            ruls=_cols(models),  # type: ignore[arg-type]
            persistence=persistence,
            grace_h=grace_h,
            rul_cap_share=rul_cap_share,
            incipient_health=incipient_health,
            normal_share=normal_share,
            changes=changes,
            seed=seed,
            echo=typer.echo,
            bar=bar,
        )
    typer.echo(json.dumps(figures, sort_keys=True, default=float))
