"""Jobs that fail, never finish or are purged; cut and malformed downloads; a token that
dies mid-poll. None of them loses or corrupts staged rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.runs import recent_runs
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream, run_stream
from tests.integration.aqua.conftest import (
    StartAqua,
    aqua_settings,
    as_csv_row,
    control,
    sim,
    staged,
    state_of,
    stream_options,
    vendor_rows,
)

MONTH_S = 31 * 86400.0


def view_as_csv(sb: Any) -> dict[str, Any]:
    return {r["Order No"]: as_csv_row(r) for r in vendor_rows(sb)}


def fault_once(sb: Any, name: str) -> None:
    """Switch a job fault on for the next (re)queued job only."""
    s = sim(sb)
    s.faults.extra[name] = True
    queue = s.queue

    def once(job: Any, by: Any) -> None:
        queue(job, by)
        s.faults.extra.pop(name, None)

    s.queue = once


async def test_a_failed_rerun_makes_a_new_job_and_says_why(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        old = (await state_of(engine))["jobId"]
        await control(sb, "mutate", {"entity": "Orders", "change": 0.05, "seed": 1})
        fault_once(sb, "job_fails")
        result = await run_stream(rt, "aqua", "Orders", "manual")
    assert result.counts.updated == 10
    state = await state_of(engine)
    assert state["jobId"] != old
    assert f"Aqua job {old} failed" in state["last_event"]
    assert "created a new export job" in state["last_event"]
    assert result.note == state["last_event"]
    assert await run_note(engine, result.run_id) == state["last_event"]  # in the run record
    assert await staged(engine) == view_as_csv(sb)


async def test_a_job_that_keeps_failing_fails_the_run_and_keeps_the_rows(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        before = await staged(engine)
        await control(sb, "mutate", {"entity": "Orders", "change": 0.05, "delete": 0.05})
        await control(sb, "faults", {"extra": {"job_fails": True}})
        result = await execute_stream(rt, "aqua", "Orders", "manual")
    assert result.status == "failed"
    assert "failed: Export failed: Timeout expired." in (result.error or "")
    assert await staged(engine) == before


async def test_a_job_that_never_finishes_fails_at_the_deadline(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb, streams={"Orders": stream_options(poll_deadline_s=0.6)})
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        before, state = await staged(engine), await state_of(engine)
        await control(sb, "mutate", {"entity": "Orders", "delete": 0.1})
        await control(sb, "faults", {"extra": {"job_never_finishes": True}})
        result = await execute_stream(rt, "aqua", "Orders", "manual")
    assert result.status == "failed"
    assert f"Aqua job {state['jobId']} not finished after 1s" in (result.error or "")
    assert await staged(engine) == before
    assert (await state_of(engine))["jobId"] == state["jobId"]


async def test_a_purged_job_is_replaced(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        old = (await state_of(engine))["jobId"]
        sim(sb).jobs[old].started_at_s -= MONTH_S  # past its purgeDateTime
        await control(sb, "mutate", {"entity": "Orders", "delete": 0.05, "seed": 2})
        result = await run_stream(rt, "aqua", "Orders", "manual")
    assert result.counts.deleted == 10
    state = await state_of(engine)
    assert state["jobId"] != old
    assert old not in sim(sb).jobs
    assert state["last_event"].startswith(f"job {old} purged")
    assert await run_note(engine, result.run_id) == state["last_event"]
    assert await staged(engine) == view_as_csv(sb)


async def test_a_purged_job_is_replaced_on_the_odata_form_too(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb, streams={"Orders": stream_options(wire="odata")})
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        old = (await state_of(engine))["jobId"]
        sim(sb).jobs[old].started_at_s -= MONTH_S
        await run_stream(rt, "aqua", "Orders", "manual")
    assert (await state_of(engine))["last_event"].startswith(f"job {old} purged (rerun: HTTP 404)")


async def test_a_refused_rerun_is_replaced(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox()
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        sim(sb).settings["can_rerun"] = False
        result = await run_stream(rt, "aqua", "Orders", "manual")
    assert result.counts.written == 0
    assert "refused (rerun: HTTP 409)" in (await state_of(engine))["last_event"]
    assert len(sim(sb).jobs) == 2


async def assert_intact(engine: AsyncEngine, before: dict[str, Any], sb: Any) -> None:
    """Every key staged before is still live, each row the old or the vendor's new version."""
    after = await staged(engine)
    assert set(after) == set(before)
    now = view_as_csv(sb)
    for key, row in after.items():
        assert row == before[key] or row == now.get(key), key


async def test_a_truncated_csv_deletes_nothing_and_stages_no_half_row(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=600, csv_chunk_rows=50)
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        before = await staged(engine)
        await control(sb, "mutate", {"entity": "Orders", "change": 0.2, "delete": 0.2})
        await control(sb, "faults", {"extra": {"truncate_csv": True}})
        broken = await execute_stream(rt, "aqua", "Orders", "manual")
        assert broken.status == "failed"
        assert broken.counts.deleted == 0
        assert broken.counts.updated > 0  # whole rows before the cut were staged
        await assert_intact(engine, before, sb)
        await control(sb, "reset", {"faults": True})
        fixed = await run_stream(rt, "aqua", "Orders", "manual")
    assert fixed.counts.deleted == 120
    assert await staged(engine) == view_as_csv(sb)


async def test_malformed_json_deletes_nothing(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=300)
    settings = aqua_settings(db_url, sb, streams={"Orders": stream_options(format="json")})
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
        before = await staged(engine)
        await control(sb, "mutate", {"entity": "Orders", "change": 0.1, "delete": 0.1})
        await control(sb, "faults", {"extra": {"malformed_json": True}})
        broken = await execute_stream(rt, "aqua", "Orders", "manual")
    assert broken.status == "failed"
    assert "malformed JSON export" in (broken.error or "")
    after = await staged(engine)
    assert set(after) == set(before)
    now = {r["Order No"]: r for r in vendor_rows(sb)}
    for key, row in after.items():
        assert row == before[key] or row == now.get(key), key


async def test_a_token_that_dies_mid_poll_is_renewed(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(queued_s=0.2, run_s=0.8)
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        run = asyncio.ensure_future(run_stream(rt, "aqua", "Orders", "manual"))
        for _ in range(200):  # until the job exists: then the connector is polling
            if sim(sb).jobs:
                break
            await asyncio.sleep(0.01)
        await control(sb, "faults", {"extra": {"token_expire_now": True}})
        result = await asyncio.wait_for(run, 30)
        auth = rt.connector("aqua").client.auth
    assert result.status == "succeeded"
    assert getattr(auth, "logins", None) == 2
    stats = await control(sb, "stats")
    assert stats["by_status"].get("401") == 1
    assert await staged(engine) == view_as_csv(sb)


@pytest.mark.parametrize("fmt", ["csv", "json", "excel"])
async def test_each_output_format(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua, fmt: str
) -> None:
    sb = await aqua_sandbox(records=150)
    opts = stream_options(format=fmt, source="Customers", view="All Customers", key="Customer Code")
    settings = aqua_settings(db_url, sb, streams={"Customers": opts})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "aqua", "Customers", "manual")
        again = await run_stream(rt, "aqua", "Customers", "manual")
    assert first.counts.inserted == 150
    assert again.counts.written == 0
    rows = vendor_rows(sb, "Customers", "All Customers")
    typed = {r["Customer Code"]: (as_csv_row(r) if fmt == "csv" else dict(r)) for r in rows}
    assert await staged(engine, "Customers") == typed


@pytest.mark.parametrize("scope", ["Public", "Private", "PeopleInOrganization"])
async def test_each_access_scope(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua, scope: str
) -> None:
    sb = await aqua_sandbox(records=60)
    settings = aqua_settings(db_url, sb, streams={"Orders": stream_options(scope=scope)})
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aqua", "Orders", "manual")
    assert result.counts.inserted == 60
    link = (await state_of(engine))["publishLink"]
    # A Public link carries its own anonymous token; the others need the bearer.
    assert (link.count("/") - sb.url("aqua").count("/")) == (5 if scope == "Public" else 4)
    assert await staged(engine) == view_as_csv(sb)


async def test_duplicate_keys_last_wins_and_are_counted(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=300)
    settings = aqua_settings(db_url, sb, streams={"Orders": stream_options(key="Customer Code")})
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aqua", "Orders", "manual")
    rows = vendor_rows(sb)
    last = {r["Customer Code"]: as_csv_row(r) for r in rows}
    assert await staged(engine) == last
    assert (await state_of(engine))["last_export"] == {
        "rows": 300,
        "duplicate_keys": 300 - len(last),
    }


async def run_note(engine: AsyncEngine, run_id: int) -> str | None:
    async with engine.connect() as conn:
        runs = await recent_runs(conn, limit=50)
    return next(r.note for r in runs if r.id == run_id)
