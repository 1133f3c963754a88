"""Incremental pull by updatedAt against the Aimsio sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live, staged_cursors
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.aimsio.conftest import (
    StartAimsio,
    aimsio_settings,
    control,
    open_limits,
    vendor_get,
    vendor_limits,
)


async def staged_matches_vendor(engine: AsyncEngine, sb: object, entity: str) -> None:
    listing = await vendor_get(sb, entity)  # type: ignore[arg-type]
    want = {str(s.get("guid", s.get("id"))): str(s["updatedAt"]) for s in listing}
    async with engine.connect() as conn:
        got = await staged_cursors(conn, "aimsio", entity)
    assert got == want


async def test_incremental_fetches_only_changes_within_the_caps(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=5000)
    # Seed: a full sync of 5,000 users with the sandbox's limits lifted (10/s would take 8 min).
    await open_limits(sb)
    fast = aimsio_settings(db_url, sb.base_url, max_parallel=50, rate_per_s=100_000)
    async with Runtime(fast, db=engine) as rt:
        full = await run_stream(rt, "aimsio", "User", "manual")
    assert full.counts.inserted == 5000
    await staged_matches_vendor(engine, sb, "User")

    touched = await control(
        sb, "mutate", {"entity": "User", "change": 0.01, "delete": 0.005, "seed": 3}
    )
    assert (len(touched["changed"]), len(touched["deleted"])) == (50, 25)
    await vendor_limits(sb)  # from here on, the vendor's real caps

    settings = aimsio_settings(db_url, sb.base_url)
    async with Runtime(settings, db=engine) as rt:
        inc = await run_stream(rt, "aimsio", "User", "schedule")
    c = inc.counts
    assert (c.inserted, c.updated, c.deleted, c.unchanged) == (0, 50, 25, 4925)
    stats = await control(sb, "stats")
    assert stats["requests"] == 1 + 50  # one listing, then only the changed users
    assert stats["violations"] == []
    assert stats["peak_in_flight"] <= 10
    assert stats["max_per_s"] <= 10
    await staged_matches_vendor(engine, sb, "User")
    async with engine.connect() as conn:
        live = await fetch_live(conn, "aimsio", "User")
    for guid in touched["changed"][:10]:
        assert live[guid] == await vendor_get(sb, f"User/{guid}")
    for guid in touched["deleted"]:
        assert guid not in live

    # Nothing changed since: one list call, nothing written.
    await control(sb, "reset", {"faults": False})
    async with Runtime(settings, db=engine) as rt:
        again = await run_stream(rt, "aimsio", "User", "schedule")
    assert again.counts.written == 0
    assert (await control(sb, "stats"))["requests"] == 1


async def test_streams_share_one_limiter_and_overload_is_retried(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=20)
    settings = aimsio_settings(db_url, sb.base_url, streams=("User", "Employee", "Equipment"))
    async with Runtime(settings, db=engine) as rt:
        results = await asyncio.gather(
            *(run_stream(rt, "aimsio", s, "manual") for s in ("User", "Employee", "Equipment"))
        )
    assert [r.counts.inserted for r in results] == [20, 20, 20]
    stats = await control(sb, "stats")
    assert stats["violations"] == []
    assert stats["max_per_s"] <= 10
    assert stats["peak_in_flight"] <= 10


async def test_overload_timeouts_are_retried_and_lose_nothing(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=40)
    # A client configured above the vendor's caps: the vendor queues, then times out (504).
    await control(sb, "faults", {"limits": {"queue_timeout_s": 0.3}})
    settings = aimsio_settings(
        db_url,
        sb.base_url,
        max_parallel=30,
        rate_per_s=200,
        retry={"max_attempts": 30, "base_s": 0.05, "max_backoff_s": 0.5, "max_elapsed_s": 60},
    )
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aimsio", "User", "manual")
    stats = await control(sb, "stats")
    assert stats["timeouts"] > 0  # overload happened, as a timeout and never a 429
    assert stats["rate_limited"] == 0
    assert result.counts.inserted == 40
    await staged_matches_vendor(engine, sb, "User")


async def test_vanished_between_list_and_get_is_deleted_not_fatal(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=20)
    settings = aimsio_settings(db_url, sb.base_url)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aimsio", "User", "manual")
        stale = (await vendor_get(sb, "User"))[0]["guid"]
        touched = await control(sb, "mutate", {"entity": "User", "update": [{"id": stale}]})
        assert touched["changed"] == [stale]
        await control(sb, "faults", {"latency_ms": 0})
        # Delete it again after listing: the GET-one now answers 404.
        await control(sb, "mutate", {"entity": "User", "delete_ids": [stale]})
        result = await run_stream(rt, "aimsio", "User", "manual")
    assert result.status == "succeeded"
    async with engine.connect() as conn:
        assert stale not in await fetch_live(conn, "aimsio", "User")


async def test_full_and_since_resyncs(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    from datetime import UTC, datetime

    sb = await aimsio_sandbox(records=20)
    settings = aimsio_settings(db_url, sb.base_url)
    listing = await vendor_get(sb, "User")
    stamps = sorted(s["updatedAt"] for s in listing)
    since = datetime.fromtimestamp(stamps[15] / 1000, tz=UTC)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aimsio", "User", "manual")
        full = await run_stream(rt, "aimsio", "User", "manual", full=True)
        partial = await run_stream(rt, "aimsio", "User", "manual", since=since)
    assert full.requests == 1 + 20  # --full re-reads every object
    assert (full.counts.unchanged, full.counts.written) == (20, 0)
    assert partial.requests == 1 + 5  # --since re-reads only objects updated since then
    assert partial.counts.written == 0
