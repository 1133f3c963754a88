"""AIMMS PRO connector tests: the sandbox over real HTTP on 127.0.0.1, both databases.

The sandbox runs on the wall clock with short task phases (tens of ms), so a task goes
queued → completed in well under a second and polling uses real (short) sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings

StartAimms = Callable[..., Awaitable[RunningSandbox]]
PHASES = {"assigned": 0.02, "running": 0.05, "solving": 0.05}
FAST = {"poll_min_s": 0.02, "poll_max_s": 0.1, "deadline_s": 5, "licence_wait_s": 0.5}


@pytest.fixture
async def aimms_sandbox() -> AsyncIterator[StartAimms]:
    started: list[RunningSandbox] = []

    async def start(records: int = 20, **vendor: Any) -> RunningSandbox:
        vendor = {"task_phases_s": PHASES, "tick_interval_s": 0.02, **vendor}
        options = SandboxOptions(records=records, seed=11, vendors={"aimms": vendor})
        sb = await start_sandbox(options, vendors=("aimms",))
        started.append(sb)
        return sb

    yield start
    for sb in started:
        await sb.close()


def aimms_settings(
    db_url: str,
    sandbox_url: str,
    *,
    streams: dict[str, dict[str, Any]] | None = None,
    api_key: str = "demo-apikey-all-scopes",
    options: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
) -> Settings:
    return Settings(
        database={"url": db_url},
        push=push or {},
        vendors={
            "aimms": {
                "base_url": f"{sandbox_url}/aimms",
                "max_parallel": 4,
                "rate_per_s": 100,
                "timeout_s": 15,
                "auth": {"kind": "apikey", "api_key": api_key},
                "retry": {"max_attempts": 3, "base_s": 0.05, "max_backoff_s": 0.2},
                "options": options or {},
                "streams": {
                    name: {"options": opts} for name, opts in (streams or {"users": {}}).items()
                },
            }
        },
    )


def exchange(**options: Any) -> dict[str, Any]:
    """A task-exchange stream definition with fast polling."""
    return {"app": "SupplyPlanner", "service": "export_users", "key": "id", **FAST, **options}


async def control(sb: RunningSandbox, what: str, body: Any = None, method: str = "POST") -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('aimms')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def vendor_get(sb: RunningSandbox, path: str, key: str = "demo-apikey-all-scopes") -> Any:
    """Read the sandbox directly with the all-scopes key (of a tenant: ``…-7``): the truth."""
    headers = {"apikey": key}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{sb.url('aimms')}{path}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()
