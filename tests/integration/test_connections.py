"""Connections (several accounts of one vendor) and limit groups, against the sandbox."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.config import Settings
from service.db import load_state
from service.db.leases import UNRELEASED
from service.db.tables import lease, staged_record, sync_run
from service.engine.groups import limit_groups
from service.engine.runtime import Runtime, check_streams
from service.engine.sync import run_stream
from service.errors import ConfigError

USERS = "/rest/api/standard/v1/User"


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox(SandboxOptions(records=30, seed=4), vendors=("aimsio", "amilia"))
    yield sb
    await sb.close()


def aimsio(sb: RunningSandbox, user: str, **more: Any) -> dict[str, Any]:
    return {
        "connector": "aimsio",
        "base_url": sb.url("aimsio"),
        "max_parallel": 10,
        "rate_per_s": 10,
        "auth": {"kind": "basic", "username": user, "password": "demo-secret"},
        "streams": {"User": {}},
        **more,
    }


async def tenant_users(sb: RunningSandbox, user: str) -> set[str]:
    token = base64.b64encode(f"{user}:demo-secret".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http,
        http.get(sb.url("aimsio") + USERS) as resp,
    ):
        return {str(u["guid"]) for u in await resp.json()}


async def test_two_aimsio_accounts_keep_their_own_rows_and_state(
    engine: AsyncEngine, db_url: str, sandbox: RunningSandbox
) -> None:
    settings = Settings(
        database={"url": db_url},
        vendors={
            "acme_portal": aimsio(sandbox, "demo-1"),
            "acme_sandbox": aimsio(sandbox, "demo-2"),
        },
    )
    async with Runtime(settings) as rt:
        portal = rt.connector("acme_portal")
        assert portal.connection == "acme_portal"
        assert portal.vendor == "aimsio"
        # Each its own group: its own limiter and lease.
        assert portal.client.limiter is not rt.connector("acme_sandbox").client.limiter
        results = await asyncio.gather(
            run_stream(rt, "acme_portal", "User", "test"),
            run_stream(rt, "acme_sandbox", "User", "test"),
        )
    assert [r.vendor for r in results] == ["acme_portal", "acme_sandbox"]
    async with engine.connect() as conn:
        staged = (
            await conn.execute(sa.select(staged_record.c.vendor, staged_record.c.record_key))
        ).all()
        runs = {r.vendor for r in (await conn.execute(sa.select(sync_run.c.vendor))).all()}
        states = [await load_state(conn, v, "User") for v in ("acme_portal", "acme_sandbox")]
    by_connection: dict[str, set[str]] = {}
    for vendor, user in staged:
        by_connection.setdefault(vendor, set()).add(user)
    assert by_connection["acme_portal"] == await tenant_users(sandbox, "demo-1")
    assert by_connection["acme_sandbox"] == await tenant_users(sandbox, "demo-2")
    assert by_connection["acme_portal"] != by_connection["acme_sandbox"]
    assert runs == {"acme_portal", "acme_sandbox"}
    assert all(s is not None for s in states)


def test_connector_defaults_to_the_table_name_and_unknown_is_a_config_error() -> None:
    settings = Settings(
        vendors={"aimsio": {"base_url": "http://127.0.0.1:1/aimsio"}},
    )
    assert settings.connector_of("aimsio") == "aimsio"
    bad = Settings(
        vendors={"acme": {"connector": "nosuch", "base_url": "http://127.0.0.1:1/x"}},
    )
    with pytest.raises(ConfigError) as err:
        check_streams(bad)
    assert err.value.key == "vendors.acme.connector"


def amilia(
    sb: RunningSandbox, org: str, user: str = "demo@amilia.test", **more: Any
) -> dict[str, Any]:
    return {
        "connector": "amilia",
        "base_url": sb.url("amilia"),
        "max_parallel": 20,
        "rate_per_s": 100,
        "auth": {"kind": "basic_jwt", "username": user, "password": "demo-secret"},
        "retry": {"max_attempts": 8, "base_s": 0.05, "max_backoff_s": 1},
        "options": {"org": org, "language": "en", "per_page": 10, "v2_limit": 10},
        "streams": {"accounts": {}, "persons": {}},
        **more,
    }


def test_amilia_connections_share_a_group_by_default_and_may_split() -> None:
    url = "http://127.0.0.1:1/amilia"
    base = {"connector": "amilia", "base_url": url}
    settings = Settings(
        vendors={
            "org_a": base,
            "org_b": base,
            "org_c": {**base, "limit_group": "egress_2"},
            "aimsio": {"base_url": "http://127.0.0.1:1/aimsio"},
        }
    )
    groups = limit_groups(settings)
    assert set(groups) == {"group:amilia", "group:egress_2", "vendor:aimsio"}
    assert groups["group:amilia"].connections == ("org_a", "org_b")
    mixed = Settings(
        vendors={
            "org_a": {**base, "limit_group": "shared"},
            "aimsio": {"base_url": "http://127.0.0.1:1/a", "limit_group": "shared"},
        }
    )
    with pytest.raises(ConfigError) as err:
        check_streams(mixed)
    assert "mixes connectors" in str(err.value)


async def test_two_amilia_organisations_share_100_calls_per_s(
    engine: AsyncEngine, db_url: str
) -> None:
    sb = await start_sandbox(
        SandboxOptions(records=600, seed=9, latency_ms=30), vendors=("amilia",)
    )
    try:
        settings = Settings(
            database={"url": db_url},
            # Two organisations (sandbox tenants demo-1 and demo-2), read from one address.
            vendors={
                "org_a": amilia(sb, "8008001", "demo-1@amilia.test"),
                "org_b": amilia(sb, "forest-explorers-2", "demo-2@amilia.test"),
            },
        )
        async with Runtime(settings) as rt:
            a, b = rt.connector("org_a"), rt.connector("org_b")
            assert a.client.limiter is b.client.limiter  # one budget for the egress IP
            async with rt.vendor_lease("org_a") as held:
                assert held.name == "group:amilia"
            await asyncio.gather(
                *(
                    run_stream(rt, c, s, "test")
                    for c in ("org_a", "org_b")
                    for s in ("accounts", "persons")
                )
            )
        async with (
            aiohttp.ClientSession() as http,
            http.get(sb.url("amilia") + "/_sandbox/stats", params={"tenant": "*"}) as resp,
        ):
            answer = await resp.json()
        # The sandbox counts the two organisations' calls together per client address.
        stats = answer["by_client"]["127.0.0.1"]
        each = [answer["tenants"][t]["requests"] for t in ("demo-1", "demo-2")]
        assert min(each) > 50
        assert stats["requests"] == sum(each)
        assert stats["requests"] > 200  # enough calls for the cap to matter
        assert stats["max_per_s"] <= 100
        assert stats["rate_limited"] == 0
        assert stats["violation_count"] == 0
        async with engine.connect() as conn:
            vendors = {
                r.vendor for r in (await conn.execute(sa.select(staged_record.c.vendor))).all()
            }
            held = (await conn.execute(sa.select(lease.c.name).where(UNRELEASED))).all()
        assert vendors == {"org_a", "org_b"}
        assert held == []  # released
    finally:
        await sb.close()
