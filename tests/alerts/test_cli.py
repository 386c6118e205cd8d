"""`wearline tickets show/ack/start/assign/comment/resolve/close/reopen`: the real commands on the real database."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.alerts._support import cli, served_api
from tests.conftest import make_settings, unique
from tests.ingest._support import connect_db
from wearline.db import migrate

WEARLINE = str(Path(sys.executable).with_name("wearline"))


@pytest.fixture
def schema_with_ticket(schema: str) -> str:
    asyncio.run(migrate(make_settings(schema, unique("wlt/"), "native").database))
    with connect_db(schema) as conn:
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id),
                    m AS (INSERT INTO machines (tenant_id, line_id, name)
                          SELECT (SELECT tenant_id FROM t), line_id, 'pump-1' FROM l RETURNING machine_id, tenant_id)
               INSERT INTO tickets (tenant_id, machine_id, reason, priority, title, first_seen, last_seen)
               SELECT tenant_id, machine_id, 'anomaly', 2, 'Abnormal vibration_rms', now(), now() FROM m"""
        )
    return schema


def test_a_maintenance_team_works_a_ticket_from_the_command_line(schema_with_ticket: str) -> None:
    s = schema_with_ticket
    assert cli(s, "tickets", "ack", "1", "--by", "ana", "--why", "on it") == (0, "#1 acknowledged\n")
    assert cli(s, "tickets", "assign", "1", "--team", "mechanics", "--to", "bo", "--by", "ana")[0] == 0
    assert cli(s, "tickets", "comment", "1", "bearing ordered", "--by", "bo")[0] == 0
    assert cli(s, "tickets", "start", "1", "--by", "bo")[0] == 0
    assert cli(s, "tickets", "resolve", "1", "--by", "bo", "--why", "bearing replaced")[0] == 0
    code, out = cli(s, "tickets", "show", "1")
    assert code == 0
    assert "status     resolved   priority P2" in out
    assert "team       mechanics   assignee bo" in out
    history = [line.split(None, 4)[2:] for line in out.splitlines() if line.startswith("    20")]
    assert history == [
        ["status", "ana", "on it"],
        ["assigned", "ana"],
        ["comment", "bo", "bearing ordered"],
        ["status", "bo"],
        ["status", "bo", "bearing replaced"],
    ]
    assert "live tickets" in cli(s, "tickets", "list")[1], "a resolved ticket is not live"
    assert "resolved" in cli(s, "tickets", "list", "--all")[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tickets", "close", "1"), "error: ticket #1 is open: it cannot become closed; it can become acknowledged"),
        (("tickets", "ack", "42"), "error: no ticket #42"),
        (("tickets", "show", "42"), "error: no ticket #42"),
        (("tickets", "assign", "1"), "error: tickets assign needs --team, --to or both"),
        (("tickets", "comment", "1", " "), "error: a comment needs some text"),
    ],
)
def test_a_mistake_is_one_line_and_changes_nothing(
    schema_with_ticket: str, args: tuple[str, ...], message: str
) -> None:
    code, out = cli(schema_with_ticket, *args)
    assert code != 0
    assert out.strip().splitlines()[0].startswith(message), out
    assert "Traceback" not in out
    with connect_db(schema_with_ticket) as conn:
        assert conn.execute("SELECT status, (SELECT count(*) FROM ticket_events) FROM tickets").fetchone() == (
            "open",
            0,
        )


def test_tokens_are_created_listed_and_revoked(schema_with_ticket: str) -> None:
    s = schema_with_ticket
    code, out = cli(s, "tokens", "create", "--tenant", "acme", "--name", "board", "--write")
    assert code == 0
    token = out.splitlines()[1]
    assert token.startswith("wlt_")
    assert len(token) > 40
    code, out = cli(s, "tokens", "create", "--tenant", "nobody", "--name", "x")
    assert (code, out.strip()) == (2, "error: no tenant 'nobody' (tenants: acme)")
    assert "#1 acme             board                    read-write last used never" in cli(s, "tokens", "list")[1]
    assert cli(s, "tokens", "revoke", "1") == (0, "token #1 revoked\n")
    assert "revoked" in cli(s, "tokens", "list")[1]
    assert cli(s, "tokens", "revoke", "7")[1].strip() == "error: no token #7"
    with connect_db(s) as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens").fetchone()
    assert stored is not None
    assert stored[0] == hashlib.sha256(token.encode()).digest(), "only the hash is stored"


def test_the_api_serves_until_sigterm_and_a_taken_port_is_one_line(schema_with_ticket: str) -> None:
    with served_api(schema_with_ticket) as (port, env):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/tickets", timeout=5).status_code == 401
        second = subprocess.run([WEARLINE, "api"], env=env, capture_output=True, text=True, timeout=60, check=False)
        print(second.stderr)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
            "set api.host / api.port (WEARLINE_API__HOST, WEARLINE_API__PORT)"
        )
        assert "Traceback" not in second.stderr


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error(schema_with_ticket: str, tmp_path: Path) -> None:
    """Every operation of the served OpenAPI document, with generated valid and invalid input (boundary values
    first: ticket #1 exists, so the lifecycle routes are reached), with a read-write token."""
    token = cli(schema_with_ticket, "tokens", "create", "--tenant", "acme", "--name", "fuzz", "--write")[1]
    with served_api(schema_with_ticket) as (port, _):
        st = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: Bearer {token.splitlines()[1]}",
                "--max-examples",
                "15",
                "--seed",
                "20261203",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
            cwd=tmp_path,
        )
    summary = st.stdout[st.stdout.find("SUMMARY") :]
    print(summary or st.stdout[-3000:], st.stderr[-2000:])
    assert st.returncode == 0, st.stdout[-6000:]
    assert "Tested: 11" in summary, "every operation was tried (the CMMS status endpoint is the 11th)"
