"""``vendorsync push`` as a user meets it: its exit status tells whether every row got through."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.test_cli import project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures shared with test_cli


def user(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "userName": name,
        "userFirstName": "A",
        "userLastName": "B",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
        **extra,
    }


def enqueue(project: Path, *payloads: dict[str, Any]) -> None:
    rows = project / "rows.jsonl"
    rows.write_text("".join(json.dumps(p) + "\n" for p in payloads))
    proc = run(
        "push",
        "enqueue",
        "--file",
        str(rows),
        "--vendor",
        "aimsio",
        "--entity",
        "User",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line (log lines share stderr)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def outbox(project: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(project / "vs.db")) as conn:
        q = "SELECT record_key, status, attempts FROM push_outbox ORDER BY id"
        return [tuple(r) for r in conn.execute(q)]


@pytest.fixture
def migrated(project: Path) -> Path:
    assert run("migrate", cwd=project).returncode == 0
    return project


@pytest.fixture
def faults(sandbox_url: str) -> Iterator[Any]:
    def set_faults(body: dict[str, Any]) -> None:
        req = urllib.request.Request(
            f"{sandbox_url}/aimsio/_sandbox/faults",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()

    yield set_faults
    set_faults({"error_rate": 0.0})


def test_push_exits_1_when_a_row_is_invalid_and_0_when_all_got_through(
    migrated: Path,
) -> None:
    enqueue(migrated, user("ok.cli@x"), user("bad.cli@x", userShortCode="TOOLONG"))
    proc = run("push", cwd=migrated)
    assert proc.returncode == 1, proc.stdout
    line = error_line(proc)
    assert "push incomplete" in line
    assert "invalid 1" in line
    assert run("push", cwd=migrated).returncode == 0  # nothing due: nothing failed


def test_push_exits_1_when_rows_are_dead_lettered(migrated: Path, faults: Any) -> None:
    faults({"error_rate": 1.0, "error_status": 503})
    config = migrated / "config" / "vendorsync.toml"
    text = config.read_text().replace("max_attempts = 5", "max_attempts = 1", 1)
    text = text.replace('schedule = "every 15m"', "retry = { max_attempts = 1 }", 1)
    config.write_text(text)
    enqueue(migrated, user("dead.cli@x"))
    proc = run("push", cwd=migrated)
    assert proc.returncode == 1, proc.stdout
    assert "dead 1" in error_line(proc)
    assert outbox(migrated) == [("dead.cli@x", "dead", 1)]


def test_wrong_password_pauses_push_exits_1_and_keeps_rows(migrated: Path) -> None:
    enqueue(migrated, user("auth.cli@x"))
    good = (migrated / "config" / "vendorsync.toml").read_text()
    bad = migrated / "bad-password.toml"
    bad.write_text(good.replace('password = "demo-secret" }', 'password = "wrong" }', 1))
    proc = run("push", "--config", str(bad), cwd=migrated)
    assert proc.returncode == 1, proc.stdout
    line = error_line(proc)
    assert "aimsio: authentication failed" in line
    assert "wrong" not in line
    assert outbox(migrated) == [("auth.cli@x", "pending", 0)]  # no attempt spent

    fixed = run("push", cwd=migrated)
    assert fixed.returncode == 0, fixed.stderr
    assert outbox(migrated) == [("auth.cli@x", "sent", 1)]


def test_push_exits_1_when_another_process_holds_the_vendor(migrated: Path) -> None:
    enqueue(migrated, user("lease.cli@x"))
    now = datetime.now(UTC).replace(tzinfo=None)
    with contextlib.closing(sqlite3.connect(migrated / "vs.db")) as conn, conn:
        conn.execute(
            "INSERT INTO lease (name, owner, acquired_at, expires_at, heartbeat_at)"
            " VALUES (?, ?, ?, ?, ?)",
            ("vendor:aimsio", "elsewhere", now, now + timedelta(hours=1), now),
        )
    proc = run("push", cwd=migrated)
    assert proc.returncode == 1, proc.stdout
    assert "deferred 1" in error_line(proc)
    assert outbox(migrated) == [("lease.cli@x", "pending", 0)]
