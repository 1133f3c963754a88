"""The daemon: scheduled runs, health/readiness/metrics, graceful shutdown, run-once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings
from service.daemon.scheduler import Daemon, trigger_for
from service.db.leases import UNRELEASED
from service.db.tables import lease, staged_record, sync_run


@pytest.fixture
async def sandbox() -> Any:
    sb = await start_sandbox(SandboxOptions(records=15, seed=3), vendors=("aimsio",))
    yield sb
    await sb.close()


def daemon_settings(db_url: str, sb: RunningSandbox, **sync: Any) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "sync": {"batch_size": 5, **sync},
            "daemon": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 0.5},
            "vendors": {
                "aimsio": {
                    "base_url": sb.url("aimsio"),
                    "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
                    "max_parallel": 10,
                    "rate_per_s": 10,
                    "schedule": "every 1h",
                    "streams": {"User": {}, "Employee": {}},
                }
            },
        }
    )


async def rows(engine: AsyncEngine, query: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def wait_for(predicate: Any, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_triggers() -> None:
    assert "interval[0:15:00]" in str(trigger_for("every 15m"))
    assert "cron" in str(trigger_for("*/5 * * * *"))


async def test_daemon_runs_schedules_serves_health_and_stops_cleanly(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    daemon = Daemon(daemon_settings(db_url, sandbox))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def both_streams_done() -> bool:
        done = await rows(
            engine, sa.select(sync_run.c.stream).where(sync_run.c.status == "succeeded")
        )
        return {r.stream for r in done} == {"User", "Employee"}

    await wait_for(both_streams_done)
    assert daemon.health_url is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.health_url}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{daemon.health_url}/readyz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ready"
        async with http.get(f"{daemon.health_url}/metrics") as r:
            text = await r.text()
    assert 'vendorsync_runs_total{status="succeeded",stream="User",vendor="aimsio"} 1.0' in text
    assert "vendorsync_http_requests_total" in text
    assert "vendorsync_last_success_timestamp_seconds" in text
    assert 'vendorsync_group_assigned{group="aimsio"} 1.0' in text
    assert "vendorsync_replicas_live 1.0" in text
    stop.set()
    await asyncio.wait_for(task, 30)
    assert await rows(engine, sa.select(lease).where(UNRELEASED)) == []  # leases released
    staged = await rows(engine, sa.select(sa.func.count()).select_from(staged_record))
    assert staged[0][0] == 30


async def test_shutdown_cancels_a_slow_run_keeping_committed_batches(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sandbox.url('aimsio')}/_sandbox/faults", json={"latency_ms": 300})
    settings = daemon_settings(db_url, sandbox)
    settings.vendors["aimsio"].streams.pop("Employee")
    settings.vendors["aimsio"].max_parallel = 1
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def some_committed() -> bool:
        found = await rows(engine, sa.select(sa.func.count()).select_from(staged_record))
        return bool(found[0][0] >= 5)

    await wait_for(some_committed)
    stop.set()
    await asyncio.wait_for(task, 30)
    runs = await rows(engine, sa.select(sync_run.c.status, sync_run.c.error))
    assert [r.status for r in runs] == ["cancelled"]
    staged = await rows(engine, sa.select(sa.func.count()).select_from(staged_record))
    assert 5 <= staged[0][0] < 15  # committed batches stay; the rest waits for next time
    assert await rows(engine, sa.select(lease).where(UNRELEASED)) == []


async def test_run_once(engine: AsyncEngine, db_url: str, sandbox: RunningSandbox) -> None:
    daemon = Daemon(daemon_settings(db_url, sandbox))
    await asyncio.wait_for(daemon.run(asyncio.Event(), once=True), 60)
    done = await rows(engine, sa.select(sync_run.c.stream, sync_run.c.status))
    assert sorted(done) == [("Employee", "succeeded"), ("User", "succeeded")]


async def test_shutdown_lets_a_running_sync_finish_within_the_grace_period(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sandbox.url('aimsio')}/_sandbox/faults", json={"latency_ms": 100})
    settings = daemon_settings(db_url, sandbox)
    settings.vendors["aimsio"].streams.pop("Employee")
    settings.daemon.shutdown_grace_s = 30
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def started() -> bool:
        found = await rows(engine, sa.select(sync_run.c.id))
        return bool(found)

    await wait_for(started)
    stop.set()  # SIGTERM while the run is in progress
    await asyncio.wait_for(task, 30)
    runs = await rows(engine, sa.select(sync_run.c.status))
    assert [r.status for r in runs] == ["succeeded"]
    staged = await rows(engine, sa.select(sa.func.count()).select_from(staged_record))
    assert staged[0][0] == 15


async def test_a_busy_stream_is_retried_soon_not_a_schedule_later(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    from datetime import UTC, datetime

    from service.db import acquire_lease, release_lease

    settings = daemon_settings(db_url, sandbox, heartbeat_s=0.5, lease_ttl_s=30)
    settings.vendors["aimsio"].streams.pop("Employee")  # schedule: every 1h
    async with engine.begin() as conn:  # another process runs User right now
        await acquire_lease(conn, "stream:aimsio:User", "other", ttl_s=30, now=datetime.now(UTC))
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def refused() -> bool:
        return daemon.busy >= 1

    await wait_for(refused)
    async with engine.begin() as conn:  # the other process is done
        await release_lease(conn, "stream:aimsio:User", "other", now=datetime.now(UTC))

    async def ran() -> bool:
        return bool(
            await rows(engine, sa.select(sync_run.c.id).where(sync_run.c.status == "succeeded"))
        )

    await wait_for(ran, timeout_s=10)  # the busy-retry, not the hourly schedule
    stop.set()
    await asyncio.wait_for(task, 30)
    done = await rows(engine, sa.select(sync_run.c.status))
    assert [r.status for r in done] == ["succeeded"]


async def test_run_once_counts_failures(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    settings = daemon_settings(db_url, sandbox)
    settings.vendors["aimsio"].auth.password = SecretStr("wrong")
    daemon = Daemon(settings)
    await asyncio.wait_for(daemon.run(asyncio.Event(), once=True), 60)
    assert daemon.failures == 2
    done = await rows(engine, sa.select(sync_run.c.status))
    assert [r.status for r in done] == ["failed", "failed"]


async def test_no_run_starts_inside_a_blackout_window(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    start, end = now - timedelta(minutes=1), now + timedelta(minutes=2)
    settings = daemon_settings(db_url, sandbox)
    settings.vendors["aimsio"].blackouts = [f"{start:%H:%M}-{end:%H:%M}"]
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def deferred() -> bool:
        sched = daemon._scheduler
        return sched is not None and sched.get_job("aimsio:User:busy-retry") is not None

    await wait_for(deferred, timeout_s=10)
    job = daemon._scheduler.get_job("aimsio:User:busy-retry")  # type: ignore[union-attr]
    assert job.next_run_time >= end.replace(second=0, microsecond=0)  # after the window
    stop.set()
    await asyncio.wait_for(task, 30)
    assert await rows(engine, sa.select(sync_run.c.id)) == []


def test_ticks_line_up_across_processes() -> None:
    """Interval ticks count from a fixed instant; a cron's tick is its latest fire time."""
    from service.daemon.scheduler import TICK_ANCHOR, tick_start

    now = datetime(2026, 12, 2, 13, 7, 41, tzinfo=UTC)
    assert tick_start(trigger_for("every 15m"), now) == datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
    assert tick_start(trigger_for("every 4s"), now) == datetime(2026, 12, 2, 13, 7, 40, tzinfo=UTC)
    assert tick_start(trigger_for("*/5 * * * *"), now) == datetime(2026, 12, 2, 13, 5, tzinfo=UTC)
    # Any interval: a whole number of periods after the anchor, at most one period ago.
    tick = tick_start(trigger_for("every 7m"), now)
    assert (tick - TICK_ANCHOR).total_seconds() % 420 == 0
    assert timedelta(0) <= now - tick < timedelta(minutes=7)
    assert tick_start(trigger_for("0 3 * * *"), now) == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
