"""Amilia connector tests: the sandbox over real HTTP on 127.0.0.1, both databases."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings

StartAmilia = Callable[..., Awaitable[RunningSandbox]]
ORG = "/api/v3/en/org/8008"


@pytest.fixture
async def amilia_sandbox() -> AsyncIterator[StartAmilia]:
    started: list[RunningSandbox] = []

    async def start(records: int = 50, **vendor: Any) -> RunningSandbox:
        options = SandboxOptions(records=records, seed=11, vendors={"amilia": vendor})
        sb = await start_sandbox(options, vendors=("amilia",))
        started.append(sb)
        return sb

    yield start
    for sb in started:
        await sb.close()


def amilia_settings(
    db_url: str,
    sandbox_url: str,
    *,
    streams: tuple[str, ...] = ("accounts",),
    max_parallel: int = 20,
    rate_per_s: float = 100,
    batch_size: int = 500,
    options: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
) -> Settings:
    return Settings(
        database={"url": db_url},
        sync={"batch_size": batch_size},
        push=push or {},
        vendors={
            "amilia": {
                "base_url": f"{sandbox_url}/amilia",
                "max_parallel": max_parallel,
                "rate_per_s": rate_per_s,
                "timeout_s": 15,
                "auth": {
                    "kind": "basic_jwt",
                    "username": "demo@amilia.test",
                    "password": "demo-secret",
                },
                "retry": retry or {"max_attempts": 8, "base_s": 0.05, "max_backoff_s": 1},
                "options": {"org": "8008", "language": "en", **(options or {})},
                "streams": {s: {} for s in streams},
            }
        },
    )


async def control(sb: RunningSandbox, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('amilia')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def vendor_items(
    sb: RunningSandbox, path: str, user: str = "demo@amilia.test", org: str = ORG
) -> list[dict[str, Any]]:
    """Every item of a v3 list read directly (limits lifted for it): the truth to compare to.
    ``user`` and ``org``: another organisation (sandbox tenant) and its API user."""
    await control(sb, "faults", {"limits": {"enabled": False}})
    basic = base64.b64encode(f"{user}:demo-secret".encode()).decode()
    items: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sb.url('amilia')}/api/v3/authenticate", headers={"Authorization": f"Basic {basic}"}
        ) as resp:
            token = (await resp.json())["Token"]
        url: str | None = f"{sb.url('amilia')}{org}/{path}"
        for _ in range(10_000):
            if url is None:
                break
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            items.extend(body["Items"])
            url = body["Paging"]["Next"]
    await control(sb, "faults", {"limits": {"enabled": True}})
    return items
