"""Fault-test fixtures: an owned PostgreSQL cluster, a sandbox process, and CLI processes.

The cluster (``pg_cluster``) is this module's own (never the shared server on 5432), so a
test may stop it under running processes. Without the PostgreSQL binaries its tests skip,
or fail when ``CI`` is set. The sandbox runs in its own process so the test's blocking
waits never skew the sandbox's request timing (and so its violation count).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import sqlalchemy as sa

from service.db import create_engine
from service.db.leases import UNRELEASED
from service.db.tables import lease, staged_record, sync_run
from service.models import payload_hash
from tests.reliability.pg_cluster import PgCluster, PgUnavailable

ROOT = Path(__file__).resolve().parents[2]
VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]
AIMSIO_API = "rest/api/standard/v1"
AIMSIO_AUTH = "Basic " + base64.b64encode(b"demo:demo-secret").decode()
WAIT_S = 15.0


def cli_env() -> dict[str, str]:
    """Our environment without VENDORSYNC_* overrides (the test's config file decides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENDORSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


# --- the owned PostgreSQL cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster on a free port, stopped and deleted after the module."""
    try:
        cluster = PgCluster.create()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL binaries are required under CI: {exc}", pytrace=False)
        pytest.skip(f"{exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def owned_pg_url(pg_cluster: PgCluster) -> str:
    """A fresh database on the owned cluster (started again if a test left it stopped)."""
    pg_cluster.ensure_running()
    return pg_cluster.create_database(f"vs_{uuid.uuid4().hex[:10]}")


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """A CLI process whose output goes to files (a full pipe can never block it)."""

    name: str
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout_s: float) -> int:
        """The exit code; a process still running after ``timeout_s`` is killed (and the
        test is told so by an AssertionError)."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} still running after {timeout_s}s; killed.\n{self.stderr[-3000:]}"
            ) from None
        finally:
            self._close()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=WAIT_S)
        self._close()

    def _close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""


def start_cli(name: str, *args: str, cwd: Path) -> Proc:
    out_path, err_path = cwd / f"{name}.out", cwd / f"{name}.err"
    out, err = out_path.open("wb"), err_path.open("wb")
    popen = subprocess.Popen([*VENDORSYNC, *args], cwd=cwd, env=cli_env(), stdout=out, stderr=err)
    return Proc(name, popen, out_path, err_path, [out, err])


def run_cli(name: str, *args: str, cwd: Path, timeout_s: float = 60) -> Proc:
    proc = start_cli(name, *args, cwd=cwd)
    proc.wait(timeout_s)
    return proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; any still running at teardown are killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


# APScheduler's notice that a job's previous run is still going: routine for a daemon whose
# schedule is shorter than a run, not an error.
_ROUTINE = re.compile(r"skipped: maximum number of running instances reached")


def stderr_problems(text: str, *, max_plain_lines: int = 1) -> list[str]:
    """What is wrong with a process's stderr: a traceback, or more than ``max_plain_lines``
    lines that are not structured (JSON) log records, i.e. more than one error line."""
    problems = []
    if "Traceback" in text:
        start = text.index("Traceback")
        problems.append("traceback on stderr: " + text[start : start + 1500])
    plain = error_lines(text)
    if len(plain) > max_plain_lines:
        problems.append(f"{len(plain)} non-log lines on stderr: {plain[:5]}")
    return problems


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def plain_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not _is_json(line)]


def error_lines(text: str) -> list[str]:
    """stderr lines that are neither structured log records nor routine notices."""
    return [line for line in plain_lines(text) if not _ROUTINE.search(line)]


def log_events(text: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event") == event:
                out.append(rec)
    return out


# --- the sandbox ----------------------------------------------------------------------------


@dataclass
class Sandbox:
    url: str
    proc: subprocess.Popen[str]

    def aimsio(self) -> str:
        return f"{self.url}/aimsio"

    def control(self, what: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.aimsio()}/_sandbox/{what}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
            return json.load(resp)

    def stats(self) -> dict[str, Any]:
        return dict(self.control("stats"))

    def lift_limits(self) -> None:
        """Let the test read the truth quickly (after the violations were read)."""
        self.control(
            "faults", {"latency_ms": 0, "limits": {"max_parallel": 500, "rate_per_s": 1e6}}
        )

    async def truth(self, entity: str) -> dict[str, str]:
        """The vendor's live ``{key: payload hash}`` for ``entity``, read past our limiter."""
        headers = {"Authorization": AIMSIO_AUTH}
        base = f"{self.aimsio()}/{AIMSIO_API}/{entity}"
        gate = asyncio.Semaphore(20)
        timeout = aiohttp.ClientTimeout(total=WAIT_S)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            async with http.get(base) as resp:
                assert resp.status == 200, await resp.text()
                stubs = await resp.json()

            async def one(stub: dict[str, Any]) -> tuple[str, str]:
                key = str(stub.get("guid") or stub["id"])
                async with gate, http.get(f"{base}/{key}") as resp:
                    assert resp.status == 200, await resp.text()
                    return key, payload_hash(await resp.json())

            pairs = await asyncio.gather(*(one(s) for s in stubs))
        return dict(pairs)


@pytest.fixture
def sandbox_factory() -> Iterator[Any]:
    """``start(records, latency_ms)`` → a sandbox process on 127.0.0.1 (stopped afterwards)."""
    started: list[subprocess.Popen[str]] = []

    def start(records: int, latency_ms: float = 0) -> Sandbox:
        proc = subprocess.Popen(
            [
                *VENDORSYNC,
                "sandbox",
                "--port",
                "0",
                "--records",
                str(records),
                "--latency-ms",
                str(latency_ms),
            ],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        # readline blocks; the sandbox prints its address once it listens (or dies).
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, f"sandbox did not start: {first!r}"
        return Sandbox(match.group(0), proc)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()


# --- config and the staging database --------------------------------------------------------


def write_config(
    path: Path,
    *,
    db_url: str,
    sandbox: Sandbox,
    streams: tuple[str, ...],
    batch_size: int = 500,
    lease_ttl_s: float = 60,
    heartbeat_s: float = 20,
    schedule: str = "every 15m",
) -> Path:
    stream_lines = "\n".join(f"{s} = {{}}" for s in streams)
    path.write_text(
        f"""\
log_level = "info"
log_format = "json"

[database]
url = "{db_url}"

[sync]
batch_size = {batch_size}
lease_ttl_s = {lease_ttl_s}
heartbeat_s = {heartbeat_s}

[daemon]
host = "127.0.0.1"
port = 0
shutdown_grace_s = 5

[vendors.aimsio]
base_url = "{sandbox.aimsio()}"
max_parallel = 10
rate_per_s = 10
timeout_s = 15
schedule = "{schedule}"
auth = {{ kind = "basic", username = "demo", password = "demo-secret" }}
retry = {{ max_attempts = 6, base_s = 0.2, max_backoff_s = 2, max_elapsed_s = 20 }}

[vendors.aimsio.streams]
{stream_lines}
"""
    )
    return path


@dataclass
class Staged:
    live: dict[str, str]  # key → payload hash, rows not soft-deleted
    rows: int  # every row of the stream (live or deleted)
    distinct_keys: int


async def read_staged(db_url: str, vendor: str, stream: str) -> Staged:
    t = staged_record
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.select(t.c.record_key, t.c.payload_hash, t.c.deleted_at).where(
                    t.c.vendor == vendor, t.c.stream == stream
                )
            )
            rows = result.all()
    finally:
        await engine.dispose()
    return Staged(
        live={r.record_key: r.payload_hash for r in rows if r.deleted_at is None},
        rows=len(rows),
        distinct_keys=len({r.record_key for r in rows}),
    )


async def read_leases(db_url: str) -> dict[str, tuple[str, datetime]]:
    """Lease rows: name → (owner, expires_at)."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(lease.c.name, lease.c.owner, lease.c.expires_at).where(UNRELEASED)
                )
            ).all()
    finally:
        await engine.dispose()
    return {r.name: (r.owner, r.expires_at) for r in rows}


async def read_runs(db_url: str) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(sync_run).order_by(sync_run.c.id))
            return [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()


async def rows_written_by(db_url: str, run_id: int) -> int:
    """Staged rows whose last write was this run (its inserts and updates)."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return int(
                await conn.scalar(
                    sa.select(sa.func.count()).where(staged_record.c.last_run_id == run_id)
                )
                or 0
            )
    finally:
        await engine.dispose()


def diff_staged(staged: Staged, truth: dict[str, str]) -> list[str]:
    """How the staged rows differ from the vendor's: missing, extra, changed, duplicated."""
    out = []
    missing = truth.keys() - staged.live.keys()
    extra = staged.live.keys() - truth.keys()
    changed = [k for k in truth.keys() & staged.live.keys() if truth[k] != staged.live[k]]
    if missing:
        out.append(f"{len(missing)} vendor rows not staged (e.g. {sorted(missing)[:3]})")
    if extra:
        out.append(f"{len(extra)} staged rows the vendor does not have (e.g. {sorted(extra)[:3]})")
    if changed:
        out.append(f"{len(changed)} staged payloads differ (e.g. {sorted(changed)[:3]})")
    if staged.distinct_keys != staged.rows:
        out.append(f"duplicates: {staged.rows} rows for {staged.distinct_keys} keys")
    return out


COUNT_COLUMNS = ("inserted", "updated", "unchanged", "deleted", "requests")


def parse_runs_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the CLI's runs table (vendor, stream, result, counts...)."""
    header: list[str] | None = None
    rows = []
    for line in stdout.splitlines():
        if line.startswith("┃") and "vendor" in line:
            header = [c.strip() for c in line.strip("┃").split("┃")]
        elif line.startswith("│") and header is not None:
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


async def poll(what: str, check: Any, timeout_s: float, interval_s: float = 0.2) -> Any:
    """Await ``check()`` (sync or async) until truthy, returning it; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
