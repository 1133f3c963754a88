"""Derived fields that change without `updatedAt`: JobOrder re-read in full every week."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live
from service.db.tables import sync_run
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream
from tests.integration.aimsio.conftest import (
    StartAimsio,
    aimsio_settings,
    control,
    open_limits,
    vendor_get,
)


async def test_renamed_customer_reaches_job_orders_at_the_weekly_full_reread(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=20)
    await open_limits(sb)
    settings = aimsio_settings(
        db_url, sb.base_url, streams=("JobOrder",), max_parallel=20, rate_per_s=1000
    )
    async with Runtime(settings, db=engine) as rt:
        await execute_stream(rt, "aimsio", "JobOrder", "schedule")
        async with engine.connect() as conn:
            jobs = await fetch_live(conn, "aimsio", "JobOrder")
        job = next(iter(jobs.values()))
        [customer] = [
            c
            for c in await vendor_get(sb, "Customer")
            if (await vendor_get(sb, f"Customer/{c['guid']}"))["customerCode"]
            == job["jobClientCode"]
        ]
        await control(
            sb,
            "mutate",
            {"entity": "Customer", "update": [{"id": customer["guid"], "customerName": "Renamed"}]},
        )
        fresh = await vendor_get(sb, f"JobOrder/{job['jobGuid']}")
        assert fresh["jobClientName"] == "Renamed"
        assert fresh["updatedAt"] == job["updatedAt"]  # the vendor did not touch the job

        incremental = await execute_stream(rt, "aimsio", "JobOrder", "schedule")
        assert (incremental.full, incremental.requests) == (False, 1)  # the listing only
        async with engine.begin() as conn:  # a week has passed since the last full read
            await conn.execute(
                sa.update(sync_run).values(started_at=datetime.now(UTC) - timedelta(days=8))
            )
        weekly = await execute_stream(rt, "aimsio", "JobOrder", "schedule")
    assert weekly.full
    assert weekly.counts.updated >= 1
    async with engine.connect() as conn:
        jobs = await fetch_live(conn, "aimsio", "JobOrder")
    assert jobs[job["jobGuid"]]["jobClientName"] == "Renamed"
