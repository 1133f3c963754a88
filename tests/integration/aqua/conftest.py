"""Aqua connector tests: the simulator over real HTTP on 127.0.0.1, both databases.

Jobs run on the sandbox's wall clock with short queue and run times, and the connector
polls every few tens of milliseconds, so a whole export job takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.aqua.data import view_rows
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings
from service.db import fetch_live, load_state

StartAqua = Callable[..., Awaitable[RunningSandbox]]
FAST = {"queued_s": 0.05, "run_s": 0.15}
CREDENTIALS = {
    "kind": "password_grant",
    "client_id": "aqua-demo-client",
    "client_secret": "aqua-demo-secret",
    "username": "demo@aims360.test",
    "password": "demo-secret",
}


@pytest.fixture
async def aqua_sandbox() -> AsyncIterator[StartAqua]:
    started: list[RunningSandbox] = []

    async def start(records: int = 200, **vendor: Any) -> RunningSandbox:
        options = SandboxOptions(records=records, seed=11, vendors={"aqua": {**FAST, **vendor}})
        sb = await start_sandbox(options, vendors=("aqua",))
        started.append(sb)
        return sb

    yield start
    for sb in started:
        await sb.close()


def stream_options(**options: Any) -> dict[str, Any]:
    base = {
        "source": "Orders",
        "view": "All orders",
        "key": "Order No",
        "poll_min_s": 0.02,
        "poll_max_s": 0.1,
        "poll_deadline_s": 20,
    }
    return {**base, **options}


def aqua_settings(
    db_url: str,
    sb: RunningSandbox,
    *,
    streams: dict[str, dict[str, Any]] | None = None,
    auth: dict[str, Any] | None = None,
    batch_size: int = 50,
) -> Settings:
    return Settings(
        database={"url": db_url},
        sync={"batch_size": batch_size},
        vendors={
            "aqua": {
                "base_url": sb.url("aqua"),
                "timeout_s": 15,
                "auth": auth or CREDENTIALS,
                "retry": {"max_attempts": 3, "base_s": 0.01, "max_backoff_s": 0.05},
                "streams": {
                    name: {"options": opts}
                    for name, opts in (streams or {"Orders": stream_options()}).items()
                },
            }
        },
    )


def sim(sb: RunningSandbox) -> Any:
    return sb.sims["aqua"]


def vendor_rows(
    sb: RunningSandbox,
    source: str = "Orders",
    view: str = "All orders",
    tenant: str | None = None,
) -> list[Any]:
    """The view as the vendor (or its company ``tenant``) holds it now: the truth staging
    must equal."""
    from sandbox.aqua.data import SOURCES

    s = SOURCES[source]
    held = sim(sb) if tenant is None else sim(sb).tenant(tenant)
    return list(view_rows(held.data[source], s, view))


async def control(sb: RunningSandbox, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{sb.url('aqua')}/_sandbox/{what}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def staged(engine: AsyncEngine, stream: str = "Orders") -> dict[str, Any]:
    async with engine.connect() as conn:
        return await fetch_live(conn, "aqua", stream)


async def state_of(engine: AsyncEngine, stream: str = "Orders") -> Any:
    async with engine.connect() as conn:
        return await load_state(conn, "aqua", stream)


def as_csv_row(row: dict[str, Any]) -> dict[str, str]:
    """A vendor row as the CSV export writes it: every value as text."""
    return {k: str(v) for k, v in row.items()}
