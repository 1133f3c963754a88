"""The daemon's status page in a real headless browser (Debian's chromium via Playwright).

A demo database, the daemon as a subprocess, and the page: it shows the demo's streams
and a dead letter; requeueing is refused without the admin token and works with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.reliability.test_cli import VENDORSYNC, project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures

CHROMIUM = "/usr/bin/chromium"
TOKEN = "test-admin-token-0123456789"
LEAKED = "hunter2-secret"
# Where the screenshots stay after the test (var/ is git-ignored).
SHOTS = Path(os.environ.get("VENDORSYNC_SCREENSHOTS", "var/screenshots")).resolve()


def add_dead_letter(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn, conn:
        cur = conn.execute(
            "INSERT INTO push_outbox (vendor, entity, record_key, payload, status, attempts,"
            " last_error, created_at) VALUES ('aimsio', 'User', 'dead.user@acme', '{}', 'dead',"
            f" 5, 'HTTP 503 after 5 attempts (password={LEAKED})', '2026-12-01 10:00:00')"
        )
        assert cur.lastrowid is not None
        return cur.lastrowid


def status_of(db: Path, row_id: int) -> str:
    with closing(sqlite3.connect(db)) as conn:
        (status,) = conn.execute(
            "SELECT status FROM push_outbox WHERE id = ?", (row_id,)
        ).fetchone()
    return str(status)


@pytest.fixture
def daemon(project: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """The demo's database with one dead letter, and ``vendorsync run`` serving it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser-up.sh", pytrace=False)
    demo = run("demo", "--records", "10", cwd=project)
    assert demo.returncode == 0, demo.stderr
    db = project / "vs.db"
    add_dead_letter(db)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path.cwd()),
        "VENDORSYNC_DAEMON__PORT": "0",
        "VENDORSYNC_DAEMON__ADMIN_TOKEN": TOKEN,
        "VENDORSYNC_LOG_FORMAT": "json",
    }
    log = (project / "daemon.log").open("w+")
    proc = subprocess.Popen(
        [*VENDORSYNC, "run"], cwd=project, env=env, stdout=log, stderr=log, text=True
    )
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        found = re.search(r"http://127\.0\.0\.1:\d+", (project / "daemon.log").read_text())
        url = found.group(0) if found else None
    assert url, (project / "daemon.log").read_text()
    try:
        yield url, proc, db
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        log.close()


def post(url: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, method="POST", headers=headers, data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)["message"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)["message"]


def dead_row_id(page: Page) -> int:
    return int(page.locator("#dead tbody tr").first.get_attribute("data-id") or 0)


@pytest.mark.timeout(300)  # the demo, a daemon and a browser, on a shared machine
def test_status_page_in_a_browser(daemon: tuple[str, subprocess.Popen[str], Path]) -> None:
    url, proc, db = daemon
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            response = page.goto(url + "/")
            assert response is not None
            assert response.status == 200
            html = page.content()
            assert TOKEN not in html
            assert LEAKED not in html
            # The demo's streams, each with its health.
            for stream in (
                "aimsio/User",
                "aqua/Orders",
                "imis/Party",
                "amilia/persons",
                "aimms/users",
            ):
                row = page.locator(f'#streams tr[data-stream="{stream}"]')
                expect(row).to_have_count(1)
                expect(row.locator(".state")).to_have_text(re.compile("fresh|late|failing|never"))
            expect(page.locator('#streams tr[data-stream="aimsio/User"] .state')).to_have_text(
                "fresh"
            )
            row_id = dead_row_id(page)
            dead = page.locator(f'#dead tr[data-id="{row_id}"]')
            expect(dead).to_contain_text("HTTP 503 after 5 attempts")
            page.screenshot(path=str(SHOTS / "status-page.png"), full_page=True)

            # Without the token: refused, and the row stays dead.
            dead.get_by_role("button", name="Requeue").click()
            expect(page.locator("#flash")).to_contain_text("needs the admin token")
            assert status_of(db, row_id) == "dead"
            # A wrong token: refused too.
            page.fill("#token", "not-the-token-at-all")
            page.click("#token-form button")
            dead.get_by_role("button", name="Requeue").click()
            expect(page.locator("#flash")).to_contain_text("wrong admin token")
            assert status_of(db, row_id) == "dead"
            # With it: requeued; after the reload the dead letter is gone.
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            dead.get_by_role("button", name="Requeue").click()
            expect(page.locator("#flash")).to_contain_text("requeued")
            assert status_of(db, row_id) == "pending"
            expect(page.locator(f'#dead tr[data-id="{row_id}"]')).to_have_count(0, timeout=10_000)
            assert TOKEN not in page.content()

            # Readable on a phone: nothing wider than the screen but the scrolling tables.
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(url + "/")
            overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0
            phone.screenshot(path=str(SHOTS / "status-page-phone.png"), full_page=True)
        finally:
            browser.close()

    # Cross-site requests are refused even with the token; no token, no action.
    action = f"{url}/actions/requeue/{row_id}"
    assert post(action, {})[0] == 401
    evil = {"X-Admin-Token": TOKEN, "Origin": "http://evil.example"}
    assert post(action, evil)[0] == 403
    assert post(action, {"X-Admin-Token": TOKEN, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert post(f"{url}/actions/run/aimsio/NoSuch", {"X-Admin-Token": TOKEN})[0] == 404
    status, message = post(f"{url}/actions/run/aimsio/User", {"X-Admin-Token": TOKEN})
    assert status == 202
    assert message.startswith("aimsio User: run requested")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    log = (db.parent / "daemon.log").read_text()
    assert TOKEN not in log
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM lease WHERE expires_at > heartbeat_at"
        ).fetchone() == (0,)
