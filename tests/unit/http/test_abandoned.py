"""A request we abandon keeps its parallel slot until the vendor would have ended it.

The end-to-end check runs the Aimsio sandbox over 127.0.0.1 with a latency above our
timeout: the vendor keeps working on every request we gave up on, and must never see
more than its 10 in flight.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings
from service.engine.runtime import Runtime
from service.errors import ParseError, TransportError
from service.http.translate import FOREIGN_ERRORS, translate_error
from service.http.vendor_client import ended_by_us

AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-secret").decode()}


@pytest.mark.parametrize(
    ("exc", "ours"),
    [
        (TimeoutError(), True),  # our total timeout
        (aiohttp.SocketTimeoutError(), True),  # our read timeout
        (asyncio.CancelledError(), True),  # we dropped the connection
        (ParseError("the caller's own error mid-stream"), True),
        (aiohttp.ConnectionTimeoutError(), False),  # never connected
        (aiohttp.ServerDisconnectedError(), False),  # the vendor ended it
        (ConnectionResetError(), False),
        (aiohttp.ClientPayloadError("truncated"), False),
    ],
)
def test_who_ended_an_exchange(exc: BaseException, ours: bool) -> None:
    assert ended_by_us(exc) is ours
    if isinstance(exc, FOREIGN_ERRORS):  # as a stream read raises it: translated
        translated = translate_error(exc, vendor="v", url="http://v.test")
        translated.__cause__ = exc
        assert ended_by_us(translated) is ours


def settings(
    tmp_path: Path, base_url: str = "http://127.0.0.1:9/aimsio", **aimsio: Any
) -> Settings:
    return Settings(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"},
        vendors={
            "aimsio": {
                "base_url": base_url,
                "max_parallel": 10,
                "rate_per_s": 10,
                "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
                **aimsio,
            }
        },
    )


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ({"timeout_s": 30}, 35.0),  # Aimsio: 5 s in its queue + our timeout for the work
        ({"timeout_s": 2}, 7.0),
        ({"timeout_s": 2, "vendor_timeout_s": 12.5}, 12.5),  # configured
    ],
)
async def test_runtime_resolves_vendor_timeout(
    tmp_path: Path, given: dict[str, Any], resolved: float
) -> None:
    async with Runtime(settings(tmp_path, **given), require_schema=False) as rt:
        client = rt.connector("aimsio").client
        assert client.vendor_timeout_s == resolved


@pytest.fixture
async def aimsio() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox(SandboxOptions(records=20, seed=7), vendors=("aimsio",))
    try:
        yield sb
    finally:
        await sb.close()


async def control(sb: RunningSandbox, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('aimsio')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_sandbox_never_sees_more_than_its_cap_when_we_time_out(
    tmp_path: Path, aimsio: RunningSandbox
) -> None:
    # The vendor answers in 1.6-2.2 s; we give up after 0.3 s. Before this fix each
    # abandoned request freed its slot at once and 14 ran at the vendor (4 violations).
    await control(aimsio, "faults", {"latency_ms": 1600, "latency_jitter_ms": 600})
    config = settings(
        tmp_path,
        aimsio.url("aimsio"),
        timeout_s=0.3,
        vendor_timeout_s=2.6,
        retry={"max_attempts": 1},
    )
    held_seen = 0
    async with Runtime(config, require_schema=False) as rt:
        client = rt.connector("aimsio").client

        async def get_one(i: int) -> None:
            nonlocal held_seen
            with pytest.raises(TransportError, match="timed out"):
                await client.request("GET", f"rest/api/standard/v1/User/x{i}", headers=AUTH)
            held_seen = max(held_seen, client.limiter.held)

        await asyncio.wait_for(asyncio.gather(*(get_one(i) for i in range(14))), 15)
        snapshot = client.limiter.snapshot()
    stats = await control(aimsio, "stats")
    assert stats["requests"] == 14
    assert stats["violation_count"] == 0, stats["violations"]
    assert stats["peak_in_flight"] <= 10
    assert held_seen > 0
    assert snapshot["abandoned"] == 14
    assert client.stats.abandoned == 14
