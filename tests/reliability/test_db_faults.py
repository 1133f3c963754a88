"""Database faults besides an outage and a lock (issue 17 §2): a read-only database and a
full disk, on SQLite and PostgreSQL.

Each case stages the vendor once, lets the vendor change, breaks the database, and runs
``vendorsync resync`` (and, for a read-only database, the daemon's ``run --once``): it must
exit non-zero with ONE line naming the condition and the database operation, no traceback,
and leave what was staged before intact. Once the fault is removed the next run converges
to the vendor, and the sandbox saw no limit violation all along.

The faults are real ones, made with the privileges the tests run with (root):

* read-only SQLite: the database's folder bind-mounted read-only over itself (EROFS; as
  root, ``chmod`` would not stop a write);
* read-only PostgreSQL: ``ALTER DATABASE … SET default_transaction_read_only = on``, as a
  database switched to read-only by its administrator or a standby;
* full disk, SQLite: the database on a 1 MiB tmpfs, filled up to ``FREE_KIB`` by a file;
* full disk, PostgreSQL: the database's default tablespace on a 4 MiB tmpfs of the owned
  cluster, filled to the last byte (the cluster's WAL stays on its own disk).

Without the right to mount (a container without CAP_SYS_ADMIN) the mount cases skip
locally and fail under ``CI``. The outcome table: ``pytest -m long -s`` on this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import sqlite_url
from tests.reliability.conftest import (
    Sandbox,
    diff_staged,
    error_lines,
    poll,
    read_leases,
    read_staged,
    run_cli,
    stderr_problems,
    write_config,
)
from tests.reliability.pg_cluster import PgCluster

pytestmark = [pytest.mark.long, pytest.mark.timeout(180)]

RECORDS = 30  # User rows: a first sync of ~3 s at Aimsio's 10 requests/s
LEASE_TTL_S = 3
FREE_KIB = 120  # left on a full SQLite disk: the run starts, then a batch does not fit
OUTCOMES: list[tuple[str, str, str, str]] = []


def must_mount() -> None:
    """Fail under CI, skip elsewhere, when this process may not mount file systems."""
    probe = Path(f"/tmp/vendorsync-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            timeout=15,
        )
        if ok.returncode == 0:
            subprocess.run(["umount", str(probe)], check=True, timeout=15)
            return
        why = ok.stderr.decode(errors="replace").strip()
    except OSError as exc:
        why = str(exc)
    finally:
        probe.rmdir()
    message = f"cannot mount (needed for a real read-only or full file system): {why}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[Path]:
    subprocess.run(["mount", *args, str(target)], check=True, timeout=15)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, timeout=15)


def fill(folder: Path, leave_kib: int) -> Path:
    """A file taking all the free space of ``folder``'s file system but ``leave_kib``."""
    st = os.statvfs(folder)
    size = st.f_bavail * st.f_frsize - leave_kib * 1024
    assert size > 0, f"only {st.f_bavail * st.f_frsize} bytes free on {folder}"
    filler = folder / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * size)
    return filler


# --- one case ---------------------------------------------------------------------------------
async def fault_case(
    name: str,
    db: str,
    *,
    tmp_path: Path,
    sandbox: Sandbox,
    url: str,
    break_db: Callable[[], Any],
    mend_db: Callable[[], Any],
    expect: str,
    daemon_too: bool,
) -> None:
    config = write_config(
        tmp_path / "vendorsync.toml",
        db_url=url,
        sandbox=sandbox,
        streams=("User",),
        batch_size=20,
        lease_ttl_s=LEASE_TTL_S,
        heartbeat_s=1,
    )
    cfg = ("--config", str(config))
    migrated = run_cli("migrate", "migrate", *cfg, cwd=tmp_path, timeout_s=60)
    assert migrated.returncode == 0, migrated.stderr
    first = run_cli("first", "resync", "aimsio", *cfg, cwd=tmp_path, timeout_s=60)
    assert first.returncode == 0, first.stderr
    before = await read_staged(url, "aimsio", "User")
    assert len(before.live) == RECORDS
    # The vendor changes: the next run has rows to write.
    sandbox.control("mutate", {"entity": "User", "change": 0.5, "add": 40, "seed": 7})

    await asyncio.to_thread(break_db)
    lines: list[str] = []
    try:
        commands = [("resync", ("resync", "aimsio"))]
        if daemon_too:
            commands.append(("run --once", ("run", "--once")))
        for label, args in commands:
            proc = run_cli(label.replace(" ", ""), *args, *cfg, cwd=tmp_path, timeout_s=90)
            assert proc.returncode not in (0, None), f"{label} exited 0 on a {name} database"
            assert not stderr_problems(proc.stderr), stderr_problems(proc.stderr)
            (line,) = error_lines(proc.stderr)
            assert expect in line, line
            assert " while " in line, line  # the database operation is named
            lines.append(f"{label}: exit {proc.returncode}: {line}")
    finally:
        await asyncio.to_thread(mend_db)

    after = await read_staged(url, "aimsio", "User")
    assert after.rows == after.distinct_keys

    async def leases_expired() -> bool:
        now = datetime.now(UTC)
        return all(expires < now for _, expires in (await read_leases(url)).values())

    await poll("the failed run's leases to expire", leases_expired, timeout_s=LEASE_TTL_S + 10)
    again = run_cli("again", "resync", "aimsio", *cfg, cwd=tmp_path, timeout_s=90)
    assert again.returncode == 0, again.stderr
    violations = sandbox.stats()["violation_count"]
    sandbox.lift_limits()  # our own reads of the truth are not the service's
    truth = await sandbox.truth("User")
    problems = diff_staged(await read_staged(url, "aimsio", "User"), truth)
    assert not problems, problems
    assert violations == 0
    # Nothing staged before the fault was lost or corrupted by it: each row was as before,
    # or as the vendor has it now (a batch that fitted before the disk filled up).
    for key, digest in before.live.items():
        assert after.live.get(key) in (digest, truth.get(key)), f"{key} lost or corrupted"
    for line in lines:
        OUTCOMES.append((name, db, "converged, 0 violations", line))
    print_table()


def print_table() -> None:
    print("\nfault            database    next run                 the failed run's line")
    for name, db, outcome, line in OUTCOMES:
        print(f"{name:<17}{db:<12}{outcome:<25}{line}")


# --- SQLite -----------------------------------------------------------------------------------
async def test_read_only_sqlite(tmp_path: Path, sandbox_factory: Any) -> None:
    must_mount()
    folder = tmp_path / "db"
    folder.mkdir()
    url = sqlite_url(folder / "staging.db")

    def break_db() -> None:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, timeout=15)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, timeout=15)

    def mend_db() -> None:
        subprocess.run(["umount", str(folder)], check=True, timeout=15)

    await fault_case(
        "read-only",
        "sqlite",
        tmp_path=tmp_path,
        sandbox=sandbox_factory(RECORDS),
        url=url,
        break_db=break_db,
        mend_db=mend_db,
        expect="database is read-only",
        daemon_too=True,
    )


async def test_full_disk_sqlite(tmp_path: Path, sandbox_factory: Any) -> None:
    must_mount()
    folder = tmp_path / "small"
    folder.mkdir()
    with mounted(folder, "-t", "tmpfs", "-o", "size=1m", "tmpfs"):
        fillers: list[Path] = []
        await fault_case(
            "full disk",
            "sqlite",
            tmp_path=tmp_path,
            sandbox=sandbox_factory(RECORDS),
            url=sqlite_url(folder / "staging.db"),
            break_db=lambda: fillers.append(fill(folder, FREE_KIB)),
            mend_db=lambda: fillers.pop().unlink(),
            expect="database disk is full",
            daemon_too=False,
        )
        with contextlib.closing(sqlite3.connect(folder / "staging.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- PostgreSQL -------------------------------------------------------------------------------
async def pg_admin(cluster: PgCluster, *statements: str) -> None:
    conn = await asyncpg.connect(cluster.dsn(), timeout=15)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def test_read_only_postgresql(
    tmp_path: Path, sandbox_factory: Any, pg_cluster: PgCluster, owned_pg_url: str
) -> None:
    name = owned_pg_url.rsplit("/", 1)[1]
    await fault_case(
        "read-only",
        "postgresql",
        tmp_path=tmp_path,
        sandbox=sandbox_factory(RECORDS),
        url=owned_pg_url,
        # New sessions of this database start read-only (as on a standby or after an
        # administrator's switch); the change is made from another database.
        break_db=lambda: asyncio.run(
            pg_admin(pg_cluster, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        ),
        mend_db=lambda: asyncio.run(
            pg_admin(pg_cluster, f"ALTER DATABASE {name} RESET default_transaction_read_only")
        ),
        expect="database is read-only",
        daemon_too=True,
    )


async def test_full_disk_postgresql(
    tmp_path: Path, sandbox_factory: Any, pg_cluster: PgCluster
) -> None:
    must_mount()
    pg_cluster.ensure_running()
    space = Path(tempfile.mkdtemp(prefix="vendorsync-ts-"))
    user = pwd.getpwnam(pg_cluster.os_user) if pg_cluster.os_user else None
    owner = f",uid={user.pw_uid},gid={user.pw_gid}" if user else ""
    db = f"vs_full_{uuid.uuid4().hex[:8]}"
    ts = f"ts_{db}"
    try:
        with mounted(space, "-t", "tmpfs", "-o", f"size=4m,mode=0700{owner}", "tmpfs"):
            (space / "pg").mkdir()
            if user is not None:
                os.chown(space / "pg", user.pw_uid, user.pw_gid)
            await pg_admin(
                pg_cluster,
                f"CREATE TABLESPACE {ts} LOCATION '{space / 'pg'}'",
                f"CREATE DATABASE {db}",
                # Every table the migration creates goes to the small tablespace.
                f"ALTER DATABASE {db} SET default_tablespace = {ts}",
            )
            fillers: list[Path] = []
            try:
                await fault_case(
                    "full disk",
                    "postgresql",
                    tmp_path=tmp_path,
                    sandbox=sandbox_factory(RECORDS),
                    url=pg_cluster.url(db),
                    # No page to spare: PostgreSQL writes in existing pages until a
                    # relation must grow by one.
                    break_db=lambda: fillers.append(fill(space, 0)),
                    mend_db=lambda: fillers.pop().unlink(),
                    expect="database disk is full",
                    daemon_too=False,
                )
            finally:
                await pg_admin(
                    pg_cluster, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
                    f"DROP TABLESPACE IF EXISTS {ts}",
                )  # fmt: skip
    finally:
        os.rmdir(space)
