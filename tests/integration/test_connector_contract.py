"""One contract for every registered connector, run against its sandbox over real HTTP.

A new connector is picked up by this suite with no change here: it must declare its
streams, serve the streams of the default config, stage records on a first run, and
write nothing on a second run over unchanged vendor data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings, load_settings
from service.connectors import REGISTRY
from service.db import fetch_live
from service.engine.runtime import Runtime, check_streams
from service.engine.sync import run_stream

DEFAULT = Path("config/vendorsync.toml")
STREAMS_PER_VENDOR = 3  # enough to exercise the contract, few enough to stay quick
VENDORS = sorted(REGISTRY)


@pytest.fixture(params=VENDORS)
async def vendor_sandbox(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[str, RunningSandbox]]:
    vendor = str(request.param)
    sb = await start_sandbox(SandboxOptions(records=8, seed=5), vendors=(vendor,))
    yield vendor, sb
    await sb.close()


def contract_settings(vendor: str, sb: RunningSandbox, db_url: str) -> Settings:
    data = load_settings(DEFAULT).model_dump(mode="python")
    data["database"]["url"] = db_url
    for name, vs in data["vendors"].items():
        vs["enabled"] = name == vendor
        for secret in ("password", "client_secret", "api_key"):
            value = vs["auth"].get(secret)
            if value is not None:
                vs["auth"][secret] = value.get_secret_value()
    data["vendors"][vendor]["base_url"] = sb.url(vendor)
    return Settings.model_validate(data)


@pytest.mark.parametrize("vendor", VENDORS)
def test_declares_streams(vendor: str) -> None:
    cls = REGISTRY[vendor]
    names = cls.known_streams()
    assert names, f"{vendor} declares no streams"
    assert len({n.lower() for n in names}) == len(names)
    assert cls.vendor == vendor
    check_streams(load_settings(DEFAULT))  # the default config only names served streams


async def test_stages_then_rerun_writes_nothing(
    engine: AsyncEngine, db_url: str, vendor_sandbox: tuple[str, RunningSandbox]
) -> None:
    vendor, sb = vendor_sandbox
    settings = contract_settings(vendor, sb, db_url)
    streams = settings.vendors[vendor].enabled_streams()[:STREAMS_PER_VENDOR]
    async with Runtime(settings, db=engine) as rt:
        for stream in streams:
            first = await run_stream(rt, vendor, stream, "manual")
            assert first.status == "succeeded"
            assert first.counts.inserted > 0, f"{vendor}/{stream} staged nothing"
            again = await run_stream(rt, vendor, stream, "manual")
            assert again.status == "succeeded"
            assert again.counts.written == 0, f"{vendor}/{stream} rewrote unchanged data"
            async with engine.connect() as conn:
                live = await fetch_live(conn, vendor, stream)
            assert len(live) == first.counts.inserted
            assert all(isinstance(p, dict) and p for p in live.values())
