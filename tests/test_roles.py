"""Least-privilege database roles and the API's row-level security (issue 14, item 3), tried by crossing them:
each stage's role is refused what it has no business doing, and the API's role sees and changes one tenant's rows
only, even when its queries forget to say which."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

import alerts
from alerts._tokens import authenticate
from wearline.db import GRANTS, connect
from wearline.settings import Settings

Conn = psycopg.AsyncConnection[Any]


def as_role(settings: Settings, role: str) -> Settings:
    return settings.model_copy(update={"database": settings.database.model_copy(update={"role": role})})


@pytest.fixture
async def two_tenants(migrated: Settings) -> dict[str, Any]:
    """acme and rival, each with a machine, an anomaly, a ticket with an event, and a read-write token."""
    async with await connect(migrated.database, autocommit=True) as conn:
        tokens = {}
        for tenant in ("acme", "rival"):
            await conn.execute(
                """WITH t AS (INSERT INTO tenants (name) VALUES (%(t)s) RETURNING tenant_id),
                        s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'site' FROM t RETURNING site_id),
                        l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line' FROM s RETURNING line_id),
                        m AS (INSERT INTO machines (tenant_id, line_id, name)
                              SELECT (SELECT tenant_id FROM t), line_id, %(t)s || '-pump' FROM l
                              RETURNING machine_id, tenant_id),
                        a AS (INSERT INTO anomalies (machine_id, time, detector, score, threshold)
                              SELECT machine_id, now(), 'zscore', 9, 6 FROM m),
                        k AS (INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
                              SELECT tenant_id, machine_id, 'anomaly', 2, %(t)s || ' trouble', now(), now() FROM m
                              RETURNING ticket_id)
                   INSERT INTO ticket_events (ticket_id, kind, why) SELECT ticket_id, 'opened', 'test' FROM k""",
                {"t": tenant},
            )
            _, tokens[tenant] = await alerts.create_token(conn, tenant=tenant, name="t", can_write=True)
        cur = await conn.execute("SELECT t.name, k.ticket_id FROM tickets k JOIN tenants t USING (tenant_id)")
        ids = dict(await cur.fetchall())
    return {"tokens": tokens, "tickets": ids}


async def test_every_table_has_its_grants_declared(migrated: Settings) -> None:
    async with await connect(migrated.database) as conn:
        cur = await conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition""",
            [migrated.database.schema_name],
        )
        tables = {r[0] for r in await cur.fetchall()}
    assert tables - set(GRANTS) == set(), "a new table: say in wearline/db/_roles.py which stage may use it"
    assert set(GRANTS) - tables == set(), "grants for a table that no longer exists"


@pytest.mark.parametrize(
    ("role", "statement"),
    [
        ("wearline_ingest", "INSERT INTO models (kind, machine_type, version, metadata, blob) VALUES ('rul', 'x', 'v', '{}', '')"),
        ("wearline_ingest", "UPDATE tickets SET status = 'closed'"),
        ("wearline_ingest", "SELECT * FROM api_tokens"),
        ("wearline_analytics", "INSERT INTO models (kind, machine_type, version, metadata, blob) VALUES ('rul', 'x', 'v', '{}', '')"),
        ("wearline_analytics", "DELETE FROM readings"),
        ("wearline_alerts", "DELETE FROM models"),
        ("wearline_alerts", "INSERT INTO readings (machine_id, time, vals) VALUES (1, now(), '{1}')"),
        ("wearline_api", "SELECT * FROM api_tokens"),
        ("wearline_api", "SELECT * FROM webhooks"),
        ("wearline_api", "DELETE FROM tickets"),
        ("wearline_api", "SELECT * FROM dead_letters"),
        # The dashboards' reader: Grafana runs whatever SQL an editor types.
        ("wearline_readonly", "DELETE FROM tickets"),
        ("wearline_readonly", "UPDATE machines SET name = 'x'"),
        ("wearline_readonly", "INSERT INTO tenants (name) VALUES ('x')"),
        ("wearline_readonly", "SELECT * FROM api_tokens"),
        ("wearline_readonly", "SELECT * FROM webhooks"),
        ("wearline_readonly", "SELECT secret FROM cmms_adapters"),
        ("wearline_readonly", "SELECT password_hash FROM gateways"),
        ("wearline_readonly", "SELECT blob FROM models"),
        ("wearline_readonly", "SELECT payload FROM dead_letters"),
        ("wearline_readonly", "SELECT nextval(pg_get_serial_sequence('tickets', 'ticket_id'))"),
    ],
)  # fmt: skip
async def test_a_stage_role_is_refused_what_is_not_its_business(migrated: Settings, role: str, statement: str) -> None:
    async with await connect(as_role(migrated, role).database, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == (role,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(statement)


async def test_the_readonly_role_reads_every_tenant(migrated: Settings, two_tenants: dict[str, Any]) -> None:
    """Dashboards are an operator's view across tenants: the row-level security that confines the API must not hide
    rows from them (a role outside every policy would read nothing at all)."""
    async with await connect(as_role(migrated, "wearline_readonly").database, autocommit=True) as conn:
        for table in ["tenants", "machines", "anomalies", "tickets", "ticket_events"]:
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            assert await cur.fetchone() == (2,), table
        cur = await conn.execute("SELECT count(reason) FROM dead_letters")
        assert await cur.fetchone() == (0,)


async def test_the_api_role_sees_one_tenant_even_when_a_query_forgets_to_filter(
    migrated: Settings, two_tenants: dict[str, Any]
) -> None:
    async with await connect(as_role(migrated, "wearline_api").database, autocommit=True) as conn:

        async def count(table: str) -> int:
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # no tenant in the query at all
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        tables = ["tenants", "sites", "lines", "machines", "anomalies", "tickets", "ticket_events", "readings_hourly"]
        assert [await count(t) for t in tables] == [0] * len(tables), "no token, no tenant: nothing"
        assert await authenticate(conn, two_tenants["tokens"]["acme"]) is not None
        assert [await count(t) for t in tables[:-1]] == [1] * (len(tables) - 1)
        cur = await conn.execute("SELECT title FROM tickets")
        assert await cur.fetchall() == [("acme trouble",)]
        rival = two_tenants["tickets"]["rival"]
        cur = await conn.execute("UPDATE tickets SET status = 'closed' WHERE ticket_id = %s", [rival])
        assert cur.rowcount == 0, "another tenant's ticket cannot be changed, it is not even there"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("INSERT INTO ticket_events (ticket_id, kind, why) VALUES (%s, 'comment', 'x')", [rival])
        assert await authenticate(conn, "wlt_not-a-token") is None
        assert await count("tickets") == 0, "a failed authentication leaves the session with no tenant"


async def test_the_api_served_under_its_role_keeps_tenants_apart(
    migrated: Settings, two_tenants: dict[str, Any]
) -> None:
    app = alerts.create_app(as_role(migrated, "wearline_api"))
    acme, rival = two_tenants["tickets"]["acme"], two_tenants["tickets"]["rival"]
    headers = {"Authorization": f"Bearer {two_tenants['tokens']['acme']}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            page = (await http.get("/api/v1/tickets", headers=headers)).json()
            assert [t["id"] for t in page["items"]] == [acme]
            assert (await http.get(f"/api/v1/tickets/{rival}", headers=headers)).status_code == 404
            done = await http.post(f"/api/v1/tickets/{acme}/acknowledge", headers=headers, json={"by": "ana"})
            assert done.status_code == 200, done.text
            assert (await http.post(f"/api/v1/tickets/{rival}/acknowledge", headers=headers)).status_code == 404
            machines = (await http.get("/api/v1/machines", headers=headers)).json()
            assert [m["machine"] for m in machines] == ["acme-pump"]
            # The same pooled connection next serves the other tenant: nothing of the first stays with it.
            other = {"Authorization": f"Bearer {two_tenants['tokens']['rival']}"}
            page = (await http.get("/api/v1/tickets", headers=other)).json()
            assert [t["id"] for t in page["items"]] == [rival]
    async with await connect(migrated.database) as conn:
        cur = await conn.execute(
            "SELECT status FROM tickets WHERE ticket_id = ANY(%s) ORDER BY ticket_id", [[acme, rival]]
        )
        assert await cur.fetchall() == [("acknowledged",), ("open",)]


async def test_the_alerts_pass_runs_under_its_role(migrated: Settings, two_tenants: dict[str, Any]) -> None:
    async with await connect(as_role(migrated, "wearline_alerts").database, autocommit=True) as conn:
        done = await alerts.alerts_pass(conn, migrated.alerts, topic_prefix=migrated.topic_prefix)
    assert done.anomalies_handled == 2
