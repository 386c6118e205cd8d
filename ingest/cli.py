"""Ingest's commands: `wearline ingest` (the stage), `wearline dead-letters list|replay` and `wearline bench ingest`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wearline.command import run_async, run_stage, settings_of
from wearline.settings import Settings

if TYPE_CHECKING:
    from ingest import DeadLetterFilter, StoredDeadLetter

__all__ = ["app", "bench"]

app = typer.Typer()
bench = typer.Typer()
dead_letters_app = typer.Typer(
    help="Messages ingest refused, kept with their reason: list and replay.", no_args_is_help=True
)
app.add_typer(dead_letters_app, name="dead-letters")


@app.command()
def ingest(
    ctx: typer.Context,
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (default: mqtt.client_id).")] = None,
) -> None:
    """Subscribe to telemetry and commit it to the database (QoS 1, acknowledged after commit)."""
    from ingest import freeze_start_up, run_ingest

    settings = settings_of(ctx)

    async def main(s: Settings, stop: asyncio.Event) -> None:
        freeze_start_up()
        await run_ingest(s, stop, client_id=client_id)

    run_stage(ctx, "ingest", main, settings.ingest.metrics_port)


@bench.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Ingest worker processes (one shared subscription).")] = 1,
    machines: Annotated[int, typer.Option(min=1, help="Machines in the published fleet.")] = 1000,
    sensors: Annotated[int, typer.Option(min=1, max=256, help="Sensors per machine.")] = 10,
    profile: Annotated[
        list[int] | None,
        typer.Option(help="Readings per message; repeat for several profiles (default: 10 and 100)."),
    ] = None,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of publishing per profile.")] = 60.0,
    rate: Annotated[float, typer.Option(min=0, help="Messages/s offered; 0 publishes as fast as it can.")] = 0.0,
    cprofile: Annotated[
        Path | None, typer.Option(help="Directory for each worker's cProfile statistics (slows workers down).")
    ] = None,
    sparkplug: Annotated[
        bool, typer.Option(help="Also run each profile as Sparkplug B edge nodes (DDATA by alias), beside JSON.")
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of a broker to publish to instead of our own (topics under topic_prefix)."),
    ] = None,
    broker_pid: Annotated[int | None, typer.Option(help="That broker's process, for its CPU (same machine).")] = None,
    count_dsn: Annotated[
        str | None, typer.Option(help="Database of another service to count committed readings in (with --count-sql).")
    ] = None,
    count_sql: Annotated[
        str | None,
        typer.Option(help="Query answering the other service's readings so far, e.g. SELECT count(*) FROM t."),
    ] = None,
    peer_pid: Annotated[
        list[int] | None, typer.Option(help="A process of the other service, for its CPU and its database backends.")
    ] = None,
    backlog: Annotated[
        int,
        typer.Option(
            min=0,
            help="Time a drain instead: kill -9 the registered workers, queue this many messages for their sessions, "
            "restart them and time them until the last commit.",
        ),
    ] = 0,
) -> None:
    """Start WORKERS ingest processes, our own Mosquitto (shipped config) and schema; publish from another process.

    Prints offered and committed readings/s side by side, latency percentiles, CPU per process and per message
    (workers, broker, database backends, publisher), peak RSS per worker and loss, then one JSON line with every
    figure. Broker protocol and batching come from the settings (``WEARLINE_MQTT__PROTOCOL``,
    ``WEARLINE_INGEST__*``). With ``--broker``, ``--count-dsn`` and ``--count-sql`` the same publisher measures
    another service (Node-RED, Telegraf) instead of Wearline's workers: see docs/ingest.md. With ``--backlog N``
    each profile is a drain of N queued messages instead of ``--duration`` seconds of publishing.
    """
    from ingest import BenchExternal, check_bench_external, parse_bench_broker, run_bench

    settings = settings_of(ctx)
    ext = BenchExternal(
        broker=parse_bench_broker(broker) if broker is not None else None,
        broker_pid=broker_pid,
        count_dsn=count_dsn,
        count_sql=count_sql,
        peer_pids=tuple(peer_pid or ()),
    )
    # Before any profile runs: a refusal must not come after a first profile's minute of publishing.
    check_bench_external(ext, sparkplug=sparkplug, cprofile=cprofile is not None, backlog=backlog)
    profiles = profile or [10, 100]
    for p in profiles:
        if p % sensors:
            raise typer.BadParameter(f"profile {p} is not a multiple of --sensors {sensors}", param_hint="--profile")
    ing = settings.ingest
    typer.echo(
        f"settings: workers={workers} machines={machines} sensors={sensors} profiles={profiles} "
        + (f"backlog={backlog} messages " if backlog else f"duration={duration}s ")
        + f"rate={rate or 'max'} msg/s protocol=MQTT {settings.mqtt.protocol} batch_max_messages={ing.batch_max_messages} "
        f"batch_max_delay_ms={ing.batch_max_delay_ms} receive_maximum={ing.receive_maximum} "
        f"database={settings.database.dsn.split('@')[-1]} (own schema) "
        + (
            f"broker={ext.broker_label()} prefix={settings.topic_prefix}"
            if ext.broker
            else "broker=own mosquitto, shipped config"
        )
        + (" committed=counted by --count-sql (no Wearline worker)" if ext.peer else "")
    )
    results = []
    for p, spb in [(p, spb) for p in profiles for spb in ([False, True] if sparkplug else [False])]:
        r = run_bench(
            settings,
            workers=workers,
            machines=machines,
            sensors=sensors,
            samples_per_message=p // sensors,
            duration_s=duration,
            rate=rate,
            cprofile_to=cprofile,
            sparkplug=spb,
            external=ext,
            backlog=backlog,
        )
        results.append(r)
        if backlog:
            what = (
                f"backlog of {r.messages:,} messages queued in {r.duration_s:.1f} s, drained at "
                f"{r.committed_readings_per_s:>9,.0f} readings/s in {r.cpu_window_s:.1f} s (restart included: first "
                f"commit after {r.first_commit_s} s)"
            )
        else:
            latency = (
                "latency not measured (the other service's commit times are unknown)"
                if ext.peer
                else f"latency p50/p95/p99 {r.latency_p50_ms:.0f}/{r.latency_p95_ms:.0f}/{r.latency_p99_ms:.0f} ms"
            )
            what = (
                f"offered {r.offered_readings_per_s:>9,.0f}/s  committed {r.committed_readings_per_s:>9,.0f}/s  "
                f"{latency}"
            )
        typer.echo(f"{'sparkplug ' if spb else ''}profile {p:>4} readings/msg: {what}  lost {r.lost_readings}")
        typer.echo(
            f"  cpu: publisher {r.publisher.cpu_s:.1f} s, broker {r.broker_cpu_s:.1f} s, workers "
            + ", ".join(
                f"{w.cpu_s:.1f} s (peak RSS {w.peak_rss_mb:.0f} MB, {w.readings_per_batch:.0f} readings/batch)"
                for w in r.workers_use
            )
        )
        typer.echo(
            f"  cpu per message (us) over {r.cpu_window_s:.1f} s, {r.messages:,} messages: "
            + ", ".join(
                f"{k} {v:.1f} ({r.cpu_us_per_reading[k]:.2f}/reading)"
                for k, v in r.cpu_us_per_message.items()
                if v is not None
            )
            + f"; database: {r.database_cpu}"
        )
    typer.echo(json.dumps({"bench": "ingest", "results": [asdict(r) for r in results]}))


ReasonOpt = Annotated[
    list[str] | None,
    typer.Option("--reason", help="Only this reason (repeat for several): unknown_machine, ts_future..."),
]
GatewayOpt = Annotated[
    str | None,
    typer.Option(help="Only this gateway's topics: TENANT, TENANT/SITE, and so on down to TENANT/SITE/LINE/MACHINE."),
]
TopicOpt = Annotated[str | None, typer.Option(help="Only topics matching this MQTT filter (+ and #), prefix included.")]
SinceOpt = Annotated[str | None, typer.Option(help="Received at or after: 30m, 1h, 2d, 1w ago, or an ISO time (UTC).")]
UntilOpt = Annotated[str | None, typer.Option(help="Received before: a duration ago or an ISO time (UTC).")]


def _filter(
    reason: list[str] | None, gateway: str | None, topic: str | None, since: str | None, until: str | None
) -> DeadLetterFilter:
    from ingest import DeadLetterFilter, parse_time

    return DeadLetterFilter(
        reasons=tuple(reason or ()),
        gateway=gateway,
        topic=topic,
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(d: StoredDeadLetter) -> str:
    notes = []
    if d.truncated:
        notes.append(f"kept {d.stored_bytes} B")
    if d.replayed_at is not None:
        notes.append(f"replayed {d.replayed_at:%Y-%m-%d %H:%M:%S}")
    extra = f"  [{'; '.join(notes)}]" if notes else ""
    return (
        f"#{d.dead_letter_id:<7} {d.received_at:%Y-%m-%d %H:%M:%S}  {d.reason:<19} {d.size:>8} B  {d.topic}  "
        f"{_clip(d.detail, 100)}{extra}"
    )


def _show(d: StoredDeadLetter) -> None:
    typer.echo(f"dead letter #{d.dead_letter_id}")
    typer.echo(f"received:  {d.received_at:%Y-%m-%d %H:%M:%S.%f} UTC")
    typer.echo(f"reason:    {d.reason}")
    typer.echo(f"topic:     {d.topic}")
    typer.echo(f"detail:    {d.detail}")
    if d.truncated:
        typer.echo(f"size:      {d.size} bytes, only the first {d.stored_bytes} kept (cannot be replayed)")
    else:
        typer.echo(f"size:      {d.size} bytes")
    typer.echo(f"replayed:  {f'{d.replayed_at:%Y-%m-%d %H:%M:%S} UTC' if d.replayed_at else 'no'}")
    payload = d.payload or b""
    try:
        text = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        kind = "JSON"
    except (ValueError, UnicodeDecodeError):
        try:
            text, kind = payload.decode("utf-8"), "text, not JSON"
        except UnicodeDecodeError:
            text, kind = repr(payload), "binary, shown as Python bytes"
    typer.echo(f"payload ({kind}):")
    typer.echo(text)


@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    gateway: GatewayOpt = None,
    topic: TopicOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, newest first.")] = 50,
    show: Annotated[int | None, typer.Option("--show", help="Print this dead letter whole, payload included.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on standard output, for scripts.")] = False,
) -> None:
    """Dead letters, newest first: time, reason, topic, payload size and detail; by reason when unfiltered."""
    from ingest import count_dead_letters, dead_letter_summary, get_dead_letter, list_dead_letters
    from wearline.db import connect

    settings = settings_of(ctx, needs={"log", "database", "topic_prefix"})
    schema = settings.database.schema_name
    filt = None if show is not None else _filter(reason, gateway, topic, since, until)

    async def run() -> None:
        async with await connect(settings.database) as conn:
            if filt is None:
                assert show is not None
                one = await get_dead_letter(conn, schema, show)
                if as_json:
                    typer.echo(json.dumps(one.as_json(), ensure_ascii=False))
                else:
                    _show(one)
                return
            rows = await list_dead_letters(conn, schema, settings.topic_prefix, filt, limit=limit)
            total = await count_dead_letters(conn, schema, settings.topic_prefix, filt)
            summary = await dead_letter_summary(conn, schema) if filt.empty else None
        if as_json:
            doc: dict[str, object] = {
                "schema": schema,
                "matching": total,
                "dead_letters": [d.as_json() for d in rows],
            }
            if summary is not None:
                doc["summary"] = [r.as_json() for r in summary]
            typer.echo(json.dumps(doc, ensure_ascii=False))
            return
        if total == 0:
            typer.echo(f"no dead letters in schema {schema}" + ("" if filt.empty else " match these filters"))
            return
        if summary is not None:
            typer.echo(f"dead letters in schema {schema}, by reason:")
            for r in summary:
                typer.echo(
                    f"  {r.reason:<19} {r.count:>9}  ({r.pending} not replayed)  "
                    f"{r.first:%Y-%m-%d %H:%M:%S} .. {r.last:%Y-%m-%d %H:%M:%S}"
                )
            typer.echo(f"  {'total':<19} {sum(r.count for r in summary):>9}")
            typer.echo("")
        typer.echo(f"{'id':<8} {'received (UTC)':<19}  {'reason':<19} {'size':>10}  topic  detail")
        for d in rows:
            typer.echo(_line(d))
        if total > len(rows):
            typer.echo(f"(newest {len(rows)} of {total}; --limit shows more, --show ID one whole)")

    run_async(run())


@dead_letters_app.command("replay")
def dead_letters_replay(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    gateway: GatewayOpt = None,
    topic: TopicOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    id_: Annotated[list[int] | None, typer.Option("--id", help="Only this dead letter (repeat for several).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter not replayed yet (no filter needed).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Count what would be replayed; send and mark nothing.")] = False,
) -> None:
    """Publish stored payloads back to their own topics (QoS 1) after fixing their cause, e.g. registering a machine.

    Each is marked replayed once the broker acknowledges it; ingest takes it from there, and one it refuses again
    becomes a new dead letter. Truncated payloads are skipped. Exit status 1 when any failed or the broker went away.
    """
    from dataclasses import replace

    from ingest import PAYLOAD_REASONS, DeadLetterError, replay_dead_letters

    settings = settings_of(ctx, needs={"log", "database", "mqtt", "topic_prefix"})
    filt = replace(_filter(reason, gateway, topic, since, until), ids=tuple(id_ or ()))
    if filt.empty and not all_:
        raise DeadLetterError(
            "replay needs a filter (--reason, --gateway, --topic, --since, --until, --id) or --all for every one"
        )
    counts = run_async(replay_dead_letters(settings, filt, dry_run=dry_run))
    skipped = f"skipped {counts.truncated} (payload truncated when stored: cannot be replayed)"
    if counts.unfixable:
        typer.echo(
            f"left {counts.unfixable} refused for the payload itself ({', '.join(PAYLOAD_REASONS)}): sending them "
            "again changes nothing; name the reason with --reason to send them anyway"
        )
    if counts.dry_run:
        typer.echo(
            f"dry run: would replay {counts.replayed} and skip {counts.truncated} (payload truncated when stored); "
            "nothing sent or marked"
        )
        return
    typer.echo(f"replayed {counts.replayed}, {skipped}, failed {counts.failed}")
    for why, n in sorted((counts.failures or {}).items()):
        typer.echo(f"  failed: {n} x {why}")
    if counts.stopped is not None:
        typer.echo(f"stopped early ({counts.stopped}): the rest is still pending; run the replay again")
    if counts.failed or counts.stopped is not None:
        raise typer.Exit(1)


gateways_app = typer.Typer(
    help="Gateways: the broker's users, each publishing for one tenant's site; the broker's password and ACL files.",
    no_args_is_help=True,
)
app.add_typer(gateways_app, name="gateways")
PasswordFileOpt = Annotated[
    Path | None, typer.Option(help="Also write the broker's password file here (e.g. /etc/mosquitto/wearline/passwd).")
]
AclFileOpt = Annotated[
    Path | None, typer.Option(help="Also write the broker's ACL file here (e.g. /etc/mosquitto/wearline/acl).")
]


def _gateways_do(ctx: typer.Context, work: Any, password_file: Path | None, acl_file: Path | None) -> Any:
    """``work(conn)`` in one transaction, then the broker's files written from the registry when asked."""
    from ingest import GatewayError, list_gateways, write_broker_files
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx, needs={"log", "database", "topic_prefix"})
    if (password_file is None) != (acl_file is None):
        raise GatewayError("give both --password-file and --acl-file: the broker reads them together")

    async def run() -> Any:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, settings.database.schema_name)
            async with conn.transaction():
                result = await work(conn)
            if password_file is not None and acl_file is not None:
                gateways = await list_gateways(conn, live_only=True)
                write_broker_files(gateways, settings.topic_prefix, password_file=password_file, acl_file=acl_file)
        return result

    return run_async(run())


def _files_written(password_file: Path | None, acl_file: Path | None) -> None:
    from ingest import RELOAD_HINT

    if password_file is not None:
        typer.echo(f"wrote {password_file} and {acl_file}. {RELOAD_HINT}.")
    else:
        typer.echo("the broker does not know yet: wearline gateways files --password-file P --acl-file A, then reload")


@gateways_app.command("add")
def gateways_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Its MQTT user name, and its client certificate's common name.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant it publishes for (created when new).")] = None,
    site: Annotated[str | None, typer.Option(help="The tenant's site it publishes for (created when new).")] = None,
    service: Annotated[
        bool, typer.Option("--service", help="A stage's account instead: reads telemetry, publishes ticket events.")
    ] = False,
    certificate_only: Annotated[
        bool, typer.Option("--certificate-only", help="No password: it logs in with a client certificate (CN=NAME).")
    ] = False,
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
) -> None:
    """Add a gateway (or --service account); prints its password once, only its hash is stored."""
    from ingest import add_gateway

    gateway, secret = _gateways_do(
        ctx,
        lambda conn: add_gateway(
            conn, name=name, tenant=tenant, site=site, service=service, password=not certificate_only
        ),
        password_file,
        acl_file,
    )
    scope = "service account" if gateway.kind == "service" else f"gateway for {gateway.tenant}/{gateway.site}"
    typer.echo(f"#{gateway.gateway_id} {gateway.name}: {scope}")
    if secret is not None:
        typer.echo(f"password (shown once; user name {gateway.name}):")
        typer.echo(secret)
    else:
        typer.echo(f"no password: give it a client certificate with CN={gateway.name} signed by the broker's cafile")
    _files_written(password_file, acl_file)


@gateways_app.command("list")
def gateways_list(ctx: typer.Context) -> None:
    """Every gateway and service account: scope, login, creation, revocation."""
    from ingest import list_gateways

    gateways = _gateways_do(ctx, list_gateways, None, None)
    if not gateways:
        typer.echo("no gateways: the broker admits nobody (wearline gateways add NAME --tenant T --site S)")
    for g in gateways:
        scope = "service (all telemetry)" if g.kind == "service" else f"{g.tenant}/{g.site}"
        login = "password" if g.password_hash else "certificate"
        state = f"revoked {g.revoked_at:%Y-%m-%d %H:%M}" if g.revoked_at else "live"
        typer.echo(f"#{g.gateway_id} {g.name:<24} {scope:<32} {login:<11} added {g.created_at:%Y-%m-%d %H:%M} {state}")


@gateways_app.command("revoke")
def gateways_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The live gateway's name.")],
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
) -> None:
    """Revoke a gateway: ingest refuses its site's telemetry within seconds (unless another gateway covers it)."""
    from ingest import revoke_gateway

    _gateways_do(ctx, lambda conn: revoke_gateway(conn, name), password_file, acl_file)
    typer.echo(f"gateway {name} revoked")
    _files_written(password_file, acl_file)


@gateways_app.command("files")
def gateways_files(
    ctx: typer.Context,
    password_file: Annotated[Path, typer.Option(help="The broker's password_file.")],
    acl_file: Annotated[Path, typer.Option(help="The broker's acl_file.")],
) -> None:
    """Write the broker's password and ACL files from the registry (each replaced atomically)."""

    async def nothing(conn: Any) -> None:
        return None

    _gateways_do(ctx, nothing, password_file, acl_file)
    _files_written(password_file, acl_file)
