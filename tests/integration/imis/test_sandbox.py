"""The iMIS sandbox's additions driven by plain aiohttp: the seed's resources (country,
Item, Invoice), IQA queries, and the clock control that opens a restore window."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.imis.conftest import CREDS, StartImis, at_utc, control, vendor_all


async def get(base: str, path: str, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/token", data=CREDS) as resp:
            token = (await resp.json())["access_token"] if resp.status == 200 else "x"
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}{path}", params=params, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_seed_examples_are_served(imis_sandbox: StartImis) -> None:
    sb = await imis_sandbox(records=30)
    base = sb.url("imis")
    status, body = await get(base, "/api/country", countryname="contains:united")
    assert status == 200
    names = sorted(c["CountryName"] for c in body["Items"]["$values"])
    assert names == ["United Arab Emirates", "United Kingdom", "United States"]
    status, party = await get(base, "/api/party/101")
    assert status == 200
    assert party["PartyId"] == "101"
    status, body = await get(base, "/api/party", UniformId=party["UniformId"])
    assert [p["PartyId"] for p in body["Items"]["$values"]] == ["101"]
    for entity in ("Item", "Invoice"):
        rows = await vendor_all(sb, entity)
        assert len(rows) == 30
        assert all("UpdatedOn" in r["UpdateInformation"] for r in rows)


async def test_iqa_query_with_parameter_and_paging(imis_sandbox: StartImis) -> None:
    sb = await imis_sandbox(records=200)
    base = sb.url("imis")
    query = "$/ContactManagement/DefaultSystemQueries/Members"
    status, body = await get(base, "/api/iqa", QueryName=query, parameter="startsWith:S", limit="5")
    assert status == 200
    rows = body["Items"]["$values"]
    assert len(rows) == 5
    assert body["HasNext"] is True
    assert all(r["$type"].startswith("System.Dynamic.ExpandoObject") for r in rows)
    assert all(r["LastName"].startswith("S") for r in rows)
    status, same = await get(base, "/api/query", QueryName=query, parameter="startsWith:S")
    assert same["TotalCount"] == body["TotalCount"]
    status, _ = await get(base, "/api/iqa", QueryName="$/No/Such")
    assert status == 404


@pytest.mark.imis_windows
async def test_clock_control_opens_a_restore_window(imis_sandbox: StartImis) -> None:
    sb = await imis_sandbox(records=5)
    base = sb.url("imis")
    await control(sb, "clock", {"set": at_utc("2026-03-01T18:02:00").timestamp()})
    status, _ = await get(base, "/api/Party")
    assert status == 503
    await control(sb, "clock", {"advance": 300})
    status, _ = await get(base, "/api/Party")
    assert status == 200
    now = await control(sb, "clock", {"reset": True})
    assert now["offset_s"] == 0
