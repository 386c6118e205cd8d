"""The REST API on the real database, through its ASGI app (issue 12, items 4 and 9): tenants kept apart on every
endpoint, tokens and their rights, lifecycle actions, pagination, and a clear 4xx for every bad request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import alerts
from tests.conftest import make_settings, unique
from wearline.db import connect, migrate
from wearline.settings import Settings

WRITE_ROUTES = ["acknowledge", "start", "resolve", "close", "reopen"]


@dataclass
class World:
    client: httpx.AsyncClient
    settings: Settings
    tokens: dict[str, str]  # acme-rw, acme-ro, beta-rw, revoked
    tickets: dict[str, list[int]]  # tenant -> ticket ids

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token]}"}

    async def events(self, ticket_id: int) -> int:
        async with await connect(self.settings.database) as conn:
            cur = await conn.execute("SELECT count(*) FROM ticket_events WHERE ticket_id = %s", [ticket_id])
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture
async def world(schema: str) -> AsyncIterator[World]:
    settings = make_settings(schema, unique("wlt/"), "native", api={"page_size": 10})
    await migrate(settings.database)
    tickets: dict[str, list[int]] = {}
    tokens = {}
    async with await connect(settings.database) as conn:
        await conn.set_autocommit(True)
        for tenant, n in (("acme", 25), ("beta", 3)):
            cur = await conn.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id),
                        m AS (INSERT INTO machines (tenant_id, line_id, name)
                              SELECT (SELECT tenant_id FROM t), line_id, 'pump-' || i FROM l, generate_series(1, %(n)s) i
                              RETURNING machine_id, tenant_id, name)
                   INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
                   SELECT tenant_id, machine_id, 'anomaly', 1 + machine_id %% 4, 'Abnormal vibration on ' || name,
                          now(), now() FROM m
                   RETURNING ticket_id""",
                {"t": tenant, "n": n},
            )
            tickets[tenant] = sorted(r[0] for r in await cur.fetchall())
        for key, tenant, write in (("acme-rw", "acme", True), ("acme-ro", "acme", False), ("beta-rw", "beta", True)):
            _, tokens[key] = await alerts.create_token(conn, tenant=tenant, name=f"{key} board", can_write=write)
        revoked, tokens["revoked"] = await alerts.create_token(conn, tenant="acme", name="old", can_write=True)
        await alerts.revoke_token(conn, revoked)
        machine = tickets["acme"][0]
        await conn.execute(
            """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
               SELECT machine_id, now(), 'gbm', 'v1', 90, 40, 130 FROM tickets WHERE ticket_id = %s""",
            [machine],
        )
    app = alerts.create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield World(client, settings, tokens, tickets)


async def test_a_token_sees_and_changes_only_its_own_tenant_on_every_endpoint(world: World) -> None:
    c, acme = world.client, world.auth("acme-rw")
    beta_ticket = world.tickets["beta"][0]
    listed = (await c.get("/api/v1/tickets", params={"limit": 1000}, headers=acme)).json()["items"]
    assert sorted(t["id"] for t in listed) == world.tickets["acme"]
    assert {t["tenant"] for t in listed} == {"acme"}
    assert (await c.get(f"/api/v1/tickets/{beta_ticket}", headers=acme)).status_code == 404
    before = await world.events(beta_ticket)
    calls: list[tuple[str, dict[str, Any]]] = [(f"/{verb}", {}) for verb in WRITE_ROUTES]
    calls += [("/assign", {"team": "x"}), ("/comments", {"text": "hello"})]
    for path, body in calls:
        r = await c.post(f"/api/v1/tickets/{beta_ticket}{path}", json=body, headers=acme)
        print(f"POST {path} on tenant beta's ticket with acme's token -> {r.status_code} {r.json()}")
        assert (r.status_code, r.json()) == (404, {"detail": f"no ticket #{beta_ticket}"})
    assert await world.events(beta_ticket) == before, "nothing happened to beta's ticket"
    machines = (await c.get("/api/v1/machines", headers=world.auth("beta-rw"))).json()
    assert len(machines) == 3
    assert all(m["rul"] is None for m in machines), "acme's estimate is not beta's"


async def test_tokens_and_their_rights(world: World) -> None:
    c, ticket = world.client, world.tickets["acme"][0]
    r = await c.get("/api/v1/tickets")
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    assert "API token is required" in r.json()["detail"]
    for bad in ("Bearer wlt_nonsense", "Bearer " + world.tokens["revoked"], "Basic abc"):
        r = await c.get("/api/v1/tickets", headers={"Authorization": bad})
        assert r.status_code == 401, bad
    ro = world.auth("acme-ro")
    assert (await c.get(f"/api/v1/tickets/{ticket}", headers=ro)).status_code == 200
    r = await c.post(f"/api/v1/tickets/{ticket}/acknowledge", headers=ro)
    assert (r.status_code, r.json()["detail"]) == (
        403,
        "token 'acme-ro board' is read-only; changing tickets needs a read-write token",
    )
    assert await world.events(ticket) == 0
    async with await connect(world.settings.database) as conn:
        listed = {t.name: t for t in await alerts.list_tokens(conn)}
    assert listed["acme-ro board"].last_used_at is not None
    assert listed["acme-rw board"].last_used_at is None
    assert listed["old"].revoked_at is not None


async def test_a_maintenance_team_works_a_ticket_through_the_api(world: World) -> None:
    c, acme, ticket = world.client, world.auth("acme-rw"), world.tickets["acme"][0]
    r = await c.post(f"/api/v1/tickets/{ticket}/acknowledge", json={"by": "ana", "why": "on it"}, headers=acme)
    assert r.status_code == 200
    assert r.json()["status"] == "acknowledged"
    r = await c.post(f"/api/v1/tickets/{ticket}/assign", json={"team": "mechanics", "assignee": "bo"}, headers=acme)
    assert (r.json()["team"], r.json()["assignee"]) == ("mechanics", "bo")
    await c.post(f"/api/v1/tickets/{ticket}/comments", json={"text": "bearing ordered", "by": "bo"}, headers=acme)
    r = await c.post(f"/api/v1/tickets/{ticket}/resolve", headers=acme)
    events = [(e["kind"], e["actor"], e["why"]) for e in r.json()["events"]]
    assert events == [
        ("status", "ana via acme-rw board", "on it"),
        ("assigned", "acme-rw board", ""),
        ("comment", "bo via acme-rw board", "bearing ordered"),
        ("status", "acme-rw board", ""),
    ]
    r = await c.post(f"/api/v1/tickets/{ticket}/start", headers=acme)
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"ticket #{ticket} is resolved: it cannot become in_progress")
    # Resolved tickets leave the default (live) list and show when asked for.
    live = (await c.get("/api/v1/tickets", params={"limit": 1000}, headers=acme)).json()["items"]
    assert ticket not in [t["id"] for t in live]
    done = (await c.get("/api/v1/tickets", params={"status": "resolved"}, headers=acme)).json()["items"]
    assert [t["id"] for t in done] == [ticket]


async def test_pages_cover_every_ticket_once_most_urgent_first(world: World) -> None:
    c, acme = world.client, world.auth("acme-rw")
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    pages = 0
    while True:
        body = (await c.get("/api/v1/tickets", params=params, headers=acme)).json()
        seen += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            break
        params = {"cursor": body["next_cursor"]}
    assert pages == 3, "25 tickets at the page size of 10"
    assert sorted(t["id"] for t in seen) == world.tickets["acme"]
    assert [t["priority"] for t in seen] == sorted(t["priority"] for t in seen)
    urgent = (await c.get("/api/v1/tickets", params={"priority": [1, 2], "limit": 1000}, headers=acme)).json()
    assert {t["priority"] for t in urgent["items"]} == {1, 2}
    one = (await c.get("/api/v1/tickets", params={"machine": "pump-3"}, headers=acme)).json()["items"]
    assert [t["machine"] for t in one] == ["pump-3"]


@pytest.mark.parametrize(
    ("params", "status", "names"),
    [
        ({"limit": 0}, 422, "limit"),
        ({"limit": 1001}, 422, "limit"),
        ({"status": "bogus"}, 422, "status"),
        ({"priority": 7}, 422, "priority"),
        ({"since": "yesterday"}, 422, "since"),
        ({"since": "2026-06-01T08:00:00"}, 422, "since"),
        ({"colour": "red"}, 422, "colour"),
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
    ],
)
async def test_a_bad_query_is_a_4xx_naming_the_parameter(
    world: World, params: dict[str, Any], status: int, names: str
) -> None:
    r = await world.client.get("/api/v1/tickets", params=params, headers=world.auth("acme-rw"))
    print(r.status_code, r.text)
    assert r.status_code == status
    assert names in r.text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/tickets/0/acknowledge", None, 422),
        ("/api/v1/tickets/abc/acknowledge", None, 422),
        ("/api/v1/tickets/99999999999999999999", None, 422),
        ("/api/v1/tickets/{t}/assign", {}, 400),
        ("/api/v1/tickets/{t}/comments", {"text": ""}, 422),
        ("/api/v1/tickets/{t}/comments", "not json", 422),
        ("/api/v1/tickets/{t}/acknowledge", {"why": 5}, 422),
    ],
)
async def test_a_bad_request_body_or_path_is_a_4xx(world: World, path: str, body: Any, status: int) -> None:
    ticket = world.tickets["acme"][0]
    url = path.replace("{t}", str(ticket))
    if path.endswith("99999999999999999999"):
        r = await world.client.get(url, headers=world.auth("acme-rw"))
    elif body == "not json":
        r = await world.client.post(url, content=b"{oops", headers=world.auth("acme-rw"))
    else:
        r = await world.client.post(url, json=body, headers=world.auth("acme-rw"))
    print(r.status_code, r.text)
    assert r.status_code == status
    assert r.json()["detail"]
    assert await world.events(ticket) == 0


async def test_machines_show_their_latest_health(world: World) -> None:
    machines = (await world.client.get("/api/v1/machines", headers=world.auth("acme-ro"))).json()
    assert len(machines) == 25
    with_rul = [m for m in machines if m["rul"]]
    assert len(with_rul) == 1
    assert (with_rul[0]["rul"]["lower_hours"], with_rul[0]["rul"]["upper_hours"]) == (40, 130)
    assert all(m["live_tickets"] == 1 for m in machines)


async def test_the_openapi_document_is_served(world: World) -> None:
    doc = (await world.client.get("/openapi.json")).json()
    assert doc["info"]["title"] == "Wearline maintenance API"
    assert {"/api/v1/tickets", "/api/v1/tickets/{ticket_id}", "/api/v1/machines"} <= set(doc["paths"])
    assert {f"/api/v1/tickets/{{ticket_id}}/{v}" for v in WRITE_ROUTES} <= set(doc["paths"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/tickets", {"params": {"site": "a\x00b"}}),
        ("GET", "/api/v1/machines", {"params": {"site": "a\x00b"}}),
        ("POST", "/api/v1/tickets/{t}/comments", {"json": {"text": "a\x00b"}}),
        ("POST", "/api/v1/tickets/{t}/acknowledge", {"json": {"why": "a\x00b"}}),
    ],
)
async def test_a_nul_character_is_a_422_not_a_500(world: World, method: str, path: str, kwargs: Any) -> None:
    """Found by schemathesis: `site` with a NUL byte reached PostgreSQL, which cannot store it, and gave a 500."""
    url = path.replace("{t}", str(world.tickets["acme"][0]))
    r = await world.client.request(method, url, headers=world.auth("acme-rw"), **kwargs)
    assert r.status_code == 422
    assert "NUL character" in r.text


async def test_a_change_is_committed_before_its_response_starts(world: World) -> None:
    """A client that reads right after it writes (the board follows each action's redirect at once) must find the
    change: it is committed before the first byte of the response, not when the pooled connection is given back
    after it (FastAPI's request scope: the board once showed a ticket it had just acknowledged as still open). The
    events are counted from another connection at the moment the response starts."""
    ticket = world.tickets["acme"][0]
    app = alerts.create_app(world.settings)
    seen: list[int] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def send_seen(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen.append(await world.events(ticket))
            await send(message)

        await app(scope, receive, send_seen)

    before = await world.events(ticket)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=watched), base_url="http://api") as client,
    ):
        r = await client.post(f"/api/v1/tickets/{ticket}/comments", json={"text": "x"}, headers=world.auth("acme-rw"))
    assert r.status_code == 200, r.text
    assert seen == [before + 1]
