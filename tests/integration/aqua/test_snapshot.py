"""Export, then re-run the same job after the vendor changed: staging equals the view."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from service.models import canonical_json
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


async def test_first_run_then_rerun_of_the_same_job_matches_the_view(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=1000)
    settings = aqua_settings(db_url, sb)
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "aqua", "Orders", "manual")
    assert (first.counts.inserted, first.counts.deleted) == (1000, 0)
    assert await staged(engine) == {r["Order No"]: as_csv_row(r) for r in vendor_rows(sb)}
    state = await state_of(engine)
    job_id = state["jobId"]
    assert list(sim(sb).jobs) == [job_id]

    touched = await control(
        sb, "mutate", {"entity": "Orders", "change": 0.02, "delete": 0.01, "seed": 3}
    )
    assert (len(touched["changed"]), len(touched["deleted"])) == (20, 10)
    async with Runtime(settings, db=engine) as rt:
        second = await run_stream(rt, "aqua", "Orders", "schedule")
    c = second.counts
    assert (c.inserted, c.updated, c.deleted, c.unchanged) == (0, 20, 10, 970)
    assert await staged(engine) == {r["Order No"]: as_csv_row(r) for r in vendor_rows(sb)}
    # The same job was re-run, not a new one created: in our state and at the vendor.
    state = await state_of(engine)
    assert state["jobId"] == job_id
    assert list(sim(sb).jobs) == [job_id]
    assert sim(sb).jobs[job_id].runs == 2
    assert state["last_export"] == {"rows": 990, "duplicate_keys": 0}

    # Nothing changed: the third export rewrites nothing.
    async with Runtime(settings, db=engine) as rt:
        third = await run_stream(rt, "aqua", "Orders", "schedule")
    assert third.counts.written == 0
    assert sim(sb).jobs[job_id].runs == 3


async def test_odata_wire_form_and_a_row_hash_key(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=120)
    opts = stream_options(wire="odata", key=[], view="Open Orders")
    settings = aqua_settings(db_url, sb, streams={"Orders": opts})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "aqua", "Orders", "manual")
        want = [as_csv_row(r) for r in vendor_rows(sb, view="Open Orders")]
        assert first.counts.inserted == len(want)
        assert sorted(map(canonical_json, (await staged(engine)).values())) == sorted(
            map(canonical_json, want)
        )
        # An edited row under a hash key: a new record, and its old version deleted.
        some = want[0]["Order No"]
        await control(sb, "mutate", {"entity": "Orders", "update": [{"id": some, "PO No": "X"}]})
        second = await run_stream(rt, "aqua", "Orders", "manual")
    assert (second.counts.inserted, second.counts.deleted) == (1, 1)
    job_id = (await state_of(engine))["jobId"]
    assert sim(sb).jobs[job_id].runs == 2
