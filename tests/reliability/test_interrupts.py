"""Failures the user did not cause: a stopped or full database, a bug, a signal.

Each ends in one line and a clear exit code; a signal also leaves the database tidy
(the run marked cancelled, no lease left behind).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

import service.db
from service.cli import app
from service.db import create_engine
from tests.reliability.test_bad_input import config, good_line
from tests.reliability.test_cli import VENDORSYNC, one_line_error, project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures shared with test_cli

STOPPED_PG = "postgresql+asyncpg://postgres:topsecret@127.0.0.1:1/test"
DB = 'url = "sqlite+aiosqlite:///{tmp}/vs.db"'


@pytest.mark.parametrize(
    ("args", "operation"),
    [
        (("migrate",), "migrating"),
        (("status",), "reading status"),
        (("push", "enqueue", "--file", "rows.jsonl"), "adding rows to the push outbox"),
    ],
)
def test_stopped_postgresql_is_one_line_naming_the_operation(
    tmp_path: Path, args: tuple[str, ...], operation: str
) -> None:
    cfg = config(tmp_path, (DB, f'url = "{STOPPED_PG}"'))
    (tmp_path / "rows.jsonl").write_bytes(good_line() + b"\n")
    proc = run(*args, "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert line.startswith(f"error: database error while {operation}: "), line
    assert "ConnectionRefusedError" in line or "OSError" in line, line
    assert "topsecret" not in proc.stderr
    assert "sqlalche.me" not in proc.stderr


# --- a full disk, simulated with SQLite's max_page_count (in-process, CliRunner) --------------


def cap_sqlite_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines made from now on cannot grow their SQLite file: writes fail 'full'."""
    real = service.db.create_engine

    def small(url: str, **kw: Any) -> AsyncEngine:
        engine = real(url, **kw)

        @event.listens_for(engine.sync_engine, "connect")
        def _cap(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA page_count")
            pages = cur.fetchone()[0]
            cur.execute(f"PRAGMA max_page_count={max(pages, 1)}")
            cur.close()

        return engine

    monkeypatch.setattr(service.db, "create_engine", small)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def error_lines(result: Any) -> list[str]:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_full_disk_while_migrating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap_sqlite_growth(monkeypatch)
    result = invoke("migrate", "--config", str(config(tmp_path)))
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith("error: database disk is full while migrating: OperationalError: ")
    assert "full" in line


def test_full_disk_while_enqueueing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = str(config(tmp_path))
    assert invoke("migrate", "--config", cfg).exit_code == 0
    rows = tmp_path / "rows.jsonl"
    # Enough bytes to need new pages.
    rows.write_bytes(b"\n".join(good_line(userName=f"u{i}@x", pad="x" * 2000) for i in range(200)))
    cap_sqlite_growth(monkeypatch)
    result = invoke("push", "enqueue", "--file", str(rows), "--config", cfg)
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith("error: database disk is full while adding rows to the push outbox")
    assert "full" in line


# --- a bug ---------------------------------------------------------------------------------


def test_internal_error_is_one_line_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.engine.status

    async def broken(settings: Any) -> Any:
        raise ValueError("boom [/x] at postgresql://u:pw@h/d\nsecond line")

    monkeypatch.setattr(service.engine.status, "collect_status", broken)
    monkeypatch.delenv("VENDORSYNC_DEBUG", raising=False)
    result = invoke("status", "--config", str(config(tmp_path)))
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line == (
        "error: internal error: ValueError: boom [/x] at postgresql://u:***@h/d second line "
        "(rerun with --debug or VENDORSYNC_DEBUG=1 for the traceback)"
    )
    debug = invoke("--debug", "status", "--config", str(config(tmp_path)))
    assert isinstance(debug.exception, ValueError)
    monkeypatch.delenv("VENDORSYNC_DEBUG", raising=False)  # --debug sets it for the process


# --- signals -------------------------------------------------------------------------------


def sandbox_faults(url: str, faults: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{url}/aimsio/_sandbox/faults",
        data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql))).scalar()


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
async def test_signal_cancels_the_run_and_releases_leases(
    project: Path, sandbox_url: str, db_url: str, sig: signal.Signals
) -> None:
    cfg = project / "config" / "vendorsync.toml"
    text = cfg.read_text()
    cfg.write_text(text.replace(f"sqlite+aiosqlite:///{project}/vs.db", db_url))
    migrated = await asyncio.to_thread(run, "migrate", cwd=project)
    assert migrated.returncode == 0, migrated.stderr
    engine = create_engine(db_url)
    sandbox_faults(sandbox_url, {"latency_ms": 2500})
    proc = await asyncio.create_subprocess_exec(
        *VENDORSYNC,
        "resync",
        "aimsio",
        "User",
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(300):  # until the run holds its leases (bounded: 30 s)
            await asyncio.sleep(0.1)
            try:
                if await scalar(engine, "SELECT count(*) FROM sync_run WHERE status = 'running'"):
                    break
            except sa.exc.SQLAlchemyError:
                continue
        else:
            pytest.fail("the run never started")
        assert await scalar(engine, "SELECT count(*) FROM lease WHERE expires_at > heartbeat_at")
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        stderr = err.decode()
        assert proc.returncode == 128 + sig.value, stderr
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1] == f"error: interrupted ({sig.name})"
        assert await scalar(engine, "SELECT status FROM sync_run ORDER BY id DESC") == "cancelled"
        assert (
            await scalar(engine, "SELECT count(*) FROM lease WHERE expires_at > heartbeat_at") == 0
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sandbox_faults(sandbox_url, {"latency_ms": 0})
        await engine.dispose()
