"""Leases on SQLite and PostgreSQL: one holder at a time, across engines and processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import acquire_lease, create_engine, migrate, release_lease, renew_lease
from service.db.leases import UNRELEASED
from service.db.tables import lease
from service.errors import LeaseHeld, StagingError
from tests.conftest import sqlite_url

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NAME = "stream:aimsio:assets"


async def acquire(
    engine: AsyncEngine, owner: str, *, now: datetime = T0, ttl_s: float = 60
) -> None:
    async with engine.begin() as conn:
        await acquire_lease(conn, NAME, owner, ttl_s=ttl_s, now=now)


async def renew(engine: AsyncEngine, owner: str, *, now: datetime, ttl_s: float = 60) -> bool:
    async with engine.begin() as conn:
        return await renew_lease(conn, NAME, owner, ttl_s=ttl_s, now=now)


async def holder(engine: AsyncEngine) -> tuple[str, datetime, datetime] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(lease.c.owner, lease.c.acquired_at, lease.c.expires_at).where(
                    lease.c.name == NAME, UNRELEASED
                )
            )
        ).first()
    return None if row is None else (row.owner, row.acquired_at, row.expires_at)


async def test_second_owner_is_told_who_holds_it(engine: AsyncEngine) -> None:
    await acquire(engine, "host-a:1")
    with pytest.raises(LeaseHeld) as info:
        await acquire(engine, "host-b:2", now=T0 + timedelta(seconds=30))
    assert isinstance(info.value, StagingError)
    assert str(info.value) == (
        f"{NAME} is already running (owner host-a:1, since 2024-03-01T12:00:00+00:00; "
        "its lease expires at 2024-03-01T12:01:00+00:00 unless renewed)"
    )
    assert (info.value.name, info.value.owner) == (NAME, "host-a:1")


async def test_same_owner_reacquires_and_extends(engine: AsyncEngine) -> None:
    await acquire(engine, "a")
    await acquire(engine, "a", now=T0 + timedelta(seconds=50))
    assert await holder(engine) == ("a", T0, T0 + timedelta(seconds=110))


async def test_expired_lease_is_taken_over(engine: AsyncEngine) -> None:
    await acquire(engine, "a", ttl_s=10)
    with pytest.raises(LeaseHeld):
        await acquire(engine, "b", now=T0 + timedelta(seconds=10))  # expires_at is not past yet
    later = T0 + timedelta(seconds=11)
    await acquire(engine, "b", now=later)
    assert await holder(engine) == ("b", later, later + timedelta(seconds=60))
    assert not await renew(engine, "a", now=later)  # the old holder learns it lost the lease


async def test_renew_extends_only_our_lease(engine: AsyncEngine) -> None:
    await acquire(engine, "a", ttl_s=10)
    assert await renew(engine, "a", now=T0 + timedelta(seconds=8), ttl_s=10)
    assert await holder(engine) == ("a", T0, T0 + timedelta(seconds=18))
    assert not await renew(engine, "b", now=T0 + timedelta(seconds=9))
    with pytest.raises(LeaseHeld):  # renewed, so not expired at t=12
        await acquire(engine, "b", now=T0 + timedelta(seconds=12))


async def test_release_frees_the_lease_only_for_its_owner(engine: AsyncEngine) -> None:
    await acquire(engine, "a")
    async with engine.begin() as conn:
        await release_lease(conn, NAME, "b", now=T0)  # not ours: nothing happens
    assert (await holder(engine) or ("",))[0] == "a"
    async with engine.begin() as conn:
        await release_lease(conn, NAME, "a", now=T0)
    assert await holder(engine) is None
    assert not await renew(engine, "a", now=T0)
    await acquire(engine, "b", now=T0 + timedelta(seconds=1))


async def test_two_engines_racing_exactly_one_wins_each_round(
    engine: AsyncEngine, db_url: str
) -> None:
    other = create_engine(db_url)
    rounds, per_engine = 15, 4
    try:
        for r in range(rounds):

            async def contend(eng: AsyncEngine, owner: str, r: int = r) -> str:
                async with eng.begin() as conn:
                    try:
                        await acquire_lease(conn, f"race:{r}", owner, ttl_s=60, now=T0)
                    except LeaseHeld as exc:
                        return f"held by {exc.owner}"
                return owner

            results = await asyncio.gather(
                *(contend(engine, f"e1-{i}") for i in range(per_engine)),
                *(contend(other, f"e2-{i}") for i in range(per_engine)),
            )
            winners = [w for w in results if not w.startswith("held by")]
            assert len(winners) == 1, (r, results)
            assert sorted(results) == sorted(
                [winners[0]] + [f"held by {winners[0]}"] * (2 * per_engine - 1)
            )
            async with engine.connect() as conn:
                stored = await conn.scalar(
                    sa.select(lease.c.owner).where(lease.c.name == f"race:{r}")
                )
            assert stored == winners[0]
    finally:
        await other.dispose()


_CONTENDER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from datetime import UTC, datetime
    from pathlib import Path

    from service.db import acquire_lease, create_engine
    from service.errors import LeaseHeld

    url, owner, work, names = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

    async def main() -> None:
        engine = create_engine(url)
        async with engine.connect():  # open the connection before the start signal
            pass
        (work / f"ready-{owner}").touch()
        while not (work / "go").exists():
            time.sleep(0.005)
        won = []
        now = datetime(2024, 3, 1, tzinfo=UTC)
        for i in range(names):
            try:
                async with engine.begin() as conn:
                    await acquire_lease(conn, f"proc:{i}", owner, ttl_s=600, now=now)
                won.append(i)
            except LeaseHeld:
                pass
        await engine.dispose()
        print(json.dumps(won))

    asyncio.run(main())
    """
)


async def test_os_processes_racing_on_sqlite_exactly_one_wins(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "leases.db")
    await migrate(url)
    owners, names = ["p1", "p2", "p3"], 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CONTENDER,
            url,
            owner,
            str(tmp_path),
            str(names),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for owner in owners
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready-{o}").exists() for o in owners):
            assert time.monotonic() < deadline, "contenders did not start"
            assert all(p.returncode is None for p in procs), "a contender exited early"
            await asyncio.sleep(0.02)
        (tmp_path / "go").touch()
        async with asyncio.timeout(60):
            outputs = [await p.communicate() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    won = [set(json.loads(out)) for out, _ in outputs]
    for i in range(names):
        assert sum(i in w for w in won) == 1, (i, won)

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = dict((await conn.execute(sa.select(lease.c.name, lease.c.owner))).all())
    finally:
        await engine.dispose()
    assert rows == {f"proc:{i}": owner for owner, w in zip(owners, won, strict=True) for i in w}


async def test_taking_over_an_expired_lease_says_whose_and_since_when(engine: AsyncEngine) -> None:
    from service.db.leases import TakenOver

    async with engine.begin() as conn:
        assert await acquire_lease(conn, NAME, "a:1", ttl_s=60, now=T0) is None  # free
        assert await acquire_lease(conn, NAME, "a:1", ttl_s=60, now=T0) is None  # ours
    later = T0 + timedelta(seconds=90)
    async with engine.begin() as conn:
        taken = await acquire_lease(conn, NAME, "b:2", ttl_s=60, now=later)
    assert taken == TakenOver("a:1", T0 + timedelta(seconds=60), released=False)  # lapsed
    async with engine.begin() as conn:
        await release_lease(conn, NAME, "b:2", now=later + timedelta(seconds=1))
        taken = await acquire_lease(conn, NAME, "c:3", ttl_s=60, now=later + timedelta(seconds=2))
    assert taken == TakenOver("b:2", later + timedelta(seconds=1), released=True)


async def test_a_vendor_lease_taken_over_holds_requests_for_the_vendor_timeout(
    engine: AsyncEngine, db_url: str
) -> None:
    """The vendor may still work on a dead holder's last requests: the new holder's
    limiter waits out what is left of ``vendor_timeout_s`` since the lease expired."""
    from service.config import Settings
    from service.engine.runtime import Runtime

    now = [T0]
    settings = Settings.model_validate(
        {
            "database": {"url": db_url},
            "vendors": {
                "aimsio": {
                    "base_url": "http://127.0.0.1:1/aimsio",
                    "auth": {"kind": "basic", "username": "u", "password": "p"},
                    "vendor_timeout_s": 40,
                    "streams": {"User": {}},
                }
            },
        }
    )
    async with engine.begin() as conn:  # a holder that died 10 s after its lease expired
        await acquire_lease(conn, "vendor:aimsio", "dead:1", ttl_s=60, now=T0)
    now[0] = T0 + timedelta(seconds=70)
    async with (
        Runtime(settings, db=engine, clock=lambda: now[0]) as rt,
        rt.vendor_lease("aimsio"),
    ):
        paused = rt.connector("aimsio").client.limiter.paused_for_s()
    assert 29 <= paused <= 30


async def test_the_next_process_keeps_out_of_the_last_ones_rate_window(
    engine: AsyncEngine, db_url: str
) -> None:
    """Two runs one after another in two processes: the second waits until the first's
    last second has passed, so together they never exceed the rate."""
    from service.config import Settings
    from service.engine.runtime import Runtime

    settings = Settings.model_validate(
        {
            "database": {"url": db_url},
            "vendors": {
                "aimsio": {
                    "base_url": "http://127.0.0.1:1/aimsio",
                    "auth": {"kind": "basic", "username": "u", "password": "p"},
                    "streams": {"User": {}},
                }
            },
        }
    )
    now = [T0]
    async with (
        Runtime(settings, db=engine, clock=lambda: now[0]) as first,
        first.vendor_lease("aimsio"),
    ):
        now[0] = T0 + timedelta(seconds=5)
    now[0] = T0 + timedelta(seconds=5.3)  # 0.3 s after the first released it
    async with (
        Runtime(settings, db=engine, clock=lambda: now[0]) as second,
        second.vendor_lease("aimsio"),
    ):
        limiter = second.connector("aimsio").client.limiter
        paused = limiter.paused_for_s()
    assert limiter.period_s - 0.3 - 0.05 <= paused <= limiter.period_s - 0.3 + 0.05
