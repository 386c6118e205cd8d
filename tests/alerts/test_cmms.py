"""CMMS work requests through the outbox and status back through the API, against a real HTTP receiver, with each
stage acting as its database role (issue 12, items 5 and 9)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

import alerts
from tests.conftest import make_settings, unique
from wearline.db import connect, migrate
from wearline.settings import AlertsSettings, Settings

Conn = psycopg.AsyncConnection[Any]
RULES = AlertsSettings(webhook_max_attempts=6, webhook_timeout_s=5)


@dataclass
class Cmms:
    """A CMMS that files work requests idempotently on the Idempotency-Key. It answers 500 to its first ``down``
    requests without filing anything, then files the next one but loses its answer (500 after filing), then works."""

    down: int = 2
    base: int = 1000  # work request numbers start after this
    requests: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    filed: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> work request id
    created: int = 0  # work requests created (a replayed key creates none)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/work-requests"


@contextlib.contextmanager
def cmms(down: int = 2, base: int = 1000) -> Iterator[Cmms]:
    rx = Cmms(down, base)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            key = self.headers["Idempotency-Key"]
            with lock:
                n = len(rx.requests)
                code, answer = 500, b"maintenance window"
                if n >= rx.down:
                    if key not in rx.filed:
                        rx.created += 1
                        rx.filed[key] = f"WR-{rx.base + rx.created}"
                    code, answer = 201, json.dumps({"id": rx.filed[key], "state": "requested"}).encode()
                    if n == rx.down:
                        code, answer = 500, b"filed, but the answer was lost"
                rx.requests.append((code, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(code)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    rx.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=rx.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        rx.server.shutdown()
        rx.server.server_close()


def as_role(settings: Settings, role: str) -> Settings:
    return settings.model_copy(update={"database": settings.database.model_copy(update={"role": role})})


@dataclass
class World:
    settings: Settings
    owner: Conn
    alerts_conn: Conn
    api: httpx.AsyncClient
    tokens: dict[str, str]
    cmms: dict[str, Cmms]

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token]}"}

    async def open_tickets(self, tenant: str, n: int) -> list[int]:
        """``n`` new tickets with their ``opened`` events, as the alerts stage files them."""
        cur = await self.alerts_conn.execute(
            """WITH m AS (SELECT m.machine_id, m.tenant_id, m.name FROM machines m JOIN tenants t USING (tenant_id)
                          WHERE t.name = %s ORDER BY m.machine_id LIMIT %s),
                    k AS (INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
                          SELECT tenant_id, machine_id, 'anomaly', 2, 'Abnormal vibration on ' || name, now(), now()
                          FROM m RETURNING ticket_id),
                    e AS (INSERT INTO ticket_events (ticket_id, kind, actor) SELECT ticket_id, 'opened', 'wearline'
                          FROM k RETURNING ticket_id)
               SELECT ticket_id FROM e ORDER BY ticket_id""",
            [tenant, n],
        )
        return [r[0] for r in await cur.fetchall()]

    async def file_all(self) -> list[alerts.Filing]:
        """File with the clock moved on a minute at a time, so every backoff comes due."""
        done: list[alerts.Filing] = []
        start = datetime.now(UTC)
        async with httpx.AsyncClient() as client:
            for minute in range(24 * 60):
                now = start + timedelta(minutes=minute)
                done += await alerts.file_work_requests(self.alerts_conn, client, RULES, now=now)
                cur = await self.alerts_conn.execute(
                    "SELECT count(*) FROM cmms_requests WHERE filed_at IS NULL AND failed_at IS NULL"
                )
                if await cur.fetchone() == (0,):
                    break
        return done

    async def status(self, token: str, adapter: str, body: Any) -> httpx.Response:
        return await self.api.post(f"/api/v1/cmms/{adapter}/status", json=body, headers=self.auth(token))

    async def work_request(self, ticket_id: int) -> str:
        cur = await self.owner.execute("SELECT work_request_id FROM cmms_requests WHERE ticket_id = %s", [ticket_id])
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    async def ticket(self, ticket_id: int) -> tuple[str, list[tuple[str, str, str]]]:
        cur = await self.owner.execute("SELECT status FROM tickets WHERE ticket_id = %s", [ticket_id])
        row = await cur.fetchone()
        assert row is not None
        cur = await self.owner.execute(
            "SELECT kind, actor, why FROM ticket_events WHERE ticket_id = %s ORDER BY event_id", [ticket_id]
        )
        return row[0], [tuple(r) for r in await cur.fetchall()]


@pytest.fixture
async def world(schema: str) -> AsyncIterator[World]:
    settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    tokens: dict[str, str] = {}
    with cmms() as acme_cmms, cmms(down=0, base=5000) as beta_cmms:
        async with (
            await connect(settings.database, autocommit=True) as owner,
            await connect(as_role(settings, "wearline_alerts").database, autocommit=True) as alerts_conn,
        ):
            for tenant, rx in (("acme", acme_cmms), ("beta", beta_cmms)):
                await owner.execute(
                    """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                            s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t
                                  RETURNING site_id),
                            l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id)
                       INSERT INTO machines (tenant_id, line_id, name)
                       SELECT (SELECT tenant_id FROM t), line_id, 'pump-' || i FROM l, generate_series(1, 5) i""",
                    {"t": tenant},
                )
                await alerts.add_cmms_adapter(owner, tenant=tenant, name="maximo", url=rx.url, secret=f"{tenant}-s")
                _, tokens[f"{tenant}-rw"] = await alerts.create_token(
                    owner, tenant=tenant, name="cmms sync", can_write=True
                )
            _, tokens["acme-ro"] = await alerts.create_token(owner, tenant="acme", name="viewer", can_write=False)
            app = alerts.create_app(as_role(settings, "wearline_api"))
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
            ):
                yield World(settings, owner, alerts_conn, api, tokens, {"acme": acme_cmms, "beta": beta_cmms})


async def test_each_new_ticket_becomes_one_work_request_across_failures_and_a_lost_answer(world: World) -> None:
    acme = await world.open_tickets("acme", 3)
    beta = await world.open_tickets("beta", 2)
    async with world.alerts_conn.transaction():
        # Only an opening files a work request: later events of the ticket do not.
        await alerts.comment(world.alerts_conn, acme[0], "more evidence", actor="wearline", now=datetime.now(UTC))
    done = await world.file_all()
    rx = world.cmms["acme"]
    print(f"acme CMMS: {len(rx.requests)} requests, {rx.created} created; outcomes {[d.status for d in done]}")
    assert rx.created == 3, "one work request per ticket, whatever was retried"
    assert len(rx.requests) == 2 + 1 + 3, "2 refused, 1 filed with its answer lost (retried), then each once"
    assert [d.status for d in done].count("retry") == 3 + 1, "acme's 3, and beta's CMMS lost its first answer"
    keys = [h["idempotency-key"] for _, h, _ in rx.requests]
    lost = keys[2]  # filed by the CMMS, its answer lost: sent again under the same key, nothing new created
    assert keys.count(lost) >= 2
    assert sorted(k for (code, _, _), k in zip(rx.requests, keys, strict=True) if code == 201) == sorted(rx.filed)
    for code, headers, body in rx.requests:
        t, v1 = (part.split("=", 1)[1] for part in headers["x-wearline-signature"].split(","))
        expected = hmac.new(b"acme-s", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected), f"signature of a {code} request"
    orders = {json.loads(b)["work_order"]["id"]: json.loads(b)["work_order"] for _, _, b in rx.requests}
    assert sorted(orders) == acme
    assert sorted(o["external_id"] for o in orders.values()) == sorted(rx.filed), "the key is the external_id"
    assert {o["tenant"] for o in orders.values()} == {"acme"}
    for ticket_id in acme:
        assert await world.work_request(ticket_id) == rx.filed[orders[ticket_id]["external_id"]]
    assert world.cmms["beta"].created == 2
    assert sorted({json.loads(b)["work_order"]["id"] for _, _, b in world.cmms["beta"].requests}) == beta
    listed = {a.tenant: a for a in await alerts.list_cmms_adapters(world.owner)}
    assert (listed["acme"].pending, listed["acme"].filed, listed["acme"].failed) == (0, 3, 0)


async def test_status_back_moves_the_ticket_with_the_cmms_as_actor(world: World) -> None:
    [ticket] = await world.open_tickets("acme", 1)
    await world.file_all()
    wr = await world.work_request(ticket)
    steps = [("accepted", 200, "acknowledged"), ("accepted", 200, "acknowledged"), ("started", 200, "in_progress")]
    steps += [("closed", 200, "closed"), ("started", 409, "closed")]
    for cmms_status, code, status in steps:
        r = await world.status("acme-rw", "maximo", {"work_request_id": wr, "status": cmms_status, "note": "Ola"})
        print(cmms_status, r.status_code, r.json())
        assert r.status_code == code, r.text
        assert (await world.ticket(ticket))[0] == status
    _, events = await world.ticket(ticket)
    changes = [e for e in events if e[0] == "status"]
    assert [e[1] for e in changes] == ["cmms:maximo via cmms sync"] * 4, "acknowledged, in progress, resolved, closed"
    assert changes[0][2] == f"accepted in maximo (work request {wr}): Ola"
    r = await world.status("acme-rw", "maximo", {"work_request_id": wr, "status": "started"})
    assert "closed" in r.json()["detail"], "the 409 says why"


async def test_bad_status_requests_get_a_clear_4xx_and_tenants_stay_apart(world: World) -> None:
    [acme_ticket] = await world.open_tickets("acme", 1)
    [beta_ticket] = await world.open_tickets("beta", 1)
    await world.file_all()
    acme_wr, beta_wr = await world.work_request(acme_ticket), await world.work_request(beta_ticket)
    ok = {"work_request_id": acme_wr, "status": "accepted"}
    cases: list[tuple[str, str, Any, int]] = [
        ("acme-ro", "maximo", ok, 403),
        ("acme-rw", "sap-pm", ok, 404),  # no such adapter
        ("acme-rw", "maximo", {"work_request_id": beta_wr, "status": "accepted"}, 404),  # beta's request
        ("beta-rw", "maximo", ok, 404),  # acme's request through beta's own adapter of the same name
        ("acme-rw", "maximo", {"work_request_id": acme_wr, "status": "exploded"}, 422),
        ("acme-rw", "maximo", {"work_request_id": acme_wr}, 422),
        ("acme-rw", "maximo", {"status": "accepted"}, 422),
        ("acme-rw", "maximo", {**ok, "extra": 1}, 422),
        ("acme-rw", "maximo", {**ok, "note": "nul \x00 byte"}, 422),
        ("acme-rw", "maximo", {**ok, "work_request_id": "x" * 2000}, 422),
        ("acme-rw", "bad name!", ok, 422),
        ("acme-rw", "maximo", [1, 2], 422),
    ]
    for token, adapter, body, code in cases:
        r = await world.status(token, adapter, body)
        print(token, adapter, str(body)[:60], r.status_code, r.text[:160])
        assert r.status_code == code, r.text
        assert r.json()["detail"], "every refusal says why"
    r = await world.api.post("/api/v1/cmms/maximo/status", content=b"{not json", headers=world.auth("acme-rw"))
    assert r.status_code == 422
    r = await world.api.post("/api/v1/cmms/maximo/status", json=ok)
    assert r.status_code == 401
    assert (await world.ticket(acme_ticket))[0] == "open", "no refused request changed acme's ticket"
    assert (await world.ticket(beta_ticket))[0] == "open", "nor beta's"
    r = await world.status("beta-rw", "maximo", {"work_request_id": beta_wr, "status": "done"})
    assert (r.status_code, r.json()["status"]) == (200, "resolved")


async def test_adapter_settings_are_checked(world: World) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"tenant": "nobody"}, "no tenant 'nobody'"),
        ({"url": "ftp://x"}, "must start with http"),
        ({"statuses": {"done": "finished"}}, "must map to one of"),
        ({"statuses": {}}, "empty"),
        ({"name": "maximo"}, "already has a CMMS adapter named 'maximo'"),
        ({"name": "a/b"}, "is not 1-64 of"),
    ]
    for change, message in bad:
        args: dict[str, Any] = {"tenant": "acme", "name": "other", "url": "http://x/", "secret": "s"} | change
        with pytest.raises(alerts.CmmsError, match=message):
            async with world.owner.transaction():
                await alerts.add_cmms_adapter(world.owner, **args)
