"""The command line as a user meets it: real processes, exit codes and one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VENDORSYNC, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path.cwd()), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [*VENDORSYNC, "sandbox", "--port", "0", "--records", "20"],
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first
        yield match.group(0)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def project(tmp_path: Path, sandbox_url: str) -> Path:
    """A working directory with a config pointing at the sandbox and a fresh SQLite."""
    text = Path("config/vendorsync.toml").read_text()
    text = text.replace("http://127.0.0.1:8765", sandbox_url)
    text = text.replace(
        "sqlite+aiosqlite:///./var/vendorsync.db", f"sqlite+aiosqlite:///{tmp_path}/vs.db"
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "vendorsync.toml").write_text(text)
    return tmp_path


def test_sandbox_answers_a_list_request_for_each_vendor(sandbox_url: str) -> None:
    import urllib.request

    for vendor in ("aimsio", "aqua", "imis", "amilia", "aimms"):
        with urllib.request.urlopen(f"{sandbox_url}/{vendor}/_sandbox/stats", timeout=5) as r:
            assert json.load(r)["vendor"] == vendor


def test_broken_config_is_one_line_naming_the_key(project: Path) -> None:
    bad = project / "bad.toml"
    bad.write_text(
        (project / "config/vendorsync.toml")
        .read_text()
        .replace("max_parallel = 10", "max_parallel = -1", 1)
    )
    proc = run("check-config", "--config", str(bad), cwd=project)
    assert proc.returncode == 2
    assert "vendors.aimsio.max_parallel" in one_line_error(proc)


def test_check_config_masks_secrets(project: Path) -> None:
    proc = run("check-config", "--show", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "demo-secret" not in proc.stdout
    assert json.loads(proc.stdout)["vendors"]["aimsio"]["auth"]["password"] == "***"


def test_schema_required_then_migrate_resync_status(project: Path) -> None:
    behind = run("status", cwd=project)
    assert behind.returncode == 1
    assert "vendorsync migrate" in one_line_error(behind)
    assert run("migrate", cwd=project).returncode == 0
    assert run("migrate", cwd=project).returncode == 0  # idempotent
    synced = run("resync", "aimsio", "User", cwd=project)
    assert synced.returncode == 0, synced.stderr
    assert "succeeded" in synced.stdout
    status = run("status", cwd=project)
    assert status.returncode == 0, status.stderr
    assert "User" in status.stdout
    assert "succeeded" in status.stdout
    assert "schedule (late" in status.stdout
    as_json = run("status", "--json", cwd=project)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    user = next(f for f in report["freshness"] if f["stream"] == "User")
    assert user["state"] == "fresh"
    assert user["schedule"] == "every 15m"
    assert user["next_run_at"] > user["last_started_at"]
    assert report["dead_letters"] == []
    views = run("views", cwd=project)
    assert views.returncode == 0, views.stderr
    assert "aimsio__user: " in views.stdout
    with contextlib.closing(sqlite3.connect(project / "vs.db")) as db:
        (n,) = db.execute("SELECT count(*) FROM aimsio__user WHERE NOT deleted").fetchone()
        (staged,) = db.execute(
            "SELECT count(*) FROM staged_record WHERE stream = 'User'"
        ).fetchone()
    assert n == staged > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("resync", "nosuch"), "Known vendors and streams: aimsio: User"),
        (("resync", "aimsio", "NoSuchStream"), "unknown stream 'NoSuchStream'"),
        (("resync", "aimsio", "--since", "yesterday-ish"), "ISO 8601"),
        (("resync", "aimsio", "--full", "--since", "2026-01-01"), "exclude each other"),
        (("push", "--vendor", "nosuch"), "unknown vendor 'nosuch'"),
    ],
)
def test_bad_arguments_exit_2(project: Path, args: tuple[str, ...], needle: str) -> None:
    run("migrate", cwd=project)
    proc = run(*args, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr


def test_enqueue_rejects_a_bad_file_and_adds_nothing(project: Path) -> None:
    run("migrate", cwd=project)
    good = {
        "userName": "a@x",
        "userFirstName": "A",
        "userLastName": "B",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
    }
    rows = project / "rows.jsonl"
    rows.write_text(
        json.dumps({"vendor": "aimsio", "entity": "User", "payload": good}) + "\n{not json\n"
    )
    proc = run("push", "enqueue", "--file", str(rows), cwd=project)
    assert proc.returncode == 2
    assert f"{rows}:2: invalid JSON" in one_line_error(proc)
    rows.write_text(json.dumps(good) + "\n")
    ok = run(
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
    assert ok.returncode == 0, ok.stderr
    assert "enqueued 1 of 1" in ok.stdout
    dry = run("push", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert "would-send" in dry.stdout
    sent = run("push", cwd=project)
    assert sent.returncode == 0, sent.stderr
    assert "sent" in sent.stdout


def test_second_runner_is_refused_while_the_first_runs(project: Path, sandbox_url: str) -> None:
    import urllib.request

    run("migrate", cwd=project)
    req = urllib.request.Request(
        f"{sandbox_url}/aimsio/_sandbox/faults",
        data=json.dumps({"latency_ms": 2500}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    first = subprocess.Popen(
        [*VENDORSYNC, "resync", "aimsio", "User"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the first runner really holds the stream (bounded), then try a second.
        db = project / "vs.db"
        deadline = time.monotonic() + 30
        held = False
        while not held and time.monotonic() < deadline:
            time.sleep(0.1)
            if db.exists():
                with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
                    try:
                        held = bool(
                            conn.execute(
                                "SELECT count(*) FROM lease WHERE expires_at > heartbeat_at"
                            ).fetchone()[0]
                        )
                    except sqlite3.OperationalError:
                        held = False  # schema not there yet
        assert held, "the first runner never took its lease"
        proc = run("resync", "aimsio", "User", cwd=project)
        assert proc.returncode == 1, proc.stderr
        assert "already running (owner " in one_line_error(proc)
    finally:
        _, first_err = first.communicate(timeout=60)
        reset = urllib.request.Request(
            f"{sandbox_url}/aimsio/_sandbox/faults",
            data=json.dumps({"latency_ms": 0}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(reset, timeout=5).close()
    assert first.returncode == 0, first_err


def test_resync_refuses_to_start_inside_a_blackout_window(project: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    window = f"{now - timedelta(minutes=2):%H:%M}-{now + timedelta(minutes=30):%H:%M}"
    config = project / "config" / "vendorsync.toml"
    config.write_text(
        config.read_text().replace(
            "[vendors.imis.streams]", f'blackouts = ["{window}"]\n\n[vendors.imis.streams]'
        )
    )
    run("migrate", cwd=project)
    proc = run("resync", "imis", "Party", cwd=project)
    assert proc.returncode == 75, proc.stderr
    line = one_line_error(proc)
    assert "imis is in a blackout window until" in line
    assert "--wait" in line
    # Nothing ran: no run row was written.
    with contextlib.closing(sqlite3.connect(project / "vs.db")) as db:
        assert db.execute("SELECT count(*) FROM sync_run").fetchone() == (0,)
    # Another vendor is not held back by iMIS's window.
    assert run("resync", "aimsio", "User", cwd=project).returncode == 0
