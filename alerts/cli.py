"""Alerts' commands: `wearline alerts` (the stage) and `wearline tickets ...`."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from wearline.command import run_async, run_stage, settings_of

__all__ = ["app", "bench"]

app = typer.Typer()
bench = typer.Typer()
tickets_app = typer.Typer(help="Service tickets.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")
tokens_app = typer.Typer(help="API tokens: one tenant each, read-only or read-write.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
webhooks_app = typer.Typer(
    help="Webhooks: every ticket event of a tenant POSTed, signed, to a URL (Wearline's or Alertmanager's format).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")
cmms_app = typer.Typer(
    help="CMMS adapters: a work request in a maintenance system for every new ticket, its status synced back.",
    no_args_is_help=True,
)
app.add_typer(cmms_app, name="cmms")
rules_app = typer.Typer(
    help="Alert rules: check rule files before the alerts stage reloads them.", no_args_is_help=True
)
app.add_typer(rules_app, name="rules")


@app.command()
def alerts(ctx: typer.Context) -> None:
    """Turn anomalies into deduplicated service tickets."""
    from alerts import run_alerts

    settings = settings_of(ctx)
    run_stage(ctx, "alerts", run_alerts, settings.alerts.metrics_port)


@app.command()
def api(ctx: typer.Context) -> None:
    """Serve the REST API for maintenance teams on api.host:api.port (OpenAPI at /docs)."""
    from alerts import serve_api

    settings = settings_of(ctx)
    run_stage(ctx, "api", serve_api, settings.api.metrics_port)


@rules_app.command("check")
def rules_check(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Rule files or folders, in override order (default: the settings' alerts.rules)."),
    ] = None,
) -> None:
    """Validate rule files and list the rules they define; exit 2 naming file, line and key of the first problem."""
    from alerts import load_rules

    settings = settings_of(ctx, needs=frozenset({"alerts"})).alerts
    if files:
        settings = settings.model_copy(update={"rules": files})
    rules = load_rules(settings)
    for i, r in enumerate(rules.rules):
        scope = ", ".join(f"{k}={v}" for k, v in r.where.model_dump(exclude_none=True).items()) or "every machine"
        state = " (built in, from the settings)" if i < 2 else ("" if r.enabled else " (switched off)")
        typer.echo(f"{r.name:<24} {r.kind:<15} {scope}{state}")
    for e in rules.escalations[1:]:
        scope = ", ".join(f"{k}={v}" for k, v in e.where.model_dump(exclude_none=True).items()) or "everywhere"
        typer.echo(f"escalation {scope}: after {e.ack_timeout_s / 60:g} min -> {', '.join(e.levels)}")
    typer.echo(f"ok: {len(rules.rules)} rules ({len(rules.rules) - 2} from {len(rules.files)} file(s))")


@tickets_app.command("list")
def tickets_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tickets.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved and closed tickets.")] = False,
) -> None:
    """List tickets, most urgent first."""
    from alerts import list_tickets
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def show() -> None:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, schema)
            tickets = await list_tickets(conn, tenant=tenant, live_only=not all_)
        if not tickets:
            # Silence would look like a broken command or the wrong schema: say which schema was asked.
            which = "tickets" if all_ else "live tickets"
            scope = f" for tenant {tenant}" if tenant else ""
            hint = "" if all_ else " (--all includes resolved and closed ones)"
            typer.echo(f"no {which}{scope} in schema {schema}{hint}")
        for t in tickets:
            typer.echo(
                f"#{t.ticket_id} P{t.priority} {t.status:<12} {t.tenant}/{t.machine}  {t.title}  "
                f"(x{t.occurrences}, since {t.first_seen:%Y-%m-%d %H:%M:%S})"
            )

    run_async(show())


TicketId = Annotated[int, typer.Argument(help="The ticket's number (#N in `tickets list`).", min=1)]
By = Annotated[str | None, typer.Option("--by", help="Who does it, for the ticket's history (default: your login).")]
Why = Annotated[str, typer.Option("--why", help="Why, for the ticket's history.")]


def _act(ctx: typer.Context, ticket_id: int, action: Any, done: str) -> None:
    """Run one lifecycle action on a ticket in a transaction and say what happened."""
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def run() -> None:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, schema)  # also a schema from before ticket lifecycles
            async with conn.transaction():
                cur = await conn.execute("SELECT now()")
                row = await cur.fetchone()
                assert row is not None
                await action(conn, row[0])

    run_async(run())
    typer.echo(f"#{ticket_id} {done}")


def _actor(by: str | None) -> str:
    return by or getpass.getuser()


def _status_command(name: str, to: str, summary: str) -> None:
    def command(ctx: typer.Context, ticket_id: TicketId, by: By = None, why: Why = "") -> None:
        from alerts import set_status

        async def action(conn: Any, now: Any) -> None:
            await set_status(conn, ticket_id, to, actor=_actor(by), why=why, now=now)  # type: ignore[arg-type]

        _act(ctx, ticket_id, action, f"{to.replace('_', ' ')}")

    command.__doc__ = summary
    tickets_app.command(name)(command)


_status_command("ack", "acknowledged", "Acknowledge a ticket: someone has seen it (stops its escalation).")
_status_command("start", "in_progress", "Mark a ticket in progress: work on it has begun.")
_status_command("resolve", "resolved", "Resolve a ticket: the problem is fixed (new evidence soon after reopens it).")
_status_command("close", "closed", "Close a resolved ticket: the repair is verified (final).")
_status_command("reopen", "open", "Reopen a resolved ticket.")


@tickets_app.command("assign")
def tickets_assign(
    ctx: typer.Context,
    ticket_id: TicketId,
    team: Annotated[str | None, typer.Option(help="The team that owns it.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The person who does it.")] = None,
    by: By = None,
    why: Why = "",
) -> None:
    """Assign a ticket to a team and/or a person."""
    from alerts import assign
    from wearline.errors import WearlineError

    if team is None and to is None:
        raise WearlineError("tickets assign needs --team, --to or both")

    async def action(conn: Any, now: Any) -> None:
        await assign(conn, ticket_id, team=team, assignee=to, actor=_actor(by), why=why, now=now)

    _act(ctx, ticket_id, action, "assigned to " + " / ".join(x for x in (team, to) if x))


@tickets_app.command("comment")
def tickets_comment(
    ctx: typer.Context,
    ticket_id: TicketId,
    text: Annotated[str, typer.Argument(help="The note.")],
    by: By = None,
) -> None:
    """Add a note to a ticket's history."""
    from alerts import comment

    async def action(conn: Any, now: Any) -> None:
        await comment(conn, ticket_id, text, actor=_actor(by), now=now)

    _act(ctx, ticket_id, action, "commented")


@tickets_app.command("show")
def tickets_show(ctx: typer.Context, ticket_id: TicketId) -> None:
    """One ticket as a work order, with its whole history (who, when, why)."""
    from alerts import ticket_history
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx)
    schema = settings.database.schema_name

    async def show() -> None:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, schema)
            t, events = await ticket_history(conn, ticket_id)
        due = f"{t.due_at:%Y-%m-%d %H:%M}" if t.due_at else "-"
        typer.echo(f"#{t.ticket_id} {t.title}")
        typer.echo(f"  asset      {t.tenant}/{t.machine}")
        typer.echo(f"  status     {t.status}   priority P{t.priority}   type {t.kind}   reason {t.reason}")
        typer.echo(f"  team       {t.team or '-'}   assignee {t.assignee or '-'}   due {due}")
        typer.echo(
            f"  evidence   x{t.occurrences} from {t.first_seen:%Y-%m-%d %H:%M:%S} to {t.last_seen:%Y-%m-%d %H:%M:%S}"
        )
        typer.echo(f"  escalated  {t.escalation_level} time(s)   reopened {t.reopened} time(s)   id {t.external_id}")
        typer.echo("  history")
        for e in events:
            typer.echo(f"    {e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<10} {e.actor:<12} {e.why}")

    run_async(show())


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant whose tickets and machines the token reaches.")],
    name: Annotated[str, typer.Option(help="What the token is for (a team, a CMMS), shown in ticket histories.")],
    write: Annotated[bool, typer.Option("--write", help="May change tickets (default: read-only).")] = False,
) -> None:
    """Create a token; it is printed once, only its hash is stored."""
    from alerts import create_token

    token_id, token = _with_conn(ctx, lambda conn: create_token(conn, tenant=tenant, name=name, can_write=write))
    typer.echo(f"token #{token_id} for tenant {tenant} ({'read-write' if write else 'read-only'}); keep it now:")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context) -> None:
    """Every token: tenant, name, rights, last use, revocation."""
    from alerts import list_tokens

    tokens = _with_conn(ctx, list_tokens)
    if not tokens:
        typer.echo("no API tokens (wearline tokens create --tenant T --name N)")
    for t in tokens:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "live"
        rights = "read-write" if t.can_write else "read-only"
        typer.echo(f"#{t.token_id} {t.tenant:<16} {t.name:<24} {rights:<10} last used {used:<16} {state}")


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="The token's number (#N in `tokens list`).")]
) -> None:
    """Revoke a token: its next request is refused."""
    from alerts import revoke_token

    _with_conn(ctx, lambda conn: revoke_token(conn, token_id))
    typer.echo(f"token #{token_id} revoked")


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Whose ticket events it receives.")],
    name: Annotated[str, typer.Option(help="Its name within the tenant (a label in metrics).")],
    url: Annotated[str, typer.Option(help="Where to POST (http:// or https://).")],
    format_: Annotated[
        str, typer.Option("--format", help="wearline (event + work order) or alertmanager (webhook version 4).")
    ] = "wearline",
    secret: Annotated[str | None, typer.Option(help="Signing secret (default: a new random one).")] = None,
) -> None:
    """Add a webhook; prints the secret receivers check signatures with."""
    from alerts import add_webhook
    from wearline.errors import WearlineError

    if format_ not in ("wearline", "alertmanager"):
        raise WearlineError(f"--format must be wearline or alertmanager, not {format_!r}")
    webhook_id, key = _with_conn(
        ctx,
        lambda conn: add_webhook(conn, tenant=tenant, name=name, url=url, fmt=format_, secret=secret),  # type: ignore[arg-type]
    )
    typer.echo(f"webhook #{webhook_id} for tenant {tenant}: {url} ({format_}); signing secret:")
    typer.echo(key)


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context) -> None:
    """Every webhook with its deliveries: pending, delivered, failed."""
    from alerts import list_webhooks

    hooks = _with_conn(ctx, list_webhooks)
    if not hooks:
        typer.echo("no webhooks (wearline webhooks add --tenant T --name N --url U)")
    for w in hooks:
        state = f"removed {w.removed_at:%Y-%m-%d %H:%M}" if w.removed_at else "live"
        typer.echo(
            f"#{w.webhook_id} {w.tenant}/{w.name} {w.url} ({w.format}) {state}: "
            f"{w.pending} pending, {w.delivered} delivered, {w.failed} failed"
        )


@webhooks_app.command("remove")
def webhooks_remove(
    ctx: typer.Context, webhook_id: Annotated[int, typer.Argument(help="#N in `webhooks list`.")]
) -> None:
    """Stop feeding a webhook (what is pending is still delivered)."""
    from alerts import remove_webhook

    _with_conn(ctx, lambda conn: remove_webhook(conn, webhook_id))
    typer.echo(f"webhook #{webhook_id} removed")


@cmms_app.command("add")
def cmms_add(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Whose new tickets become work requests.")],
    name: Annotated[str, typer.Option(help="Its name within the tenant: /api/v1/cmms/<name>/status.")],
    url: Annotated[str, typer.Option(help="Where to POST a new work request (http:// or https://).")],
    secret: Annotated[str | None, typer.Option(help="Signing secret (default: a new random one).")] = None,
    statuses: Annotated[
        str | None,
        typer.Option(
            help='The CMMS\'s statuses as ticket statuses, JSON: \'{"done": "resolved"}\' (default: generic).'
        ),
    ] = None,
    id_field: Annotated[
        str, typer.Option(help="The field of the CMMS's answer that holds the new request's id.")
    ] = "id",
) -> None:
    """Add a generic REST CMMS adapter; prints the secret its requests are signed with."""
    import json
    import secrets as random

    from alerts import add_cmms_adapter
    from wearline.errors import WearlineError

    try:
        mapping = None if statuses is None else json.loads(statuses)
    except json.JSONDecodeError as exc:
        raise WearlineError(f"--statuses is not JSON: {exc}") from exc
    if mapping is not None and not isinstance(mapping, dict):
        raise WearlineError('--statuses must be a JSON object, e.g. \'{"done": "resolved"}\'')
    key = secret or random.token_urlsafe(32)
    adapter_id = _with_conn(
        ctx,
        lambda conn: add_cmms_adapter(
            conn, tenant=tenant, name=name, url=url, secret=key, statuses=mapping, id_field=id_field
        ),
    )
    typer.echo(f"CMMS adapter #{adapter_id} for tenant {tenant}: {url}; status back on /api/v1/cmms/{name}/status")
    typer.echo(f"signing secret: {key}")


@cmms_app.command("list")
def cmms_list(ctx: typer.Context) -> None:
    """Every CMMS adapter with its work requests: pending, filed, failed."""
    from alerts import list_cmms_adapters

    found = _with_conn(ctx, list_cmms_adapters)
    if not found:
        typer.echo("no CMMS adapters (wearline cmms add --tenant T --name N --url U)")
    for a in found:
        state = f"removed {a.removed_at:%Y-%m-%d %H:%M}" if a.removed_at else "live"
        typer.echo(
            f"#{a.adapter_id} {a.tenant}/{a.name} {a.url} ({a.kind}) {state}: "
            f"{a.pending} pending, {a.filed} filed, {a.failed} failed"
        )


@cmms_app.command("remove")
def cmms_remove(ctx: typer.Context, adapter_id: Annotated[int, typer.Argument(help="#N in `cmms list`.")]) -> None:
    """No new work requests for this CMMS (status it sends back is still taken)."""
    from alerts import remove_cmms_adapter

    _with_conn(ctx, lambda conn: remove_cmms_adapter(conn, adapter_id))
    typer.echo(f"CMMS adapter #{adapter_id} removed")


@bench.command("tickets")
def bench_tickets(
    ctx: typer.Context,
    tickets: Annotated[int, typer.Option(min=1, max=10_000_000, help="Tickets to load.")] = 100_000,
    events: Annotated[
        int, typer.Option(min=1, max=100_000_000, help="Ticket events to load (whole per ticket).")
    ] = 1_000_000,
    machines: Annotated[int, typer.Option(min=4, max=1_000_000, help="Machines, over 4 tenants.")] = 10_000,
    requests: Annotated[int, typer.Option(min=10, max=100_000, help="Requests per ticket-list query shape.")] = 200,
    passes: Annotated[int, typer.Option(min=1, max=100, help="Alerts passes to time.")] = 5,
    readings: Annotated[int, typer.Option(min=1, max=1000, help="New readings per machine before each pass.")] = 5,
) -> None:
    """Ticket list latency through the API and alerts passes over a plant-sized fleet, in a schema of its own.

    Loads TICKETS tickets and EVENTS events (two live tickets per machine, the rest history), measures GET
    /api/v1/tickets p50/p99 for typical filters and pages through the ASGI app, then times PASSES alerts passes
    with fresh readings and anomalies on every machine; a table, then one JSON line. Targets (issue 12): list p99
    under 50 ms, a pass under 1 s. Uses the settings' database (a new schema, dropped at the end) and alert rules
    (default: the shipped deploy/rules/plant.toml).
    """
    from alerts import TicketBench, run_ticket_bench
    from wearline.progress import progress

    if tickets < 2 * machines:
        raise typer.BadParameter(
            f"{tickets} tickets cannot give each of {machines} machines its two live tickets", param_hint="--tickets"
        )
    settings = settings_of(ctx)
    with progress("benchmark") as bar:
        run_ticket_bench(
            settings,
            TicketBench(
                tickets=tickets, events=events, machines=machines, requests=requests, passes=passes, readings=readings
            ),
            echo=typer.echo,
            bar=bar,
        )


def _with_conn(ctx: typer.Context, work: Any) -> Any:
    from wearline.db import connect, require_migrated

    settings = settings_of(ctx)

    async def run() -> Any:
        async with await connect(settings.database) as conn:
            await require_migrated(conn, settings.database.schema_name)
            async with conn.transaction():
                return await work(conn)

    return run_async(run())
