"""Fixtures for driving the simulators with plain aiohttp (no vendorsync code)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox

StartSandbox = Callable[..., Awaitable[RunningSandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[StartSandbox]:
    """``await sandbox_factory("aimsio", records=50, vendors={...})`` → a running sandbox."""
    started: list[RunningSandbox] = []

    async def start(vendor: str, **options: Any) -> RunningSandbox:
        sandbox = await start_sandbox(SandboxOptions(**options), vendors=(vendor,))
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        await sandbox.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
