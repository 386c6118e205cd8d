"""The maintenance board: web pages served beside the API. Live tickets by priority with their actions, and one
machine's health (sensor trends, anomaly scores, remaining life with its interval) charted with Plotly, whose
JavaScript is served from the installed package, never from a CDN: plants often have no internet.

A browser signs in with an API token once; the token then rides in an HttpOnly, SameSite=Strict cookie, so another
site cannot make the browser act (and a POST whose Origin is another site is refused besides).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import plotly.graph_objects as go
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, select_autoescape
from plotly.offline import get_plotlyjs

from alerts._api import TRANSITIONS, DbConn, act, actor
from alerts._lifecycle import assign, set_status
from alerts._tickets import TicketQuery, find_tickets
from alerts._tokens import Scope, authenticate

__all__ = ["board"]

COOKIE = "wearline_board"
board = APIRouter(prefix="/board", include_in_schema=False)

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · Wearline</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #1d2430; }
 header { display: flex; gap: 1rem; align-items: baseline; border-bottom: 1px solid #ccd; margin-bottom: 1rem; }
 table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .35rem .5rem; }
 tr { border-bottom: 1px solid #e3e6ec; } .P1 { color: #b00020; font-weight: 700; } .P2 { color: #c25e00; }
 .flash { background: #fff3cd; padding: .5rem; } form.inline { display: inline; } input { width: 7rem; }
 .status { font-variant: small-caps; }
</style>{% block head %}{% endblock %}</head>
<body><header><h1>Wearline</h1><span>{{ title }}</span>
{% if tenant %}<span>tenant {{ tenant }}</span> <a href="/board">tickets</a> <a href="/board/machines">machines</a>
<form class="inline" method="post" action="/board/logout"><button>sign out</button></form>{% endif %}</header>
{% if flash %}<p class="flash" role="alert">{{ flash }}</p>{% endif %}
{% block body %}{% endblock %}</body></html>"""

_LOGIN = _env.from_string(
    "{% extends layout %}{% block body %}"
    '<form method="post" action="/board/login"><label>API token <input name="token" type="password" '
    'style="width:30rem" autofocus></label> <button>sign in</button></form>'
    "<p>Create one with <code>wearline tokens create --tenant T --name board --write</code>.</p>"
    "{% endblock %}",
    globals={"layout": _env.from_string(_LAYOUT)},
)

_TICKETS = _env.from_string(
    """{% extends layout %}{% block body %}
<table id="tickets"><thead><tr><th>#</th><th>P</th><th>status</th><th>machine</th><th>ticket</th><th>type</th>
<th>team / assignee</th><th>due</th><th>evidence</th><th>actions</th></tr></thead><tbody>
{% for t in tickets %}<tr id="ticket-{{ t.ticket_id }}">
<td>{{ t.ticket_id }}</td><td class="P{{ t.priority }}">P{{ t.priority }}</td>
<td class="status">{{ t.status.replace('_', ' ') }}</td>
<td>{% if machine_ids[t.ticket_id] %}<a href="/board/machines/{{ machine_ids[t.ticket_id] }}">{{ t.machine }}</a>{% else %}{{ t.machine }}(gateway){% endif %}</td><td>{{ t.title }}</td>
<td>{{ t.kind }}</td><td>{{ t.team or '-' }} / {{ t.assignee or '-' }}</td>
<td>{{ t.due_at.strftime('%Y-%m-%d %H:%M') if t.due_at else '-' }}</td>
<td>x{{ t.occurrences }} since {{ t.first_seen.strftime('%m-%d %H:%M') }}</td>
<td>{% for verb, label in actions[t.status] %}
<form class="inline" method="post" action="/board/tickets/{{ t.ticket_id }}/{{ verb }}">
<button name="verb" value="{{ verb }}">{{ label }}</button></form>{% endfor %}
{% if can_write %}<form class="inline" method="post" action="/board/tickets/{{ t.ticket_id }}/assign">
<input name="assignee" placeholder="assignee" aria-label="assignee for #{{ t.ticket_id }}">
<button>assign</button></form>{% endif %}</td></tr>
{% else %}<tr><td colspan="10">No live tickets.</td></tr>{% endfor %}
</tbody></table>{% endblock %}""",
    globals={"layout": _env.from_string(_LAYOUT)},
)

_MACHINES = _env.from_string(
    """{% extends layout %}{% block body %}<table id="machines"><thead><tr><th>machine</th><th>live tickets</th>
<th>last anomaly</th><th>remaining life (h)</th></tr></thead><tbody>
{% for m in machines %}<tr><td><a href="/board/machines/{{ m[0] }}">{{ m[1] }}</a></td>
<td>{{ m[2] }}{% if m[3] %} (top P{{ m[3] }}){% endif %}</td>
<td>{{ m[4].strftime('%Y-%m-%d %H:%M') if m[4] else '-' }}</td>
<td>{{ '%.0f (%.0f-%.0f)' % (m[5], m[6], m[7]) if m[5] is not none else '-' }}</td></tr>
{% endfor %}</tbody></table>{% endblock %}""",
    globals={"layout": _env.from_string(_LAYOUT)},
)

_MACHINE = _env.from_string(
    """{% extends layout %}{% block head %}<script src="/board/plotly.js"></script>{% endblock %}
{% block body %}{% for chart in charts %}<section>{{ chart | safe }}</section>{% endfor %}{% endblock %}""",
    globals={"layout": _env.from_string(_LAYOUT)},
)

_LABELS = {"acknowledge": "acknowledge", "start": "start", "resolve": "resolve", "close": "close", "reopen": "reopen"}
_ACTIONS = {
    "open": ["acknowledge", "start", "resolve"],
    "acknowledged": ["start", "resolve"],
    "in_progress": ["resolve"],
    "resolved": ["close", "reopen"],
    "closed": [],
}


def _page(template: Any, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(template.render(**values), status_code=status)


async def _signed_in(request: Request, conn: DbConn) -> Scope:
    token = request.cookies.get(COOKIE)
    scope = await authenticate(conn, token) if token else None
    if scope is None:
        raise HTTPException(303, headers={"Location": "/board/login"})
    return scope


Viewer = Annotated[Scope, Depends(_signed_in)]


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "a form from another site cannot act on this board")


@board.get("/plotly.js")
async def plotly_js() -> Response:
    return Response(_plotly(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@functools.cache
def _plotly() -> str:
    return str(get_plotlyjs())


@board.get("/login")
async def login_page(flash: str = "") -> HTMLResponse:
    return _page(_LOGIN, title="sign in", flash=flash, tenant=None)


@board.post("/login", dependencies=[Depends(_same_origin)])
async def login(conn: DbConn, token: Annotated[str, Form(max_length=200)]) -> Response:
    if await authenticate(conn, token.strip()) is None:
        return _page(_LOGIN, 401, title="sign in", flash="unknown or revoked API token", tenant=None)
    response = RedirectResponse("/board", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", max_age=12 * 3600)
    return response


@board.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/board/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@board.get("")
async def tickets_page(conn: DbConn, who: Viewer, flash: str = "") -> HTMLResponse:
    tickets = await find_tickets(conn, TicketQuery(tenant_id=who.tenant_id, limit=500))
    cur = await conn.execute(
        "SELECT ticket_id, machine_id FROM tickets WHERE ticket_id = ANY(%s)", [[t.ticket_id for t in tickets]]
    )
    actions = {s: [(v, _LABELS[v]) for v in verbs] if who.can_write else [] for s, verbs in _ACTIONS.items()}
    return _page(
        _TICKETS,
        title="live tickets by priority",
        tenant=who.tenant,
        flash=flash,
        tickets=tickets,
        machine_ids=dict(await cur.fetchall()),
        actions=actions,
        can_write=who.can_write,
    )


def _back(flash: str = "") -> RedirectResponse:
    return RedirectResponse("/board" + (f"?flash={quote(flash)}" if flash else ""), status_code=303)


@board.post("/tickets/{ticket_id}/assign", dependencies=[Depends(_same_origin)])
async def assign_from_board(
    conn: DbConn, who: Viewer, ticket_id: int, assignee: Annotated[str, Form(max_length=200)]
) -> Response:
    if not who.can_write:
        return _back(f"token {who.name!r} is read-only")
    if not assignee.strip() or "\x00" in assignee:
        return _back("assign needs a name")
    try:
        await act(
            conn,
            who,
            ticket_id,
            lambda now: assign(conn, ticket_id, team=None, assignee=assignee.strip(), actor=who.name, now=now),
        )
    except HTTPException as exc:
        return _back(str(exc.detail))
    return _back(f"#{ticket_id} assigned to {assignee.strip()}")


@board.post("/tickets/{ticket_id}/{verb}", dependencies=[Depends(_same_origin)])
async def act_from_board(conn: DbConn, who: Viewer, ticket_id: int, verb: str) -> Response:
    if verb not in TRANSITIONS:
        return _back(f"no action {verb!r}")
    if not who.can_write:
        return _back(f"token {who.name!r} is read-only")
    to = TRANSITIONS[verb]
    try:
        await act(conn, who, ticket_id, lambda now: set_status(conn, ticket_id, to, actor=actor(who, None), now=now))
    except HTTPException as exc:
        return _back(str(exc.detail))
    return _back(f"#{ticket_id} {to.replace('_', ' ')}")


@board.get("/machines")
async def machines_page(conn: DbConn, who: Viewer) -> HTMLResponse:
    cur = await conn.execute(
        """SELECT m.machine_id, s.name || '/' || l.name || '/' || m.name, k.n, k.top, a.time,
                  r.rul_hours, r.lower_hours, r.upper_hours
           FROM machines m JOIN lines l USING (line_id) JOIN sites s USING (site_id)
           LEFT JOIN LATERAL (SELECT count(*) AS n, min(priority) AS top FROM tickets
                              WHERE machine_id = m.machine_id
                                AND status IN ('open', 'acknowledged', 'in_progress')) k ON true
           LEFT JOIN LATERAL (SELECT time FROM anomalies WHERE machine_id = m.machine_id
                              ORDER BY time DESC LIMIT 1) a ON true
           LEFT JOIN LATERAL (SELECT rul_hours, lower_hours, upper_hours FROM rul_estimates
                              WHERE machine_id = m.machine_id ORDER BY time DESC LIMIT 1) r ON true
           WHERE m.tenant_id = %s ORDER BY k.top NULLS LAST, 2 LIMIT 2000""",
        [who.tenant_id],
    )
    return _page(_MACHINES, title="machines", tenant=who.tenant, flash="", machines=await cur.fetchall())


def _figure(title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, yaxis_title=ytitle, height=320, margin={"l": 50, "r": 20, "t": 40, "b": 30})
    return fig


@board.get("/machines/{machine_id}")
async def machine_page(conn: DbConn, who: Viewer, machine_id: int, days: float = 7.0) -> HTMLResponse:
    cur = await conn.execute(
        """SELECT s.name || '/' || l.name || '/' || m.name FROM machines m
           JOIN lines l USING (line_id) JOIN sites s USING (site_id) WHERE m.machine_id = %s AND m.tenant_id = %s""",
        [machine_id, who.tenant_id],
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no machine #{machine_id}")
    path = row[0]
    # The window ends at the machine's newest hour, not at now: a backlog or a replayed run still shows.
    cur = await conn.execute(
        """SELECT h.bucket, h.mean_1, h.mean_2, h.mean_3, h.mean_4, h.mean_5, h.mean_6, h.mean_7, h.mean_8
           FROM readings_hourly h
           WHERE h.machine_id = %(m)s
             AND h.bucket >= (SELECT max(time) FROM readings WHERE machine_id = %(m)s) - %(span)s
           ORDER BY h.bucket""",
        {"m": machine_id, "span": timedelta(days=days)},
    )
    hours = await cur.fetchall()
    cur = await conn.execute(
        "SELECT position, name, unit FROM sensors WHERE machine_id = %s AND position <= 8 ORDER BY position",
        [machine_id],
    )
    sensors = await cur.fetchall()
    trends = _figure("sensor trends (hourly means)", "value")
    for position, name, unit in sensors:
        trends.add_scatter(
            x=[h[0] for h in hours], y=[h[position] for h in hours], name=f"{name} ({unit})" if unit else name
        )
    cur = await conn.execute(
        """SELECT time, score, threshold FROM anomalies WHERE machine_id = %s ORDER BY time DESC LIMIT 5000""",
        [machine_id],
    )
    anomalies = (await cur.fetchall())[::-1]
    scores = _figure("anomaly score", "score / threshold")
    scores.add_scatter(
        x=[a[0] for a in anomalies], y=[a[1] / a[2] for a in anomalies], mode="markers", name="anomalies"
    )
    scores.add_hline(y=1.0, line_dash="dot", annotation_text="threshold")
    cur = await conn.execute(
        """SELECT time, rul_hours, lower_hours, upper_hours FROM rul_estimates WHERE machine_id = %s
           ORDER BY time DESC LIMIT 5000""",
        [machine_id],
    )
    ruls = (await cur.fetchall())[::-1]
    rul = _figure("remaining useful life with its interval", "hours")
    times: list[datetime] = [r[0] for r in ruls]
    rul.add_scatter(x=times, y=[r[3] for r in ruls], line={"width": 0}, showlegend=False, name="upper")
    rul.add_scatter(x=times, y=[r[2] for r in ruls], fill="tonexty", line={"width": 0}, name="interval")
    rul.add_scatter(x=times, y=[r[1] for r in ruls], name="estimate")
    charts = [f.to_html(include_plotlyjs=False, full_html=False) for f in (trends, scores, rul)]
    return _page(_MACHINE, title=path, tenant=who.tenant, flash="", charts=charts)
