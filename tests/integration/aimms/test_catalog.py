"""Catalog pull (apps, AIMMS versions, environments, groups, users) and task history, against
the AIMMS PRO sandbox over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream, run_stream
from tests.integration.aimms.conftest import (
    StartAimms,
    aimms_settings,
    control,
    exchange,
    vendor_get,
)

CATALOG = ("applications", "aimms_versions", "environments", "groups", "users")
USERS = "/pro-api/v1/authentication/users"


async def test_catalog_sync_stages_every_listing_then_only_changes(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=30)
    settings = aimms_settings(db_url, sb.base_url, streams={s: {} for s in CATALOG})
    async with Runtime(settings, db=engine) as rt:
        for stream in CATALOG:
            first = await run_stream(rt, "aimms", stream, "manual")
            assert first.status == "succeeded", stream
            assert first.counts.inserted > 0, stream
        async with engine.connect() as conn:
            apps = await fetch_live(conn, "aimms", "applications")
            users = await fetch_live(conn, "aimms", "users")
            versions = await fetch_live(conn, "aimms", "aimms_versions")
        # One record per app version; the latest tag is on exactly one version per name.
        assert apps["SupplyPlanner/1.1"]["isLatest"] is True
        assert apps["SupplyPlanner/1.0"]["isLatest"] is False
        assert "Prototype/0.1" in apps
        vendor_users = await vendor_get(sb, USERS)
        assert set(users) == {str(u["id"]) for u in vendor_users}
        assert len(versions) == 3

        # Unchanged vendor data: nothing written.
        again = await run_stream(rt, "aimms", "users", "manual")
        assert again.counts.written == 0

        touched = await control(
            sb, "mutate", {"entity": "users", "change": 0.1, "delete": 0.1, "seed": 2}
        )
        inc = await run_stream(rt, "aimms", "users", "schedule")
        assert inc.counts.updated == len(touched["changed"]) > 0
        assert inc.counts.deleted == len(touched["deleted"]) > 0
        async with engine.connect() as conn:
            live = await fetch_live(conn, "aimms", "users")
        assert set(live) == {str(u["id"]) for u in await vendor_get(sb, USERS)}


async def test_listing_paths_are_configurable(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    moved = "/pro-api/v1/directory/users"
    sb = await aimms_sandbox(listing_paths={"users": moved})
    wrong = aimms_settings(db_url, sb.base_url)
    async with Runtime(wrong, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "users", "manual")
    assert result.status == "failed"
    assert "404" in (result.error or "")
    settings = aimms_settings(db_url, sb.base_url, options={"paths": {"users": moved}})
    async with Runtime(settings, db=engine) as rt:
        ok = await run_stream(rt, "aimms", "users", "manual")
    assert ok.counts.inserted == 20


async def test_task_history_stages_new_tasks_and_state_changes(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    streams = {"tasks": {}, "export": exchange(delete_completed=False)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        empty = await run_stream(rt, "aimms", "tasks", "manual")
        assert empty.counts.inserted == 0
        await run_stream(rt, "aimms", "export", "manual")
        await run_stream(rt, "aimms", "export", "manual")
        hist = await run_stream(rt, "aimms", "tasks", "manual")
        assert hist.counts.inserted == 2
        async with engine.connect() as conn:
            live = await fetch_live(conn, "aimms", "tasks")
        assert {t["state"] for t in live.values()} == {"completed"}
        assert {t["serviceName"] for t in live.values()} == {"export_users"}
        again = await run_stream(rt, "aimms", "tasks", "manual")
        assert again.counts.written == 0
        assert again.counts.unchanged == 2


@pytest.mark.parametrize(
    ("api_key", "failing", "scope"),
    [
        ("demo-apikey-tasks-only", "users", "Authentication"),
        ("demo-apikey-tasks-only", "applications", "PublishApp"),
        ("demo-apikey-tasks-only", "aimms_versions", "PublishAIMMS"),
    ],
)
async def test_a_key_lacking_a_scope_fails_that_stream_naming_the_scope(
    engine: AsyncEngine,
    db_url: str,
    aimms_sandbox: StartAimms,
    api_key: str,
    failing: str,
    scope: str,
) -> None:
    sb = await aimms_sandbox()
    settings = aimms_settings(db_url, sb.base_url, api_key=api_key, streams={failing: {}})
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", failing, "manual")
    assert result.status == "failed"
    assert f"'{scope}' scope" in (result.error or ""), result.error
    assert api_key not in (result.error or "")
