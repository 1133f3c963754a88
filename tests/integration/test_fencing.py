"""Leases that fence, on both databases: real lock contention and real takeovers.

A renewal the database cannot answer fences the vendor's limiter (no request leaves)
until it is confirmed again; a lease another process took stops the run; heartbeat
trouble never leaks into a run's result; runs whose process died are shown abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db import acquire_lease, create_engine, start_run, stream_statuses
from service.db.leases import UNRELEASED
from service.db.tables import lease, sync_run
from service.engine.resync import resync_streams
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream, full_due
from tests.integration.test_engine import VENDOR, SourceConnector, make_settings, staged_count
from tests.integration.test_engine import source as source  # a fixture

STREAM_LEASE = f"stream:{VENDOR}:items"
VENDOR_LEASE = f"vendor:{VENDOR}"


async def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def lease_row_locked(db_url: str, name: str) -> AsyncIterator[None]:
    """Another connection blocks writes to the lease row: SQLite's whole file
    (``BEGIN EXCLUSIVE``), PostgreSQL's row (``FOR UPDATE``), as a busy database would."""
    other = create_engine(db_url)
    try:
        async with other.begin() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN EXCLUSIVE")
            else:
                await conn.execute(
                    sa.select(lease.c.name).where(lease.c.name == name).with_for_update()
                )
            yield
    finally:
        await other.dispose()


async def lease_rows(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return {r.name: r.owner for r in await conn.execute(sa.select(lease).where(UNRELEASED))}


async def test_unconfirmed_vendor_lease_fences_the_limiter_until_renewed(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url, lease_ttl_s=3, heartbeat_s=0.2)
    async with Runtime(settings, db=engine, owner="proc-a") as rt:
        limiter = rt.connector(VENDOR).client.limiter
        async with rt.vendor_lease(VENDOR) as held:
            assert not limiter.fenced
            async with lease_row_locked(db_url, VENDOR_LEASE):
                await wait_until(lambda: limiter.fenced)
                # No request may leave while the lease is unconfirmed.
                slot = asyncio.ensure_future(limiter.slot().__aenter__())
                await asyncio.sleep(0.3)
                assert not slot.done()
                assert VENDOR_LEASE in (limiter.fence_reason or "")
            await wait_until(lambda: not limiter.fenced)
            await asyncio.wait_for(slot, 5)  # granted once the lease is confirmed again
            assert not held.lost.is_set()
        # Released on the way out, though its heartbeat met errors.
        assert VENDOR_LEASE not in await lease_rows(engine)


async def test_heartbeat_trouble_never_leaks_into_the_run(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url, lease_ttl_s=3, heartbeat_s=0.2)
    gate = asyncio.Event()
    source.gate = gate
    async with Runtime(settings, db=engine, owner="proc-a") as rt:
        limiter = rt.connector(VENDOR).client.limiter
        run = asyncio.create_task(execute_stream(rt, VENDOR, "items", "manual"))
        await wait_until(lambda: rt.holds(VENDOR_LEASE))
        async with lease_row_locked(db_url, VENDOR_LEASE):
            await wait_until(lambda: limiter.fenced)
        gate.set()
        result = await asyncio.wait_for(run, 30)
    assert result.status == "succeeded", result.error
    assert result.counts.inserted == 95
    assert await lease_rows(engine) == {}


async def test_a_lease_taken_by_another_process_stops_the_run(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url, lease_ttl_s=3, heartbeat_s=0.2)
    gate = asyncio.Event()
    source.gate = gate
    async with Runtime(settings, db=engine, owner="proc-a") as rt:
        limiter = rt.connector(VENDOR).client.limiter
        run = asyncio.create_task(execute_stream(rt, VENDOR, "items", "manual"))
        await wait_until(lambda: rt.holds(VENDOR_LEASE))
        # As if our lease had expired during an outage and another process took it.
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(lease)
                .where(lease.c.name == VENDOR_LEASE)
                .values(owner="proc-b", expires_at=datetime.now(UTC) + timedelta(seconds=60))
            )
        result = await asyncio.wait_for(run, 10)
        assert limiter.fenced  # nothing more leaves for this vendor from here
    assert result.status == "failed"
    assert "lost: taken by proc-b" in (result.error or "")
    # Its lease stays with its new owner; our stream lease was released.
    assert await lease_rows(engine) == {VENDOR_LEASE: "proc-b"}
    assert await staged_count(engine) == 0


async def test_a_failed_resync_reports_what_it_committed(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    source.fail_after = 3
    [result] = await resync_streams(make_settings(db_url), VENDOR, "items")
    assert result.status == "failed"
    assert result.counts.inserted == 30  # three batches of ten were committed
    assert await staged_count(engine) == 30
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(sync_run))).one()
    assert (row.status, row.inserted) == ("failed", 30)


async def test_runs_of_a_dead_process_are_abandoned(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    async with engine.begin() as conn:  # a process that died mid-run left this
        await start_run(conn, VENDOR, "items", "schedule", now=datetime.now(UTC), owner="dead")
    async with engine.connect() as conn:
        [status] = await stream_statuses(conn)
    assert status.last_run_status == "abandoned"
    # Its live lease would say it still runs.
    async with engine.begin() as conn:
        await acquire_lease(conn, STREAM_LEASE, "dead", ttl_s=60, now=datetime.now(UTC))
        [status] = await stream_statuses(conn)
        assert status.last_run_status == "running"
        await conn.execute(sa.delete(lease))
    async with Runtime(make_settings(db_url), db=engine) as rt:
        await execute_stream(rt, VENDOR, "items", "manual")
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(sync_run.c.status).order_by(sync_run.c.id))).all()
    assert [r.status for r in rows] == ["abandoned", "succeeded"]


async def test_records_the_database_cannot_hold_are_refused_one_by_one(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector], monkeypatch: Any
) -> None:
    rows = [{"id": i, "v": 1, "name": f"n{i}"} for i in range(25)]
    rows[7]["name"] = "bad\u0000name"
    rows[18]["tags"] = [{"deep": "x\u0000"}]
    monkeypatch.setattr(SourceConnector, "source", rows)
    async with Runtime(make_settings(db_url), db=engine) as rt:
        result = await execute_stream(rt, VENDOR, "items", "manual")
    assert result.status == "succeeded"
    assert (result.counts.inserted, result.counts.invalid) == (23, 2)
    assert "2 invalid record(s) not staged (7, 18)" in (result.error or "")
    assert await staged_count(engine) == 23
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(sync_run.c.invalid))).one()
    assert row.invalid == 2


def test_full_due() -> None:
    now = datetime(2026, 1, 8, tzinfo=UTC)
    week = 7 * 86400.0
    assert not full_due(None, None, now)
    assert full_due(None, week, now)
    assert not full_due(now - timedelta(days=6), week, now)
    assert full_due(now - timedelta(days=7), week, now)


async def test_scheduled_runs_reread_everything_every_full_every(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url)
    settings = Settings.model_validate(
        {
            **settings.model_dump(),
            "vendors": {
                VENDOR: {
                    **settings.vendors[VENDOR].model_dump(),
                    "streams": {"items": {"full_every": "1d"}},
                }
            },
        }
    )
    async with Runtime(settings, db=engine) as rt:
        first = await execute_stream(rt, VENDOR, "items", "schedule")
        second = await execute_stream(rt, VENDOR, "items", "schedule")
        async with engine.begin() as conn:  # the first (full) run was two days ago
            await conn.execute(
                sa.update(sync_run)
                .where(sync_run.c.id == first.run_id)
                .values(started_at=datetime.now(UTC) - timedelta(days=2))
            )
        third = await execute_stream(rt, VENDOR, "items", "schedule")
        manual = await execute_stream(rt, VENDOR, "items", "manual")
    assert [r.full for r in (first, second, third, manual)] == [True, False, True, False]
    assert third.counts.unchanged == 95  # re-read everything, rewrote nothing
    async with engine.connect() as conn:
        fulls = [r.full for r in await conn.execute(sa.select(sync_run.c.full).order_by("id"))]
    assert fulls == [True, False, True, False]


async def test_the_engine_closes_the_connectors_generator_at_once(
    engine: AsyncEngine, db_url: str, monkeypatch: Any
) -> None:
    """A failing commit closes the connector's pull right away (its cleanup runs before
    the run returns), not whenever the garbage collector gets to it."""
    from service.connectors import REGISTRY, Connector, StreamContext, StreamSpec
    from service.models import Batch, Record

    events: list[str] = []

    class Leaky(Connector):
        vendor = VENDOR
        stream_specs = (StreamSpec("items", "id"),)

        async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
            try:
                yield Batch(records=[Record("items", "bad\u0000key", {"id": 1})], state={})
                yield Batch(records=[Record("items", "k", {"id": {2}})], state={})  # no JSON
                events.append("not reached")
            finally:
                events.append("closed")

    monkeypatch.setitem(REGISTRY, VENDOR, Leaky)
    async with Runtime(make_settings(db_url), db=engine) as rt:
        result = await execute_stream(rt, VENDOR, "items", "manual")
        assert events == ["closed"]  # before execute_stream returned
    assert result.status == "failed"  # a set is not JSON: the commit fails
    assert result.counts.invalid == 1
