"""Full then incremental pulls against the iMIS sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.server import RunningSandbox
from service.connectors.imis_query import cursor_text, local_to_utc
from service.db import fetch_live, staged_cursors
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.imis.conftest import StartImis, control, imis_settings, vendor_all

UTC_ZONE = ZoneInfo("UTC")


async def truth(sb: RunningSandbox, entity: str, **params: str) -> dict[str, str]:
    rows = await vendor_all(sb, entity, **params)
    key = {"Party": "PartyId", "GroupMember": "GroupMemberId"}[entity]
    return {
        str(r[key]): cursor_text(local_to_utc(r["UpdateInformation"]["UpdatedOn"], UTC_ZONE))
        for r in rows
    }


async def staged(engine: AsyncEngine, stream: str) -> dict[str, str | None]:
    async with engine.connect() as conn:
        return await staged_cursors(conn, "imis", stream)


@pytest.mark.parametrize("flaky", ["drop", "date_only"])
async def test_incremental_with_unreliable_filter_stages_the_vendor_state(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis, flaky: str
) -> None:
    sb = await imis_sandbox(records=20_000)
    settings = imis_settings(db_url, sb.base_url)
    async with Runtime(settings, db=engine) as rt:
        full = await run_stream(rt, "imis", "Party", "manual")
    assert full.status == "succeeded", full.error
    assert full.counts.inserted == 20_000
    assert await staged(engine, "Party") == await truth(sb, "Party")

    touched = await control(
        sb, "mutate", {"entity": "Party", "change": 0.01, "delete": 0.005, "add": 25, "seed": 4}
    )
    await control(sb, "faults", {"extra": {"flaky_updated_on": flaky}})
    await control(sb, "reset", {"stats": True, "faults": False, "data": False})
    async with Runtime(settings, db=engine) as rt:
        inc = await run_stream(rt, "imis", "Party", "schedule")
    assert inc.status == "succeeded", inc.error
    c = inc.counts
    changed = len(set(touched["changed"]) - set(touched["deleted"]))
    assert (c.inserted, c.updated, c.deleted) == (25, changed, len(touched["deleted"]))
    await control(sb, "faults", {"extra": {"flaky_updated_on": False}})
    assert await staged(engine, "Party") == await truth(sb, "Party")
    async with engine.connect() as conn:
        live = await fetch_live(conn, "imis", "Party")
    for key in touched["deleted"]:
        assert key not in live
    # Staged payloads are plain JSON: no .NET wrappers left.
    sample: Any = live[touched["changed"][0]]
    assert "$type" not in str(sample)
    assert isinstance(sample["Emails"], list)
    # Few requests: a page of changes, the newest-first check, the delete log.
    assert inc.requests <= 8


async def test_rerun_over_unchanged_data_writes_nothing(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=300)
    streams: dict[str, dict[str, Any]] = {
        s: {} for s in ("Party", "Activity", "Event", "EventRegistration", "GroupMember")
    }
    streams.update({"Item": {}, "Invoice": {}})
    settings = imis_settings(db_url, sb.base_url, streams=streams, options={"page_size": 100})
    async with Runtime(settings, db=engine) as rt:
        for stream in streams:
            first = await run_stream(rt, "imis", stream, "manual")
            assert first.status == "succeeded", (stream, first.error)
            assert first.counts.inserted == 300, stream
            again = await run_stream(rt, "imis", stream, "manual")
            assert again.status == "succeeded", again.error
            assert again.counts.written == 0, stream
    stats = await control(sb, "stats")
    assert stats["violations"] == []


async def test_group_members_incremental_and_filters_from_config(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=400)
    filters = {"GroupId": "in:BOARD|VOLUNTEERS", "JoinDate": "between:2015-01-01|2024-12-31"}
    settings = imis_settings(db_url, sb.base_url, streams={"GroupMember": {"filters": filters}})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "imis", "GroupMember", "manual")
    assert first.status == "succeeded", first.error
    want = await truth(sb, "GroupMember", **filters)
    assert 0 < len(want) < 400
    assert await staged(engine, "GroupMember") == want
    async with engine.connect() as conn:
        live = await fetch_live(conn, "imis", "GroupMember")
    assert {p["Group"]["GroupId"] for p in live.values()} == {"BOARD", "VOLUNTEERS"}


async def test_the_filter_alone_misses_rows_the_verify_walk_finds(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    """The sandbox's flaky switch is real: without the newest-first walk, changes are lost."""
    sb = await imis_sandbox(records=2000)
    blind = imis_settings(db_url, sb.base_url, options={"verify": False})
    async with Runtime(blind, db=engine) as rt:
        await run_stream(rt, "imis", "Party", "manual")
    touched = await control(sb, "mutate", {"entity": "Party", "change": 0.05, "seed": 9})
    await control(sb, "faults", {"extra": {"flaky_updated_on": "drop"}})
    async with Runtime(blind, db=engine) as rt:
        inc = await run_stream(rt, "imis", "Party", "schedule")
    assert 0 < inc.counts.updated < len(touched["changed"])  # the filter hid some
    async with Runtime(imis_settings(db_url, sb.base_url), db=engine) as rt:
        fixed = await run_stream(rt, "imis", "Party", "schedule")
    assert inc.counts.updated + fixed.counts.updated == len(touched["changed"])
    await control(sb, "faults", {"extra": {"flaky_updated_on": False}})
    assert await staged(engine, "Party") == await truth(sb, "Party")


async def test_deletes_without_a_journal_are_found_by_the_complete_pass(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=300)
    settings = imis_settings(db_url, sb.base_url, streams={"GroupMember": {}})
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "imis", "GroupMember", "manual")
        touched = await control(sb, "mutate", {"entity": "GroupMember", "delete": 0.02, "seed": 2})
        inc = await run_stream(rt, "imis", "GroupMember", "schedule")
        assert inc.counts.deleted == 0  # no delete log for group members
        full = await run_stream(rt, "imis", "GroupMember", "schedule", full=True)
    assert full.counts.deleted == len(touched["deleted"]) > 0
    assert await staged(engine, "GroupMember") == await truth(sb, "GroupMember")
