"""iMIS connector tests: the sandbox over real HTTP on 127.0.0.1, both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings

StartImis = Callable[..., Awaitable[RunningSandbox]]
CREDS = {"grant_type": "password", "username": "demo", "password": "demo-secret"}


@pytest.fixture
async def imis_sandbox() -> AsyncIterator[StartImis]:
    started: list[RunningSandbox] = []

    async def start(records: int = 50, latency_ms: float = 0.0, **vendor: Any) -> RunningSandbox:
        options = SandboxOptions(
            records=records, seed=11, latency_ms=latency_ms, vendors={"imis": vendor}
        )
        sb = await start_sandbox(options, vendors=("imis",))
        started.append(sb)
        return sb

    yield start
    for sb in started:
        await sb.close()


def imis_settings(
    db_url: str,
    sandbox_url: str,
    *,
    streams: dict[str, dict[str, Any]] | None = None,
    max_parallel: int = 5,
    batch_size: int = 500,
    password: str = "demo-secret",
    options: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
    blackouts: list[str] | None = None,
) -> Settings:
    vendor: dict[str, Any] = {
        "base_url": f"{sandbox_url}/imis",
        "max_parallel": max_parallel,
        "rate_per_s": 1000,
        "timeout_s": 15,
        "auth": {"kind": "password_grant", "username": "demo", "password": password},
        "retry": retry or {"max_attempts": 6, "base_s": 0.01, "max_backoff_s": 0.05},
        "options": {"time_zone": "UTC", "lookback_s": 3600, "page_size": 500, **(options or {})},
        "streams": {name: {"options": o} for name, o in (streams or {"Party": {}}).items()},
    }
    if blackouts is not None:
        vendor["blackouts"] = blackouts
    return Settings(
        database={"url": db_url},
        sync={"batch_size": batch_size},
        push=push or {},
        vendors={"imis": vendor},
    )


async def control(sb: RunningSandbox, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('imis')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def vendor_all(
    sb: RunningSandbox, entity: str, *, as_user: str = "demo", **params: str
) -> list[dict[str, Any]]:
    """Every row of a list, read directly (outside the connector): the truth to compare to.
    ``as_user``: the login, so the site (sandbox tenant) whose rows are read."""
    base = sb.url("imis")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/token", data={**CREDS, "username": as_user}) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        rows: list[dict[str, Any]] = []
        offset = 0
        for _ in range(10_000):
            query = {**params, "limit": "500", "offset": str(offset)}
            async with http.get(f"{base}/api/{entity}", params=query, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            rows.extend(page["Items"]["$values"])
            if not page["HasNext"]:
                return rows
            offset = page["NextOffset"]
    raise AssertionError("endless listing")


class FakeTime:
    """A monotonic clock, a UTC ``now`` and a ``sleep`` that only move when slept on; each
    sleep also moves the sandbox's clock (``/_sandbox/clock``), so both sides agree."""

    def __init__(self, start: datetime, sb: RunningSandbox | None = None) -> None:
        self.t = 1000.0
        self.start = start
        self.sb = sb
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(seconds, 0.0)
        if self.sb is not None and seconds > 0:
            await control(self.sb, "clock", {"set": self.now().timestamp()})


def at_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
