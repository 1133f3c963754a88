"""The sandbox changes this connector needed: ``limit`` on v3, cached pages that never go
stale, read-only lists a demo may "mutate", and the X-Amilia-Origin counter."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from sandbox.server import RunningSandbox
from tests.integration.amilia.conftest import ORG, StartAmilia, control


async def get(sb: RunningSandbox, path: str) -> tuple[int, Any]:
    basic = base64.b64encode(b"demo@amilia.test:demo-secret").decode()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sb.url('amilia')}/api/v3/authenticate", headers={"Authorization": f"Basic {basic}"}
        ) as resp:
            token = (await resp.json())["Token"]
        async with http.get(
            f"{sb.url('amilia')}{ORG}/{path}", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json()


async def test_v3_limit_sets_the_page_size_and_per_page_wins(amilia_sandbox: StartAmilia) -> None:
    sb = await amilia_sandbox(records=40)
    status, body = await get(sb, "accounts?limit=7")
    assert status == 200
    assert len(body["Items"]) == 7
    assert "limit=7" in body["Paging"]["Next"]
    _, both = await get(sb, "accounts?limit=7&perPage=3")
    assert len(both["Items"]) == 3
    status, bad = await get(sb, "accounts?limit=0")
    assert status == 400
    assert "limit" in bad["Message"]


async def test_cached_pages_follow_every_change(amilia_sandbox: StartAmilia) -> None:
    sb = await amilia_sandbox(records=40)
    _, before = await get(sb, "accounts?perPage=10&page=2")
    _, again = await get(sb, "accounts?perPage=10&page=2")
    assert again == before
    target = before["Items"][0]["Id"]
    await control(sb, "mutate", {"entity": "accounts", "delete_ids": [target]})
    _, after = await get(sb, "accounts?perPage=10&page=2")
    assert after["Items"][0]["Id"] != target
    assert after["Paging"]["TotalCount"] == before["Paging"]["TotalCount"] - 1
    await control(sb, "reset", {"data": True})
    _, fresh = await get(sb, "accounts?perPage=10&page=2")
    assert fresh == before


async def test_read_only_lists_mutate_to_nothing_and_unknown_ones_fail(
    amilia_sandbox: StartAmilia,
) -> None:
    sb = await amilia_sandbox(records=20)
    for entity in ("programs", "activities", "accessscans"):
        result = await control(sb, "mutate", {"entity": entity, "change": 0.5, "add": 2})
        assert result["read_only"] is True
        assert result["changed"] == result["added"] == result["deleted"] == []
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sb.url('amilia')}/_sandbox/mutate", json={"entity": "widgets"}) as resp,
    ):
        assert resp.status == 400


async def test_origins_are_counted(amilia_sandbox: StartAmilia) -> None:
    sb = await amilia_sandbox(records=20)
    await get(sb, "programs")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sb.url('amilia')}/_sandbox/origins") as resp,
    ):
        assert await resp.json() == {"": 2}  # the login and the list, neither with a header
