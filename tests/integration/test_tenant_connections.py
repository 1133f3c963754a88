"""Two connections of one connector, each a sandbox tenant (an account of its own): both sync
into one database, and each connection's staged rows equal its own account's data.
(Aimsio's case is tests/integration/test_connections.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings
from service.connectors.imis_query import cursor_text, local_to_utc
from service.db import fetch_live, staged_cursors
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from tests.integration.aimms.conftest import PHASES, vendor_get
from tests.integration.amilia.conftest import vendor_items
from tests.integration.aqua.conftest import (
    CREDENTIALS,
    FAST,
    as_csv_row,
    stream_options,
    vendor_rows,
)
from tests.integration.imis.conftest import vendor_all

Start = Callable[..., Awaitable[RunningSandbox]]

PAIR = {"a": 1, "b": 2}  # [vendors.a] and [vendors.b]: sandbox tenants demo-1 and demo-2
RETRY = {"max_attempts": 6, "base_s": 0.05, "max_backoff_s": 0.5}


@pytest.fixture
async def sandbox() -> AsyncIterator[Start]:
    """``await sandbox("imis", records=40, **vendor_settings)``: one simulator, closed after."""
    started: list[RunningSandbox] = []

    async def start(vendor: str, records: int, **settings: Any) -> RunningSandbox:
        options = SandboxOptions(records=records, seed=11, vendors={vendor: settings})
        started.append(await start_sandbox(options, vendors=(vendor,)))
        return started[-1]

    yield start
    for sb in started:
        await sb.close()


async def sync_both(
    db_url: str, engine: AsyncEngine, stream: str, table: Any
) -> dict[str, dict[str, Any]]:
    """Connections a and b (``table(n)``: tenant demo-n's table) synced at once; their
    live staged rows."""
    settings = Settings(database={"url": db_url}, vendors={c: table(n) for c, n in PAIR.items()})
    async with Runtime(settings, db=engine) as rt:
        results = await asyncio.gather(*(run_stream(rt, c, stream, "test") for c in PAIR))
    for r in results:
        assert r.status == "succeeded", (r.vendor, r.error)
    async with engine.connect() as conn:
        return {c: dict(await fetch_live(conn, c, stream)) for c in PAIR}


async def tenant_stats(sb: RunningSandbox, vendor: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sb.url(vendor)}/_sandbox/stats", params={"tenant": "*"}) as resp,
    ):
        return dict(await resp.json())


async def test_two_imis_sites_stage_their_own_parties(
    engine: AsyncEngine, db_url: str, sandbox: Start
) -> None:
    sb = await sandbox("imis", records=40)

    def site(n: int) -> dict[str, Any]:
        return {
            "connector": "imis",
            "base_url": sb.url("imis"),
            "max_parallel": 5,
            "auth": {"kind": "password_grant", "username": f"demo-{n}", "password": "demo-secret"},
            "retry": RETRY,
            "options": {"time_zone": "UTC", "page_size": 10},
            "streams": {"Party": {}},
        }

    staged = await sync_both(db_url, engine, "Party", site)
    utc = ZoneInfo("UTC")
    for c, n in PAIR.items():
        async with engine.connect() as conn:
            cursors = await staged_cursors(conn, c, "Party")
        rows = await vendor_all(sb, "Party", as_user=f"demo-{n}")
        assert len(rows) == 40
        # The connector unwraps iMIS's "$values" envelopes: compare cursors and an email.
        assert {k: p["Emails"][0]["Address"] for k, p in staged[c].items()} == {
            str(r["PartyId"]): r["Emails"]["$values"][0]["Address"] for r in rows
        }
        assert cursors == {
            str(r["PartyId"]): cursor_text(local_to_utc(r["UpdateInformation"]["UpdatedOn"], utc))
            for r in rows
        }
    assert staged["a"] != staged["b"]
    tenants = (await tenant_stats(sb, "imis"))["tenants"]
    assert tenants[""]["requests"] == 0  # every call went to the connections' own sites
    assert all(tenants[f"demo-{n}"]["violation_count"] == 0 for n in PAIR.values())


async def test_two_amilia_organisations_stage_their_own_accounts(
    engine: AsyncEngine, db_url: str, sandbox: Start
) -> None:
    sb = await sandbox("amilia", records=120)

    def org(n: int) -> dict[str, Any]:
        return {
            "connector": "amilia",  # both in the default shared group "amilia": one egress IP
            "base_url": sb.url("amilia"),
            "max_parallel": 20,
            "rate_per_s": 100,
            "auth": {
                "kind": "basic_jwt",
                "username": f"demo-{n}@amilia.test",
                "password": "demo-secret",
            },
            "retry": RETRY,
            "options": {"org": str(8008000 + n), "language": "en", "per_page": 10},
            "streams": {"accounts": {}},
        }

    staged = await sync_both(db_url, engine, "accounts", org)
    every = await tenant_stats(sb, "amilia")
    for c, n in PAIR.items():
        user, path = f"demo-{n}@amilia.test", f"/api/v3/en/org/{8008000 + n}"
        items = await vendor_items(sb, "accounts?showArchived=true", user=user, org=path)
        assert staged[c] == {str(i["Id"]): i for i in items}
        assert every["tenants"][f"demo-{n}"]["requests"] > 10
    assert staged["a"] != staged["b"]
    by_ip = every["by_client"]["127.0.0.1"]
    assert by_ip["requests"] == sum(every["tenants"][f"demo-{n}"]["requests"] for n in (1, 2))
    assert (by_ip["violation_count"], by_ip["rate_limited"]) == (0, 0)


async def test_two_aqua_companies_stage_their_own_orders(
    engine: AsyncEngine, db_url: str, sandbox: Start
) -> None:
    sb = await sandbox("aqua", records=60, **FAST)

    def company(n: int) -> dict[str, Any]:
        auth = {
            **CREDENTIALS,
            "client_id": f"aqua-demo-client-{n}",
            "username": f"demo-{n}@aims360.test",
        }
        return {
            "connector": "aqua",
            "base_url": sb.url("aqua"),
            "auth": auth,
            "retry": RETRY,
            "streams": {"Orders": {"options": stream_options()}},
        }

    staged = await sync_both(db_url, engine, "Orders", company)
    for c, n in PAIR.items():
        truth = {r["Order No"]: as_csv_row(r) for r in vendor_rows(sb, tenant=f"demo-{n}")}
        assert staged[c] == truth
        assert len(truth) == 60
    assert staged["a"] != staged["b"]
    assert vendor_rows(sb) != vendor_rows(sb, tenant="demo-1")  # not the default company's
    tenants = (await tenant_stats(sb, "aqua"))["tenants"]
    assert tenants[""]["requests"] == 0


async def test_two_aimms_accounts_stage_their_own_users(
    engine: AsyncEngine, db_url: str, sandbox: Start
) -> None:
    sb = await sandbox("aimms", records=25, task_phases_s=PHASES, tick_interval_s=0.02)

    def account(n: int) -> dict[str, Any]:
        return {
            "connector": "aimms",
            "base_url": sb.url("aimms"),
            "max_parallel": 4,
            "auth": {"kind": "apikey", "api_key": f"demo-apikey-all-scopes-{n}"},
            "retry": RETRY,
            "streams": {"users": {}},
        }

    staged = await sync_both(db_url, engine, "users", account)
    users = "/pro-api/v1/authentication/users"
    for c, n in PAIR.items():
        truth = await vendor_get(sb, users, key=f"demo-apikey-all-scopes-{n}")
        assert staged[c] == {str(u["id"]): u for u in truth}
        assert len(truth) == 25
    assert staged["a"] != staged["b"]
    tenants = (await tenant_stats(sb, "aimms"))["tenants"]
    assert tenants[""]["requests"] == 0
