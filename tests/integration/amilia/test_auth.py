"""Amilia auth: one JWT for many calls, renewed on a 401; X-Amilia-Origin on every call."""

from __future__ import annotations

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.clock import FakeClock
from sandbox.server import RunningSandbox, start_sandbox
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.amilia.conftest import amilia_settings, control

YEAR_S = 365 * 86400


async def test_one_login_renewed_on_401_and_origin_on_every_call(
    engine: AsyncEngine, db_url: str
) -> None:
    clock = FakeClock()
    sb = await start_sandbox(SandboxOptions(records=300, seed=3, clock=clock), vendors=("amilia",))
    try:
        settings = amilia_settings(
            db_url, sb.base_url, options={"origin": "ops@example.org", "per_page": 50}
        )
        async with Runtime(settings, db=engine) as rt:
            for _ in range(2):
                run = await run_stream(rt, "amilia", "accounts", "manual")
                assert run.status == "succeeded", run.error
            stats = await control(sb, "stats")
            assert stats["by_status"] == {"200": 1 + 2 * 6}  # one login for both runs
            clock.advance(YEAR_S + 60)  # the JWT expires by the vendor's clock
            run = await run_stream(rt, "amilia", "accounts", "manual")
            assert run.status == "succeeded", run.error
        stats = await control(sb, "stats")
        # One more login (1 + 1); the third run asks for all 6 pages at once (the last
        # run's count), so each of them may meet the expired token before the new one.
        assert stats["by_status"]["200"] == 1 + 3 * 6 + 1
        assert 1 <= stats["by_status"]["401"] <= 6
        assert set(stats["by_status"]) == {"200", "401"}
        origins = await control_get(sb)
        assert origins == {"ops@example.org": stats["requests"]}
    finally:
        await sb.close()


async def control_get(sb: RunningSandbox) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sb.url('amilia')}/_sandbox/origins") as resp,
    ):
        return dict(await resp.json())
