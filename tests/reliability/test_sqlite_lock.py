"""A SQLite writer lock held longer than the busy timeout in the middle of a sync (issue 8 §1).

Another connection holds ``BEGIN EXCLUSIVE`` for ``LOCK_S`` (longer than the 5 s busy
timeout) while ``vendorsync resync`` commits batches. The run may wait the lock out or fail
cleanly; either way what it prints is what it committed (the CLI's table equals the
``sync_run`` rows and the staged rows it wrote), its exit code tells the truth, stderr
carries no traceback and one error line at most, and the next run converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sqlite_url
from tests.reliability.conftest import (
    COUNT_COLUMNS,
    Proc,
    Sandbox,
    diff_staged,
    error_lines,
    parse_runs_table,
    poll,
    read_leases,
    read_runs,
    read_staged,
    rows_written_by,
    run_cli,
    start_cli,
    stderr_problems,
    write_config,
)

RECORDS = 150  # User rows: 151 requests at 10/s, so the run lasts ~15 s
LATENCY_MS = 20
BATCH = 10  # a commit every ~1 s: the first one under the lock waits 5 s and gives up
LOCK_S = 7.0  # > SQLITE_BUSY_TIMEOUT_MS (5 s)
COMMITTED_BEFORE_LOCK = 2 * BATCH
STREAM = "User"
LEASE_TTL_S = 10


def staged_count(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM staged_record").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # schema not there yet


async def check_run_told_the_truth(
    proc: Proc, url: str, findings: list[str], observed: dict[str, Any]
) -> dict[str, Any] | None:
    """The process's exit code, printed table and stderr against the run rows it left."""
    code = proc.returncode
    observed[f"{proc.name}_exit"] = code
    observed[f"{proc.name}_stderr_lines"] = error_lines(proc.stderr)
    findings.extend(f"{proc.name}: {p}" for p in stderr_problems(proc.stderr))
    runs = [r for r in await read_runs(url) if r["stream"] == STREAM]
    run = runs[-1] if runs else None
    printed = parse_runs_table(proc.stdout)
    observed[f"{proc.name}_printed"] = printed
    if run is None:
        findings.append(f"{proc.name}: no sync_run row")
        return None
    stored = {c: int(run[c]) for c in COUNT_COLUMNS}
    observed[f"{proc.name}_run"] = {"id": run["id"], "status": run["status"], **stored}
    if run["status"] == "running":
        findings.append(f"{proc.name}: run {run['id']} left 'running' after the process exited")
    if code != (0 if run["status"] == "succeeded" else 1):
        findings.append(f"{proc.name}: exit code {code} but run {run['id']} is {run['status']}")
    rows = [p for p in printed if p.get("stream") == STREAM]
    if len(rows) != 1:
        findings.append(f"{proc.name}: expected one printed {STREAM} row, got {printed}")
    else:
        said = {c: int(rows[0][c]) for c in COUNT_COLUMNS}
        if said != stored or rows[0]["result"] != run["status"]:
            findings.append(
                f"{proc.name}: printed {rows[0]['result']} {said}, "
                f"but run {run['id']} is {run['status']} {stored}"
            )
    written = await rows_written_by(url, run["id"])
    observed[f"{proc.name}_rows_written"] = written
    if written != stored["inserted"] + stored["updated"]:
        findings.append(
            f"{proc.name}: run {run['id']} wrote {written} staged rows but counts "
            f"{stored['inserted']} inserted + {stored['updated']} updated"
        )
    return run


@pytest.mark.long  # the reliability tier: over 25 s
async def test_exclusive_lock_longer_than_busy_timeout_keeps_the_run_truthful(
    tmp_path: Path, sandbox_factory: Any
) -> None:
    sandbox: Sandbox = sandbox_factory(RECORDS, LATENCY_MS)
    db = tmp_path / "staging.db"
    url = sqlite_url(db)
    config = write_config(
        tmp_path / "vendorsync.toml",
        db_url=url,
        sandbox=sandbox,
        streams=(STREAM,),
        batch_size=BATCH,
        lease_ttl_s=LEASE_TTL_S,
        heartbeat_s=2,  # heartbeats also meet the lock
    )
    cfg = ("--config", str(config))
    migrated = run_cli("migrate", "migrate", *cfg, cwd=tmp_path, timeout_s=30)
    assert migrated.returncode == 0, migrated.stderr
    findings: list[str] = []
    observed: dict[str, Any] = {}

    first = start_cli("first", "resync", "aimsio", *cfg, cwd=tmp_path)
    try:

        def committed_some() -> bool:
            assert first.returncode is None, f"exited early:\n{first.stderr[-2000:]}"
            return staged_count(db) >= COMMITTED_BEFORE_LOCK

        await poll(f"{COMMITTED_BEFORE_LOCK} rows committed", committed_some, timeout_s=30)
        # A writer lock (WAL: readers go on, writers wait) held past the busy timeout.
        with contextlib.closing(sqlite3.connect(db, timeout=10, isolation_level=None)) as lock:
            lock.execute("BEGIN EXCLUSIVE")
            locked = time.monotonic()
            observed["rows_before_lock"] = staged_count(db)
            await asyncio.sleep(LOCK_S)
            lock.execute("ROLLBACK")
            observed["lock_s"] = round(time.monotonic() - locked, 1)
        first.wait(timeout_s=45)
    finally:
        first.kill()
    run = await check_run_told_the_truth(first, url, findings, observed)

    # The next run converges (it may have to wait out a lease the first one failed to free).
    left = await read_leases(url)
    observed["leases_left"] = sorted(left)
    if left:
        findings.append(f"leases not released when the first run exited: {sorted(left)}")

    async def expired() -> bool:
        now = datetime.now(UTC)
        return all(expires_at < now for _, expires_at in (await read_leases(url)).values())

    await poll("the first run's leases to expire", expired, timeout_s=LEASE_TTL_S + 5)
    second = run_cli("second", "resync", "aimsio", *cfg, cwd=tmp_path, timeout_s=45)
    again = await check_run_told_the_truth(second, url, findings, observed)
    if second.returncode != 0:
        findings.append(f"the next run exited {second.returncode}")
    if run is not None and again is not None and again["status"] == "succeeded":
        total = int(run["inserted"]) + int(again["inserted"])
        if total != RECORDS:
            findings.append(f"inserted {run['inserted']} + {again['inserted']} != {RECORDS}")

    observed["violations"] = sandbox.stats()["violation_count"]
    if observed["violations"]:
        findings.append(f"{observed['violations']} vendor limit violations")
    sandbox.lift_limits()
    findings.extend(
        diff_staged(await read_staged(url, "aimsio", STREAM), await sandbox.truth(STREAM))
    )

    print(json.dumps(observed, default=str))  # the figures, with -s or on failure
    assert not findings, "\n".join([*findings, json.dumps(observed, default=str)])
