"""Every Amilia stream against the sandbox: v2 persons, programs, activities, date windows."""

from __future__ import annotations

import base64
from datetime import date, timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.server import RunningSandbox
from service.db import fetch_live, load_state
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.amilia.conftest import StartAmilia, amilia_settings, control, vendor_items

ALL = ("accounts", "persons", "programs", "activities", "registrations", "accessscans")


async def staged(engine: AsyncEngine, stream: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict(await fetch_live(conn, "amilia", stream))


async def v2_persons(sb: RunningSandbox) -> dict[str, Any]:
    """The v2 person list read directly (limits lifted for it)."""
    await control(sb, "faults", {"limits": {"enabled": False}})
    basic = base64.b64encode(b"demo@amilia.test:demo-secret").decode()
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sb.url('amilia')}/api/v3/authenticate", headers={"Authorization": f"Basic {basic}"}
        ) as resp:
            token = (await resp.json())["Token"]
        url: str | None = f"{sb.url('amilia')}/api/v2/en/org/8008/persons?limit=100"
        while url is not None:
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                body = await resp.json()
            out.update({str(i["Id"]): i for i in body["Items"]})
            url = body["Page"]["Next"]
    await control(sb, "faults", {"limits": {"enabled": True}})
    return out


async def test_every_stream_stages_what_the_vendor_lists(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=400)
    settings = amilia_settings(db_url, sb.base_url, streams=ALL, options={"v2_limit": 37})
    async with Runtime(settings, db=engine) as rt:
        for stream in ALL:
            run = await run_stream(rt, "amilia", stream, "manual")
            assert run.status == "succeeded", (stream, run.error)
            assert run.counts.inserted > 0, stream
    assert await staged(engine, "persons") == await v2_persons(sb)
    programs = await vendor_items(sb, "programs?showHidden=true&showArchived=true")
    assert await staged(engine, "programs") == {str(p["Id"]): p for p in programs}
    activities: dict[str, Any] = {}
    for p in programs:
        path = f"programs/{p['Id']}/activities?showHidden=true&showCancelled=true"
        activities.update({str(a["Id"]): a for a in await vendor_items(sb, path)})
    assert await staged(engine, "activities") == activities
    regs = await vendor_items(sb, "registrations?showEnded=true&from=2000-01-01")
    assert await staged(engine, "registrations") == {str(r["RegistrationId"]): r for r in regs}
    scans = await vendor_items(sb, "accessscans?start=2000-01-01")
    assert await staged(engine, "accessscans") == {str(s["Id"]): s for s in scans}
    stats = await control(sb, "stats")
    assert stats["rate_limited"] == 0


async def test_registrations_read_a_date_window_with_overlap_and_delete_nothing(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=600)
    settings = amilia_settings(db_url, sb.base_url, streams=("registrations",))
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "amilia", "registrations", "manual")
        async with engine.connect() as conn:
            state = await load_state(conn, "amilia", "registrations")
        assert state is not None
        newest = date.fromisoformat(state["cursor"][:10])
        assert state["window_start"] == "2000-01-01"
        await control(sb, "reset", {"faults": False})
        added = await control(sb, "mutate", {"entity": "registrations", "add": 3, "seed": 1})
        gone = await control(sb, "mutate", {"entity": "registrations", "delete": 0.01, "seed": 2})
        inc = await run_stream(rt, "amilia", "registrations", "schedule")
    assert inc.status == "succeeded", inc.error
    assert inc.counts.inserted == len(added["added"]) == 3
    assert inc.counts.deleted == 0  # a window is not a complete pass
    async with engine.connect() as conn:
        state = await load_state(conn, "amilia", "registrations")
    assert state is not None
    assert state["window_start"] == (newest - timedelta(days=3)).isoformat()
    stats = await control(sb, "stats")
    assert stats["by_status"] == {"200": stats["requests"]}
    live = await staged(engine, "registrations")
    assert first.counts.inserted + 3 == len(live)
    assert len(gone["deleted"]) > 0
