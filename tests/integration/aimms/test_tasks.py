"""Task exchanges against the AIMMS PRO sandbox over real HTTP, on SQLite and PostgreSQL:
a completed task's response staged (JSON and streamed CSV), a failed task, a stuck task
interrupted, a zero-concurrency licence, and a key without the Tasks scope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from service.connectors.aimms import task_signature
from service.connectors.aimms_tasks import TaskOptions
from service.db import fetch_live, save_state
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream, run_stream
from tests.integration.aimms.conftest import (
    StartAimms,
    aimms_settings,
    control,
    exchange,
    vendor_get,
)

TASKS = "/pro-api/v2/tasks"
USERS = "/pro-api/v1/authentication/users"
CATALOG_ONLY = {
    "key": "catalog-only-key",
    "name": "catalog only",
    "scopes": ["Authentication", "PublishApp", "PublishAIMMS"],
    "expires_in_s": 86_400.0,
    "user": 16777095,
}


async def test_exchange_stages_the_json_response_and_deletes_the_task(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=40)
    streams = {"export": exchange(body={"offset": 0}, delete_completed=True)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aimms", "export", "manual")
        assert result.counts.inserted == 40
        async with engine.connect() as conn:
            live = await fetch_live(conn, "aimms", "export")
        vendor_users = {str(u["id"]): u for u in await vendor_get(sb, USERS)}
        assert live == vendor_users
        assert await vendor_get(sb, TASKS) == []  # completed and deleted afterwards

        # The response is a complete snapshot: a user gone at the vendor is soft-deleted.
        gone = next(iter(vendor_users))
        await control(sb, "mutate", {"entity": "users", "delete_ids": [int(gone)]})
        again = await run_stream(rt, "aimms", "export", "manual")
        assert (again.counts.inserted, again.counts.deleted, again.counts.updated) == (0, 1, 0)


async def test_exchange_streams_a_csv_response_on_the_latest_version(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    lines = ["code,name,note"] + [f'P{i:03d},Part {i},"multi\nline, {i}"' for i in range(250)]
    csv_text = "\n".join(lines) + "\n"
    streams = {
        "parts": exchange(
            app="DemandForecast",
            version="latest",
            service="echo",
            body=csv_text,
            content_type="text/csv",
            format="csv",
            key="code",
        )
    }
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aimms", "parts", "manual")
        async with engine.connect() as conn:
            live = await fetch_live(conn, "aimms", "parts")
    assert result.counts.inserted == 250
    assert live["P007"] == {"code": "P007", "name": "Part 7", "note": "multi\nline, 7"}


async def test_a_failed_task_fails_the_run_with_its_error_message(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    streams = {"broken": exchange(service="fail")}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "broken", "manual")
        async with engine.connect() as conn:
            assert await fetch_live(conn, "aimms", "broken") == {}
    assert result.status == "failed"
    assert "procedure for service 'fail' raised an error" in (result.error or ""), result.error


async def test_a_stuck_task_is_interrupted_and_the_run_fails_clearly(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    await control(sb, "faults", {"extra": {"task_stuck": True}})
    streams = {"export": exchange(deadline_s=0.6)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "export", "manual")
    assert result.status == "failed"
    assert "interrupted with interrupt-solve" in (result.error or ""), result.error
    tasks = await vendor_get(sb, TASKS)
    assert len(tasks) == 1
    assert tasks[0]["state"] == "running"
    sim = sb.sims["aimms"]
    (run,) = sim.queue.runs()  # type: ignore[attr-defined]
    assert run.interrupt_solve  # the vendor received our interrupt-solve


async def test_zero_task_concurrency_is_reported_not_waited_on(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    await control(sb, "faults", {"extra": {"licence_zero": True}})
    streams = {"export": exchange(licence_wait_s=0.3, deadline_s=30)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "export", "manual")
    assert result.status == "failed"
    error = result.error or ""
    assert "licence profile allows 0 concurrent tasks" in error, error
    assert "AIMMS Customer Support" in error
    assert result.duration_s < 10  # detected after licence_wait_s, not at the 30 s deadline


async def test_a_key_without_the_tasks_scope_fails_task_streams_only(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(
        api_keys=[
            CATALOG_ONLY,
            {**CATALOG_ONLY, "key": "demo-apikey-all-scopes", "name": "all", "scopes": [
                "Authentication", "PublishApp", "PublishAIMMS", "Tasks", "API Key"
            ]},
        ]
    )  # fmt: skip
    streams = {"users": {}, "tasks": {}, "export": exchange()}
    settings = aimms_settings(db_url, sb.base_url, api_key="catalog-only-key", streams=streams)
    async with Runtime(settings, db=engine) as rt:
        users = await execute_stream(rt, "aimms", "users", "manual")
        history = await execute_stream(rt, "aimms", "tasks", "manual")
        export = await execute_stream(rt, "aimms", "export", "manual")
    assert users.status == "succeeded"
    assert users.counts.inserted == 20
    for failed in (history, export):
        assert failed.status == "failed"
        assert "lacks the 'Tasks' scope" in (failed.error or ""), failed.error
        assert "catalog-only-key" not in (failed.error or "")


async def test_a_task_body_built_from_another_streams_staged_rows(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=15)
    body_from = {"stream": "users", "fields": ["id", "name"]}
    streams = {"users": {}, "echoed": exchange(service="echo", body_from=body_from)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, "aimms", "users", "manual")
        result = await run_stream(rt, "aimms", "echoed", "manual")
        async with engine.connect() as conn:
            echoed = await fetch_live(conn, "aimms", "echoed")
            users = await fetch_live(conn, "aimms", "users")
    assert result.counts.inserted == 15
    assert echoed == {k: {"id": u["id"], "name": u["name"]} for k, u in users.items()}


async def test_zero_concurrency_set_from_outside_is_reported(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    await control(sb, "concurrency", {"task_parallelism": 0})
    streams = {"export": exchange(licence_wait_s=0.3, deadline_s=30)}
    settings = aimms_settings(db_url, sb.base_url, streams=streams)
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "export", "manual")
        assert result.status == "failed"
        assert "REST licence profile allows 0 concurrent tasks" in (result.error or "")
        # Once support enables the profile, the same stream runs.
        await control(sb, "concurrency", {"task_parallelism": 1})
        ok = await run_stream(rt, "aimms", "export", "manual")
    assert ok.counts.inserted == 20


async def test_a_task_queued_behind_a_running_one_is_not_a_licence_problem(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    await control(sb, "concurrency", {"task_parallelism": 1})
    await control(sb, "faults", {"extra": {"task_stuck": True}})
    blocker = exchange(deadline_s=0.3)
    settings = aimms_settings(db_url, sb.base_url, streams={"first": blocker})
    async with Runtime(settings, db=engine) as rt:
        await execute_stream(rt, "aimms", "first", "manual")  # stuck: holds the one slot
    await control(sb, "faults", {"extra": {"task_stuck": False}})
    waiting = exchange(licence_wait_s=0.2, deadline_s=1)
    settings = aimms_settings(db_url, sb.base_url, streams={"second": waiting})
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aimms", "second", "manual")
    assert result.status == "failed"
    assert "licence" not in (result.error or "")
    assert "not finished after 1s" in (result.error or ""), result.error


async def test_a_killed_runs_task_is_followed_not_created_again(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    """A run killed after creating its task left it checkpointed: the next run follows that
    task to its end and stages its response; no second task is created."""
    sb = await aimms_sandbox(records=12)
    options = exchange(delete_completed=True)
    settings = aimms_settings(db_url, sb.base_url, streams={"export": options})
    async with aiohttp.ClientSession(headers={"apikey": "demo-apikey-all-scopes"}) as http:
        url = f"{sb.url('aimms')}{TASKS}/SupplyPlanner/export_users"
        async with http.post(url, data=b"") as resp:
            assert resp.status in (200, 201), await resp.text()
            left = (await resp.json())["id"]
    sig = task_signature(TaskOptions.model_validate(options_only(options)), b"")
    pending = {"task": left, "sig": sig, "at": datetime.now(UTC).isoformat()}
    async with engine.begin() as conn:
        await save_state(conn, "aimms", "export", {"pending": pending}, now=datetime.now(UTC))
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aimms", "export", "manual")
        async with engine.connect() as conn:
            live = await fetch_live(conn, "aimms", "export")
    assert result.counts.inserted == 12
    assert f"resumed task {left}" in (result.note or "")
    assert live == {str(u["id"]): u for u in await vendor_get(sb, USERS)}
    assert sb.sims["aimms"].queue.created == 1  # type: ignore[attr-defined]
    assert await vendor_get(sb, TASKS) == []  # followed to its end, then deleted


def options_only(stream: dict[str, Any]) -> dict[str, Any]:
    """The task part of an exchange definition (what the signature covers)."""
    return {k: v for k, v in stream.items() if k in TaskOptions.model_fields}
