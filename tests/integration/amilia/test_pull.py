"""Amilia pulls against the sandbox: page-following under the 100/s cap, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.amilia.conftest import StartAmilia, amilia_settings, control, vendor_items


async def staged(engine: AsyncEngine, stream: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict(await fetch_live(conn, "amilia", stream))


@pytest.mark.long  # the reliability tier: over 25 s
async def test_50k_accounts_at_the_cap_without_a_429(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=50_000)
    settings = amilia_settings(db_url, sb.base_url, batch_size=2000)
    async with Runtime(settings, db=engine) as rt:
        run = await run_stream(rt, "amilia", "accounts", "manual")
    assert run.status == "succeeded", run.error
    stats = await control(sb, "stats")
    assert stats["rate_limited"] == 0
    assert stats["max_per_s"] <= 100
    assert stats["violation_count"] == 0
    assert run.counts.inserted == 50_000
    truth = {str(i["Id"]): i for i in await vendor_items(sb, "accounts?showArchived=true")}
    assert await staged(engine, "accounts") == truth


async def test_rerun_writes_nothing_and_a_complete_pass_soft_deletes(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=900)
    settings = amilia_settings(db_url, sb.base_url, options={"per_page": 50})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "amilia", "accounts", "manual")
        again = await run_stream(rt, "amilia", "accounts", "manual")
        assert (first.counts.inserted, again.counts.written) == (900, 0)
        assert again.counts.unchanged == 900
        touched = await control(
            sb, "mutate", {"entity": "accounts", "change": 0.02, "delete": 0.01, "seed": 4}
        )
        inc = await run_stream(rt, "amilia", "accounts", "schedule")
    c = inc.counts
    assert (c.updated, c.deleted) == (len(touched["changed"]), len(touched["deleted"]))
    truth = {str(i["Id"]): i for i in await vendor_items(sb, "accounts?showArchived=true")}
    assert await staged(engine, "accounts") == truth


async def test_429_bursts_and_5xx_still_stage_every_record_once(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=3000, retry_after_s=1)
    # Another client on our address: the vendor lets us have 40/s, and 5% of calls fail.
    await control(sb, "faults", {"error_rate": 0.05, "seed": 3, "limits": {"rate_per_s": 40}})
    settings = amilia_settings(
        db_url, sb.base_url, options={"per_page": 25}, retry={"max_attempts": 20, "base_s": 0.05}
    )
    async with Runtime(settings, db=engine) as rt:
        run = await run_stream(rt, "amilia", "accounts", "manual")
    assert run.status == "succeeded", run.error
    stats = await control(sb, "stats")
    assert stats["rate_limited"] > 0
    assert stats["errors_injected"] > 0
    assert run.counts.inserted == 3000
    await control(sb, "reset", {"faults": True})
    truth = {str(i["Id"]): i for i in await vendor_items(sb, "accounts?showArchived=true")}
    assert await staged(engine, "accounts") == truth


async def test_records_inserted_and_removed_mid_walk_are_not_missed(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=2000)
    await control(sb, "faults", {"latency_ms": 50})
    settings = amilia_settings(db_url, sb.base_url, max_parallel=4, options={"per_page": 20})

    async def meddle() -> None:
        for round_ in range(4):
            await asyncio.sleep(0.2)
            await control(
                sb, "mutate", {"entity": "accounts", "add": 5, "delete": 0.002, "seed": round_}
            )

    async with Runtime(settings, db=engine) as rt:
        meddling = asyncio.create_task(meddle())
        run = await run_stream(rt, "amilia", "accounts", "manual")
        await meddling
    assert run.status == "succeeded", run.error
    stats = await control(sb, "stats")
    assert stats["requests"] > 1 + 2000 // 20  # the shifted list was read again
    await control(sb, "faults", {"latency_ms": 0})
    truth = {str(i["Id"]) for i in await vendor_items(sb, "accounts?showArchived=true")}
    got = set(await staged(engine, "accounts"))
    assert truth - got == set()  # nothing that exists went missing


async def test_the_last_count_lets_the_next_walk_start_at_full_speed(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    """A run asks for the pages the last run counted together with the first one; a list
    that shrank or grew since then is still read whole, and only a few requests are spent
    on pages past its end."""
    sb = await amilia_sandbox(records=600)
    settings = amilia_settings(db_url, sb.base_url, max_parallel=4, options={"per_page": 20})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "amilia", "accounts", "manual")
        assert first.counts.inserted == 600
        # Shrink the list to a third: the guessed 30 pages become 10.
        await control(sb, "mutate", {"entity": "accounts", "delete": 0.66, "seed": 8})
        await control(sb, "reset", {"faults": False})
        shrunk = await run_stream(rt, "amilia", "accounts", "schedule")
        assert shrunk.status == "succeeded", shrunk.error
        sent = (await control(sb, "stats"))["requests"]
        live = await vendor_items(sb, "accounts?showArchived=true")
        # The pages needed, plus at most the ones already on their way (max_parallel)
        # when the first page told the total.
        assert -(-len(live) // 20) <= sent <= -(-len(live) // 20) + 4
        assert shrunk.counts.deleted == 600 - len(live)
        # Grow it past the last count: the pages after the guessed ones are read too.
        await control(sb, "mutate", {"entity": "accounts", "add": 500, "seed": 9})
        grown = await run_stream(rt, "amilia", "accounts", "schedule")
        assert grown.status == "succeeded", grown.error
    truth = {str(i["Id"]): i for i in await vendor_items(sb, "accounts?showArchived=true")}
    assert await staged(engine, "accounts") == truth
