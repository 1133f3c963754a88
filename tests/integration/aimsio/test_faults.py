"""Vendor faults (5xx, resets, truncated and malformed bodies) slow a sync down but never
change what it stages: the result equals the vendor's data exactly."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.aimsio.conftest import StartAimsio, aimsio_settings, control, vendor_get


async def test_faulty_vendor_still_converges_exactly(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=25)
    faults = {
        "error_rate": 0.15,
        "error_status": 503,
        "reset_rate": 0.05,
        "truncate_rate": 0.05,
        "malformed_rate": 0.05,
        "seed": 11,
    }
    await control(sb, "faults", faults)
    settings = aimsio_settings(
        db_url,
        sb.base_url,
        batch_size=7,
        retry={"max_attempts": 12, "base_s": 0.02, "max_backoff_s": 0.2, "max_elapsed_s": 60},
    )
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aimsio", "User", "manual")
    stats = await control(sb, "stats")
    assert stats["errors_injected"] > 0  # the faults really happened
    assert result.status == "succeeded"
    assert result.counts.inserted == 25

    await control(sb, "faults", {k: 0 for k in faults if k.endswith("_rate")})
    async with engine.connect() as conn:
        live = await fetch_live(conn, "aimsio", "User")
    listing = await vendor_get(sb, "User")
    assert set(live) == {s["guid"] for s in listing}
    for stub in listing[:10]:
        assert live[stub["guid"]] == await vendor_get(sb, f"User/{stub['guid']}")
    assert stats["violations"] == []
