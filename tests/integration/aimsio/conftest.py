"""Aimsio connector tests: the sandbox over real HTTP on 127.0.0.1, both databases."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings

StartAimsio = Callable[..., Awaitable[RunningSandbox]]


@pytest.fixture
async def aimsio_sandbox() -> AsyncIterator[StartAimsio]:
    started: list[RunningSandbox] = []

    async def start(records: int = 50, **vendor: Any) -> RunningSandbox:
        options = SandboxOptions(records=records, seed=7, vendors={"aimsio": vendor})
        sb = await start_sandbox(options, vendors=("aimsio",))
        started.append(sb)
        return sb

    yield start
    for sb in started:
        await sb.close()


def aimsio_settings(
    db_url: str,
    sandbox_url: str,
    *,
    streams: tuple[str, ...] = ("User",),
    max_parallel: int = 10,
    rate_per_s: float = 10,
    batch_size: int = 500,
    retry: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
) -> Settings:
    return Settings(
        database={"url": db_url},
        sync={"batch_size": batch_size},
        push=push or {},
        vendors={
            "aimsio": {
                "base_url": f"{sandbox_url}/aimsio",
                "max_parallel": max_parallel,
                "rate_per_s": rate_per_s,
                "timeout_s": 15,
                "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
                "retry": retry or {"max_attempts": 6, "base_s": 0.05, "max_backoff_s": 1},
                "streams": {s: {} for s in streams},
            }
        },
    )


async def control(sb: RunningSandbox, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('aimsio')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def vendor_get(sb: RunningSandbox, path: str) -> Any:
    """Read the sandbox directly (Basic auth), outside any limiter: the truth to compare to."""
    headers = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-secret").decode()}
    url = f"{sb.url('aimsio')}/rest/api/standard/v1/{path}"
    async with aiohttp.ClientSession(headers=headers) as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def open_limits(sb: RunningSandbox) -> None:
    """Lift the sandbox's limits (to seed large data quickly); restore with vendor_limits."""
    await control(sb, "faults", {"limits": {"max_parallel": 200, "rate_per_s": 100_000}})


async def vendor_limits(sb: RunningSandbox) -> None:
    await control(sb, "faults", {"limits": {"max_parallel": 10, "rate_per_s": 10}})
    await control(sb, "reset", {"faults": False})
