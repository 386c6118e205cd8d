"""The maintenance board in a real browser: Debian's chromium driven by Playwright against `wearline api` as served
(issue 12, item 6). Screenshots are kept in $WEARLINE_TEST_ARTIFACTS (default: build/test-artifacts)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.alerts._support import cli, served_api
from tests.conftest import make_settings, unique
from tests.ingest._support import connect_db
from wearline.db import migrate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("WEARLINE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build/test-artifacts")
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (./dev test installs it: apt chromium)"
)


@pytest.fixture
def plant(schema: str) -> tuple[str, str, str]:
    """A tenant with two live tickets and a machine with two days of readings, anomalies and RUL estimates;
    returns (schema, a read-write token, a read-only token)."""
    asyncio.run(migrate(make_settings(schema, unique("wlt/"), "native").database))
    with connect_db(schema) as conn:
        conn.execute("SELECT ensure_partitions(current_date - 3, current_date + 1)")
        conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('acme') RETURNING tenant_id),
                    s AS (INSERT INTO sites (tenant_id, name) SELECT tenant_id, 'plant-a' FROM t RETURNING site_id),
                    l AS (INSERT INTO lines (site_id, name) SELECT site_id, 'line-1' FROM s RETURNING line_id)
               INSERT INTO machines (tenant_id, line_id, name)
               SELECT (SELECT tenant_id FROM t), line_id, n FROM l, unnest(array['pump-1', 'pump-2']) n"""
        )
        conn.execute(
            """INSERT INTO sensors (machine_id, position, name, unit)
               SELECT machine_id, p, (array['vibration_rms', 'temperature'])[p], (array['mm/s', 'C'])[p]
               FROM machines, generate_series(1, 2) p"""
        )
        conn.execute(
            """INSERT INTO readings (machine_id, time, vals)
               SELECT machine_id, now() - make_interval(mins => 10 * i), array[2 + i / 100.0, 60 + sin(i / 10.0)]
               FROM machines, generate_series(0, 288) i"""
        )
        conn.execute(
            """INSERT INTO anomalies (machine_id, time, detector, score, threshold, sensors)
               SELECT machine_id, now() - make_interval(hours => i), 'zscore', 7 + i, 6, '{vibration_rms}'
               FROM machines CROSS JOIN generate_series(1, 5) i WHERE name = 'pump-1'"""
        )
        conn.execute(
            """INSERT INTO rul_estimates (machine_id, time, model, model_version, rul_hours, lower_hours, upper_hours)
               SELECT machine_id, now() - make_interval(hours => i), 'gbm', 'v1', 100 + 2 * i, 60 + i, 150 + 3 * i
               FROM machines CROSS JOIN generate_series(1, 48) i WHERE name = 'pump-1'"""
        )
        conn.execute(
            """INSERT INTO tickets (tenant_id, machine_id, reason, kind, priority, title, first_seen, last_seen)
               SELECT tenant_id, machine_id, r, k, p, t, now(), now() FROM machines,
                      (VALUES ('pump-1', 'anomaly', 'corrective', 1, 'Abnormal vibration_rms on pump-1'),
                              ('pump-2', 'remaining_life', 'predictive', 3, 'Predicted failure of pump-2')) v(m, r, k, p, t)
               WHERE name = m"""
        )
    rw = cli(schema, "tokens", "create", "--tenant", "acme", "--name", "board", "--write")[1].splitlines()[1]
    ro = cli(schema, "tokens", "create", "--tenant", "acme", "--name", "wall screen")[1].splitlines()[1]
    return schema, rw, ro


def test_sign_in_acknowledge_a_ticket_and_see_it_change(plant: tuple[str, str, str]) -> None:
    schema, rw, ro = plant
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Each action is a form post and a redirect; on a loaded 2-core machine one took over Playwright's default 5 s.
    expect.set_options(timeout=30_000)
    with served_api(schema) as (port, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            base = f"http://127.0.0.1:{port}/board"
            page.goto(base)
            assert page.url == f"{base}/login", "the board asks for a token first"
            page.fill("input[name=token]", "wlt_wrong")
            page.get_by_role("button", name="sign in").click()
            expect(page.get_by_role("alert")).to_have_text("unknown or revoked API token")
            page.fill("input[name=token]", rw)
            page.get_by_role("button", name="sign in").click()
            rows = page.locator("#tickets tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("P1")
            expect(rows.nth(0)).to_contain_text("Abnormal vibration_rms on pump-1")
            expect(rows.nth(1)).to_contain_text("predictive")
            first = rows.nth(0)
            expect(first.locator(".status")).to_have_text("open")
            first.get_by_role("button", name="acknowledge").click()
            expect(page.get_by_role("alert")).to_have_text("#1 acknowledged")
            expect(page.locator("#ticket-1 .status")).to_have_text("acknowledged")
            expect(page.locator("#ticket-1").get_by_role("button", name="acknowledge")).to_have_count(0)
            page.fill("#ticket-1 input[name=assignee]", "bo")
            page.locator("#ticket-1").get_by_role("button", name="assign").click()
            expect(page.locator("#ticket-1")).to_contain_text("- / bo")
            page.screenshot(path=str(ARTIFACTS / "board-tickets.png"), full_page=True)

            page.get_by_role("link", name="plant-a/line-1/pump-1").click()
            expect(page.locator(".js-plotly-plot")).to_have_count(3)
            expect(page.locator("text=remaining useful life with its interval")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "board-machine.png"), full_page=True)

            # A read-only token sees the board without its actions.
            page.get_by_role("button", name="sign out").click()
            page.fill("input[name=token]", ro)
            page.get_by_role("button", name="sign in").click()
            expect(page.locator("#tickets tbody tr")).to_have_count(2)
            expect(page.get_by_role("button", name="resolve")).to_have_count(0)
        finally:
            browser.close()
    with connect_db(schema) as conn:
        events = conn.execute("SELECT kind, actor FROM ticket_events ORDER BY event_id").fetchall()
    assert events == [("status", "board"), ("assigned", "board")]
    print(f"screenshots: {ARTIFACTS / 'board-tickets.png'}, {ARTIFACTS / 'board-machine.png'}")
