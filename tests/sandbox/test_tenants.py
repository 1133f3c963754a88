"""Sandbox tenants: each set of credentials is an account with its own data and counters."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp

from sandbox.app import suffixed, suffixed_email
from tests.sandbox.conftest import StartSandbox

USERS = "/rest/api/standard/v1/User"


async def get(http: aiohttp.ClientSession, url: str, user: str, pw: str = "demo-secret") -> Any:
    token = base64.b64encode(f"{user}:{pw}".encode()).decode()
    async with http.get(url, headers={"Authorization": f"Basic {token}"}) as resp:
        return resp.status, await resp.json()


async def test_each_aimsio_credential_is_its_own_tenant(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await sandbox_factory("aimsio", records=20, seed=5)
    base = sb.url("aimsio")
    status, demo = await get(http, base + USERS, "demo")
    assert status == 200
    status, seven = await get(http, base + USERS, "demo-7")
    assert status == 200
    assert len(seven) == len(demo) == 20
    assert seven != demo
    # Deterministic: the same tenant serves the same data again.
    assert (await get(http, base + USERS, "demo-7"))[1] == seven
    # Its credentials are the base user's password; a wrong one is refused.
    assert (await get(http, base + USERS, "demo-7", "nope"))[0] == 401
    assert (await get(http, base + USERS, "nobody-7"))[0] == 401
    await asyncio.gather(*(get(http, base + USERS, "demo-8") for _ in range(3)))

    async def stats(tenant: str) -> Any:
        async with http.get(f"{base}/_sandbox/stats", params={"tenant": tenant}) as resp:
            return await resp.json()

    # demo-7: two reads and the wrong password; demo-8: three reads.
    assert (await stats("demo-7"))["requests"] == 3
    assert (await stats("demo-8"))["requests"] == 3
    async with http.get(f"{base}/_sandbox/stats") as resp:
        assert (await resp.json())["requests"] == 2  # demo's read and nobody-7's refusal
    async with http.get(f"{base}/_sandbox/stats", params={"tenant": "*"}) as resp:
        every = (await resp.json())["tenants"]
    assert set(every) == {"", "demo-7", "demo-8"}


async def test_tenants_have_their_own_limits(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    """Ten parallel calls per account are within each account's cap: no violation."""
    sb = await sandbox_factory("aimsio", records=5, latency_ms=100)
    base = sb.url("aimsio")
    users = [f"demo-{n}" for n in range(3)]
    await asyncio.gather(*(get(http, base + USERS, u) for u in users for _ in range(10)))
    async with http.get(f"{base}/_sandbox/stats", params={"tenant": "*"}) as resp:
        every = (await resp.json())["tenants"]
    for u in users:
        assert every[u]["requests"] == 10
        assert every[u]["violation_count"] == 0
        assert every[u]["peak_in_flight"] <= 10


def test_suffixed_names_a_tenant_only_for_a_known_base() -> None:
    assert suffixed("demo-7", ["demo"]) == ("demo", "demo-7")
    assert suffixed("demo", ["demo"]) is None  # the base itself: the default tenant
    assert suffixed("demo-", ["demo"]) is None
    assert suffixed("nobody-7", ["demo"]) is None
    assert suffixed("DEMO-X", ["demo"]) is None
    assert suffixed("DEMO-X", ["demo"], fold=True) == ("demo", "demo-x")
    assert suffixed("demo-7", ["demo", "demo-7"]) is None  # a configured user is no tenant
    assert suffixed_email("Demo-7@X.test", ["demo@x.test"]) == ("demo@x.test", "demo-7")
    assert suffixed_email("demo-7@other.test", ["demo@x.test"]) is None
    assert suffixed_email("demo-7", ["demo@x.test"]) is None
