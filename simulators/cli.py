"""The simulators' commands: `wearline simulate` plays the plant (live over MQTT, or offline to CSV), and
`wearline bench simulate`."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from wearline.command import OFFLINE, check_output, run_stage, settings_of
from wearline.errors import WearlineError
from wearline.settings import Settings

__all__ = ["app", "bench"]

app = typer.Typer()
bench = typer.Typer()


class Mode(StrEnum):
    realtime = "realtime"
    accelerated = "accelerated"
    offline = "offline"
    load = "load"


@app.command()
def simulate(
    ctx: typer.Context,
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML file (fleet, regime, faults, gateways); see docs/simulator.md.")
    ] = None,
    mode: Annotated[
        Mode, typer.Option(help="realtime, accelerated (x --time-scale), offline (CSV) or load.")
    ] = Mode.realtime,
    machines: Annotated[
        int | None, typer.Option(min=1, help="Without --scenario: this many pumps (default 5). With it: ignored.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: the scenario's); same seed, same stream.")
    ] = None,
    time_scale: Annotated[
        float, typer.Option(min=0.001, help="accelerated: simulated seconds per wall second.")
    ] = 60.0,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Samples per machine, then stop (default: run on). accelerated: they end at now."),
    ] = None,
    history: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="accelerated, without --steps: simulated seconds to play before reaching now, then real time "
            "(default: an hour, or until 5 min after the scenario's last injected fault).",
        ),
    ] = None,
    period: Annotated[float | None, typer.Option(min=0.001, help="Simulated seconds between samples.")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Inject a fault: MACHINE:KIND:ONSET_S[:DURATION_S] (KIND: a sensor fault or failure mode), "
            "or MACHINE:ONSET_S for bearing wear."
        ),
    ] = None,
    qos: Annotated[int, typer.Option(min=0, max=1, help="MQTT QoS for telemetry.")] = 1,
    sparkplug: Annotated[
        str | None,
        typer.Option(
            help="Publish as Sparkplug B edge nodes of this group id (one per gateway, a device per machine) "
            "instead of JSON; map it in ingest.sparkplug.groups. See docs/sparkplug.md."
        ),
    ] = None,
    truth_csv: Annotated[Path | None, typer.Option(help="Write the live run's ground truth to this CSV file.")] = None,
    truth_db: Annotated[
        bool, typer.Option(help="Write the live run's ground truth to sim_truth (migrated schema).")
    ] = False,
    out: Annotated[Path, typer.Option(help="offline: directory for the CSV files.")] = Path("sim-data"),
    units: Annotated[int, typer.Option(min=1, help="offline: run-to-failure units in train.csv.")] = 100,
    test_units: Annotated[
        int | None, typer.Option(min=0, help="offline: truncated units in test.csv (default: --units).")
    ] = None,
    duration: Annotated[float, typer.Option(min=1, max=300, help="load: seconds to publish.")] = 20.0,
    samples_per_row: Annotated[
        int,
        typer.Option(
            min=1,
            max=3600,
            help="offline: each row is the mean of this many samples over its hour (what the analytics worker "
            "gives registered models), not one snapshot.",
        ),
    ] = 1,
) -> None:
    """Simulate a fleet: machines with physics, degradation, faults and gateways; ground truth on the side.

    Live modes publish to the broker in the settings under topic_prefix; offline writes train/test CSV files.
    """
    from simulators import FaultSpec, MachineGroup, Scenario, ScenarioError, load_scenario

    try:
        sc = (
            load_scenario(scenario)
            if scenario is not None
            else Scenario(groups=(MachineGroup("centrifugal_pump", machines or 5),))
        )
        if period is not None:
            sc = sc.replace(sample_period_s=period)
        extra = []
        for f in fault or []:
            parts = f.split(":")
            if len(parts) == 2:  # the skeleton's MACHINE:ONSET_S, a bearing fault that fails in two minutes
                parts = [parts[0], "bearing_wear", parts[1], "120"]
            usage = f"--fault {f!r}: expected MACHINE:KIND:ONSET_S[:DURATION_S], e.g. 2:bearing_wear:600:300"
            if len(parts) not in (3, 4):
                raise typer.BadParameter(usage)
            target: int | str = int(parts[0]) if parts[0].isdigit() else parts[0]
            try:
                onset, length = float(parts[2]), float(parts[3]) if len(parts) == 4 else 60.0
            except ValueError as exc:
                raise typer.BadParameter(usage) from exc
            extra.append(FaultSpec(target, parts[1], onset, length))
        sc = sc.replace(faults=(*sc.faults, *extra))
    except (ScenarioError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    run_seed = sc.seed if seed is None else seed

    if sparkplug is not None:
        if mode in (Mode.offline, Mode.load):
            raise typer.BadParameter(f"only for the live modes, not {mode.value}", param_hint="--sparkplug")
        if not sparkplug or any(c in sparkplug for c in "/+#") or sparkplug == "STATE":
            raise typer.BadParameter(f"{sparkplug!r} is not a Sparkplug group id", param_hint="--sparkplug")
    if mode is Mode.offline:
        from simulators import write_offline_dataset
        from wearline.progress import progress

        settings_of(ctx, needs=OFFLINE)
        check_output(out, "--out", folder=True)
        started = time.monotonic()
        with progress("simulating") as bar:
            ds = write_offline_dataset(
                sc, out, units=units, seed=run_seed, test_units=test_units, samples_per_row=samples_per_row, bar=bar
            )
        typer.echo(
            f"wrote {ds.train_units} train units ({ds.train_rows} rows) and {ds.test_units} test units "
            f"({ds.test_rows} rows) to {out}/ in {time.monotonic() - started:.1f} s"
        )
        return
    if mode is Mode.load:
        from simulators import run_load

        settings = settings_of(ctx)
        result = run_load(
            settings.mqtt,
            f"{settings.topic_prefix}-load-{int(time.time())}",
            sc,
            machines=machines or 10_000,
            duration_s=duration,
            seed=run_seed,
        )
        typer.echo(result.text())
        typer.echo(result.json())
        return

    scale = 1.0 if mode is Mode.realtime else time_scale

    from simulators import plan_live

    # Ingest refuses samples older than its max_past_days: an accelerated stretch must not start before that.
    max_past_s = settings_of(ctx).ingest.max_past_days * 86400
    now_ms = int(time.time() * 1000)
    planned = plan_live(sc, time_scale=scale, steps=steps, history_s=history, now_ms=now_ms)
    span, ago_s = planned.accelerated_s, (now_ms - planned.start_ms) / 1000
    if ago_s > max_past_s:
        if steps is not None:
            option = f"--steps {steps}"
        else:
            option = f"--history {history:g}" if history is not None else f"--history (default {span:g} s here)"
        raise WearlineError(
            f"{option}: the accelerated stretch would start {ago_s:,.0f} s ago, before ingest keeps "
            f"readings (ingest.max_past_days = {max_past_s / 86400:g}, WEARLINE_INGEST__MAX_PAST_DAYS): shorten it"
        )

    async def main(s: Settings, stop: asyncio.Event) -> None:
        from simulators import open_truth, publish_fleet
        from wearline.db import migrate

        # Accelerated time plays recent history, so that no sample is stamped ahead of the wall clock (ingest
        # would keep it as a ts_future dead letter, not a reading).
        plan = plan_live(sc, time_scale=scale, steps=steps, history_s=history)
        start_ms = plan.start_ms
        typer.echo(plan.describe())
        if truth_db:
            await migrate(s.database)
        async with open_truth(
            sc, seed=run_seed, start_ms=start_ms, database=s.database if truth_db else None, csv_path=truth_csv
        ) as sink:
            result = await publish_fleet(
                s.mqtt,
                s.topic_prefix,
                sc,
                stop,
                steps=steps,
                time_scale=scale,
                start_ms=start_ms,
                qos=qos,
                seed=run_seed,
                truth=sink if (truth_db or truth_csv) else None,
                sparkplug_group=sparkplug,
            )
        g, b = result.gateways, result.backlog
        typer.echo(
            f"published {result.messages} messages ({result.samples} samples) over {result.steps} steps; "
            f"gateways: {g.outages} outages, {g.replayed} samples replayed, {g.lost} lost, {g.duplicates} duplicates; "
            f"back-pressure: {b.episodes} episodes, {b.seconds:.1f} s, at most {b.peak} messages waiting"
        )

    try:
        run_stage(ctx, "simulate", main, 0, database=False)  # --truth-db migrates in main
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _load(ctx: typer.Context, sc: object, machines: int, duration: float, seed: int, batch: int) -> None:
    from simulators import Scenario, run_load

    assert isinstance(sc, Scenario)
    settings = settings_of(ctx)
    prefix = f"{settings.topic_prefix}-load-{int(time.time())}"
    typer.echo(
        f"load: {machines} machines for {duration:.0f} s at QoS 0, {batch} sample(s) per message, "
        f"mqtt://{settings.mqtt.host}:{settings.mqtt.port} under {prefix}/"
    )
    result = run_load(settings.mqtt, prefix, sc, machines=machines, duration_s=duration, seed=seed, batch_samples=batch)
    typer.echo(result.text())
    typer.echo(result.json())


@bench.command("simulate")
def bench_simulate(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Simulated machines in one process.")] = 10_000,
    duration: Annotated[float, typer.Option(min=1, max=60, help="Seconds to publish.")] = 20.0,
    batch: Annotated[int, typer.Option(min=1, help="Samples per message.")] = 1,
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario whose type mix to scale up (default: all pumps).")
    ] = None,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Publish as fast as one process can at QoS 0 and print messages/s; ends with one JSON line."""
    from simulators import MachineGroup, Scenario, load_scenario

    sc = load_scenario(scenario) if scenario is not None else Scenario(groups=(MachineGroup("centrifugal_pump", 1),))
    _load(ctx, sc, machines, duration, seed, batch)
