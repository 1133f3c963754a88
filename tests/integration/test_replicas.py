"""Daemon replicas on one PostgreSQL share the limit groups; SQLite refuses a second one.

Real daemon processes (``vendorsync run``) against the sandbox over HTTP: 12 Aimsio
accounts (sandbox tenants ``demo-1`` … ``demo-12``), 3 replicas, one SIGKILLed (the other
two take its groups over), a replacement and then a fourth joining (3/3/3/3). Lease TTL and schedule are short so the whole story takes well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.daemon.scheduler import TICK_ANCHOR
from service.db import create_engine, migrate
from service.db.tables import lease, staged_record, sync_run
from tests.conftest import drop_pg_schema, fresh_pg_schema, pg_url_with_schema, require_pg

VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]
ACCOUNTS = 12
TICK_S = 4
TTL_S = 3
HEARTBEAT_S = 1
WAIT_ROUNDS = 600  # polls of 0.1 s: every wait below is bounded (60 s)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    base = await require_pg()
    schema = await fresh_pg_schema(base, "replicas")
    try:
        yield pg_url_with_schema(base, schema)
    finally:
        await drop_pg_schema(base, schema)


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox(SandboxOptions(records=8, seed=21), vendors=("aimsio",))
    yield sb
    await sb.close()


def write_config(
    path: Path, db_url: str, sb: RunningSandbox, accounts: int, ttl_s: float = TTL_S
) -> Path:
    lines = [
        f'[database]\nurl = "{db_url}"',
        f"[sync]\nlease_ttl_s = {ttl_s}\nheartbeat_s = {HEARTBEAT_S}",
        '[daemon]\nhost = "127.0.0.1"\nport = 0\nshutdown_grace_s = 2',
    ]
    for n in range(1, accounts + 1):
        lines.append(
            f"[vendors.acct_{n:02d}]\n"
            'connector = "aimsio"\n'
            f'base_url = "{sb.url("aimsio")}"\n'
            "max_parallel = 10\nrate_per_s = 10\n"
            f'schedule = "every {TICK_S}s"\n'
            f'auth = {{ kind = "basic", username = "demo-{n}", password = "demo-secret" }}\n'
            "streams = { User = {} }"
        )
    path.write_text("\n\n".join(lines) + "\n")
    return path


async def spawn(cfg: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            *VENDORSYNC,
            "run",
            "--config",
            str(cfg),
            env={**os.environ, "PYTHONPATH": str(Path.cwd()), "VENDORSYNC_LOG_FORMAT": "json"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def assignments(engine: AsyncEngine) -> dict[str, list[str]]:
    """Live replica owner → the groups it is assigned."""
    now = datetime.now(UTC)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(lease.c.name, lease.c.owner).where(
                    lease.c.name.like("assigned:%"), lease.c.expires_at >= now
                )
            )
        ).all()
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        out[r.owner].append(r.name.removeprefix("assigned:vendor:"))
    return dict(out)


async def wait_for_shares(engine: AsyncEngine, shares: list[int]) -> dict[str, list[str]]:
    for _ in range(WAIT_ROUNDS):
        found = await assignments(engine)
        if sorted(len(v) for v in found.values()) == shares:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"groups never split {shares}: {await assignments(engine)}")


def owner_of(proc: asyncio.subprocess.Process, owners: dict[str, list[str]]) -> str:
    return next(o for o in owners if f":{proc.pid}:" in o)


async def tenant_listing(sb: RunningSandbox, user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:demo-secret".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http,
        http.get(sb.url("aimsio") + "/rest/api/standard/v1/User") as resp,
    ):
        return {str(u["guid"]): str(u["updatedAt"]) for u in await resp.json()}


async def sandbox_post(sb: RunningSandbox, what: str, tenant: str, body: Any) -> Any:
    url = f"{sb.url('aimsio')}/_sandbox/{what}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, params={"tenant": tenant}, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def tick_of(at: datetime) -> int:
    return int((at - TICK_ANCHOR).total_seconds() // TICK_S)


@pytest.mark.long  # the reliability tier: over 25 s
async def test_replicas_share_take_over_and_rebalance(
    pg_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    engine = create_engine(pg_url)
    await migrate(engine)
    cfg = write_config(tmp_path / "vs.toml", pg_url, sandbox, ACCOUNTS)
    procs = [await spawn(cfg, tmp_path / f"r{i}.log") for i in range(3)]
    try:
        owners = await wait_for_shares(engine, [4, 4, 4])
        steady_from = datetime.now(UTC)
        await asyncio.sleep(2 * TICK_S + 1)  # two whole ticks with three replicas
        steady_to = datetime.now(UTC)

        victim = procs[0]
        dead = owner_of(victim, owners)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        # Changes the dead replica's accounts must still bring in (after the takeover).
        for group in owners[dead]:
            n = int(group.removeprefix("acct_"))
            await sandbox_post(sandbox, "mutate", f"demo-{n}", {"entity": "User", "change": 0.5})
        after_kill = await wait_for_shares(engine, [6, 6])
        assert dead not in after_kill

        # A replacement for the dead one, then a fourth replica: the groups rebalance.
        procs.append(await spawn(cfg, tmp_path / "r3.log"))
        await wait_for_shares(engine, [4, 4, 4])
        procs.append(await spawn(cfg, tmp_path / "r4.log"))
        await wait_for_shares(engine, [3, 3, 3, 3])
        await asyncio.sleep(TICK_S + 2)  # one whole tick after the rebalance
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=20)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    logs = "\n".join((tmp_path / f"r{i}.log").read_text() for i in range(5))
    assert "Traceback" not in logs
    async with engine.connect() as conn:
        runs = (
            await conn.execute(
                sa.select(
                    sync_run.c.vendor,
                    sync_run.c.owner,
                    sync_run.c.status,
                    sync_run.c.started_at,
                    sync_run.c.finished_at,
                ).order_by(sync_run.c.started_at)
            )
        ).all()
        staged = (
            await conn.execute(
                sa.select(
                    staged_record.c.vendor, staged_record.c.record_key, staged_record.c.cursor
                ).where(staged_record.c.deleted_at.is_(None))
            )
        ).all()
    await engine.dispose()

    by_account: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        by_account[r.vendor].append(r)
    assert len(by_account) == ACCOUNTS
    for account, rs in by_account.items():
        # Never two runs of one stream at once, across all replicas.
        finished = [r for r in rs if r.finished_at is not None]
        for a, b in itertools.pairwise(finished):
            assert b.started_at >= a.finished_at, (account, a, b)
        ok = [r for r in rs if r.status == "succeeded"]
        per_tick = Counter(tick_of(r.started_at) for r in ok)
        assert max(per_tick.values()) == 1, (account, per_tick)  # never twice in a tick
        steady = range(tick_of(steady_from) + 1, tick_of(steady_to))
        assert all(per_tick[t] == 1 for t in steady), (account, per_tick, steady)
        assert {r.owner for r in ok} - {None}  # ran somewhere

    # Every account's limits kept, on its own sandbox tenant.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox.url('aimsio')}/_sandbox/stats", params={"tenant": "*"}) as resp,
    ):
        tenants = (await resp.json())["tenants"]
    for n in range(1, ACCOUNTS + 1):
        t = tenants[f"demo-{n}"]
        assert t["requests"] > 0
        assert t["violation_count"] == 0, t["violations"]
        assert t["rate_limited"] == 0

    # The staged data equals each account's data in the sandbox (the changes included).
    got: dict[str, dict[str, str]] = defaultdict(dict)
    for s in staged:
        got[s.vendor][s.record_key] = s.cursor
    for n in range(1, ACCOUNTS + 1):
        assert got[f"acct_{n:02d}"] == await tenant_listing(sandbox, f"demo-{n}")


async def test_a_second_daemon_on_sqlite_is_refused(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'vs.db'}"
    engine = create_engine(db_url)
    await migrate(engine)
    await engine.dispose()
    # A TTL longer than every wait below: a takeover seen here did not wait for expiry.
    cfg = write_config(tmp_path / "vs.toml", db_url, sandbox, 2, ttl_s=120)
    first = await spawn(cfg, tmp_path / "first.log")
    try:
        engine = create_engine(db_url)
        for _ in range(WAIT_ROUNDS):
            async with engine.connect() as conn:
                held = (
                    await conn.execute(
                        sa.select(sa.func.count()).where(lease.c.name == "replica:sqlite")
                    )
                ).scalar()
            if held:
                break
            await asyncio.sleep(0.1)
        await engine.dispose()
        second = await asyncio.create_subprocess_exec(
            *VENDORSYNC,
            "run",
            "--config",
            str(cfg),
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(second.communicate(), timeout=30)
        lines = err.decode().strip().splitlines()
        assert second.returncode == 2, lines
        assert len(lines) == 1, lines
        assert "several replicas need PostgreSQL" in lines[0]
        assert "database.url" in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.wait(), timeout=20)
    assert first.returncode == 0

    # A daemon that crashed (its lease still unexpired) does not keep the next one out.
    crashed = await spawn(cfg, tmp_path / "crashed.log")
    engine = create_engine(db_url)
    try:
        await wait_for_shares(engine, [2])
        crashed.send_signal(signal.SIGKILL)
        await crashed.wait()
        restarted = await spawn(cfg, tmp_path / "restarted.log")
        try:
            for _ in range(WAIT_ROUNDS):  # 60 s at most: before the crashed one's rows expire
                shares = await assignments(engine)
                if any(f":{restarted.pid}:" in o and len(g) == 2 for o, g in shares.items()):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the restarted daemon never took the groups: {shares}")
        finally:
            restarted.send_signal(signal.SIGTERM)
            await asyncio.wait_for(restarted.wait(), timeout=20)
        assert restarted.returncode == 0
    finally:
        await engine.dispose()


def test_fair_share() -> None:
    from service.engine.replicas import fair_share

    assert [fair_share(12, n) for n in (1, 2, 3, 4, 5)] == [12, 6, 4, 3, 3]
    assert fair_share(0, 3) == 0


async def test_replicas_in_process_split_and_status_shows_them(
    pg_url: str, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """Two Replica objects on one PostgreSQL: 4 groups go 4/0 → 2/2; status names holders."""
    from service.config import load_settings
    from service.engine.groups import limit_groups
    from service.engine.replicas import Replica
    from service.engine.runtime import Runtime
    from service.engine.status import collect_status

    engine = create_engine(pg_url)
    await migrate(engine)
    await engine.dispose()
    settings = load_settings(write_config(tmp_path / "vs.toml", pg_url, sandbox, 4))
    groups = list(limit_groups(settings).values())
    async with Runtime(settings, owner="r-a") as a, Runtime(settings, owner="r-b") as b:
        ra, rb = Replica(a, groups, round_s=3600), Replica(b, groups, round_s=3600)
        await ra.start()
        assert len(ra.held()) == 4
        await rb.start()  # a fair share is 2 now, but every group is taken
        assert rb.held() == []
        await ra.balance()  # gives up its surplus …
        await rb.balance()  # … which the newcomer takes
        assert (len(ra.held()), len(rb.held())) == (2, 2)
        assert all(ra.assigned(g.lease) != rb.assigned(g.lease) for g in groups)
        report = await collect_status(settings)
        assert report["replicas"] == ["r-a", "r-b"]
        holders = {g["group"]: g["replica"] for g in report["groups"]}
        assert sorted(holders.values()) == ["r-a", "r-a", "r-b", "r-b"]
        shown = await asyncio.create_subprocess_exec(
            *VENDORSYNC,
            "status",
            "--config",
            str(tmp_path / "vs.toml"),
            env={**os.environ, "PYTHONPATH": str(Path.cwd()), "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(shown.communicate(), timeout=30)
        text = out.decode()
        assert "limit groups (2 live replica(s))" in text
        # The limit-groups table (the schedule table lists the accounts' streams too).
        rows = [line for line in text.splitlines() if "acct_0" in line and "User" not in line]
        assert len(rows) == 4
        assert sum("r-a" in r for r in rows) == sum("r-b" in r for r in rows) == 2
        await rb.close()
        await ra.balance()  # the other left cleanly: its groups are free at once
        assert len(ra.held()) == 4
        await ra.close()
    report = await collect_status(settings)
    assert report["replicas"] == []
    assert {g["replica"] for g in report["groups"]} == {None}
