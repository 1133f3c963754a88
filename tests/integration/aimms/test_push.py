"""Pushing master data to an AIMMS app as task payloads through the outbox, on SQLite and
PostgreSQL: a batch's rows share its task's outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.engine.enqueue import PushRow, enqueue_rows
from service.engine.push import push_once
from service.engine.runtime import Runtime
from tests.integration.aimms.conftest import FAST, StartAimms, aimms_settings, control, vendor_get

USERS = "/pro-api/v1/authentication/users"


def rows(n: int) -> list[PushRow]:
    users = [{"name": f"Pushed {i}", "email": f"pushed{i}@example.test"} for i in range(n)]
    return [PushRow("aimms", "task", u["email"], u) for u in users]


def target(**extra: Any) -> dict[str, Any]:
    return {"push": {"app": "SupplyPlanner", "service": "import_users", **FAST, **extra}}


def by_status(outcomes: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for o in outcomes:
        out.setdefault(o.status, []).append(o)
    return out


async def test_a_completed_task_accepts_its_batch(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=10)
    settings = aimms_settings(
        db_url, sb.base_url, options=target(delete_completed=True), push={"batch_size": 4}
    )
    assert await enqueue_rows(engine, rows(10)) == 10
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt, vendor="aimms")
    got = by_status(report.outcomes)
    assert len(got["sent"]) == 10, report.outcomes
    users = await vendor_get(sb, USERS)
    assert len(users) == 20
    assert {u["email"] for u in users} >= {f"pushed{i}@example.test" for i in range(10)}
    assert await vendor_get(sb, "/pro-api/v2/tasks") == []  # 3 tasks, each deleted once done


async def test_a_failed_task_rejects_its_batch_with_the_task_message(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=10)
    await control(sb, "faults", {"extra": {"task_fail": True}})
    settings = aimms_settings(db_url, sb.base_url, options=target())
    assert await enqueue_rows(engine, rows(3)) == 3
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt, vendor="aimms")
    got = by_status(report.outcomes)
    assert len(got["rejected"]) == 3, report.outcomes
    assert all("the model session ended with an error" in (o.detail or "") for o in got["rejected"])
    assert len(await vendor_get(sb, USERS)) == 10


async def test_a_task_that_does_not_finish_leaves_its_batch_to_retry(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox(records=10)
    await control(sb, "faults", {"extra": {"task_stuck": True}})
    settings = aimms_settings(db_url, sb.base_url, options=target(deadline_s=0.5))
    assert await enqueue_rows(engine, rows(2)) == 2
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt, vendor="aimms")
    assert {o.status for o in report.outcomes} == {"retry"}, report.outcomes
    assert all("not finished after 0.5s" in (o.detail or "") for o in report.outcomes)


async def test_a_push_without_a_configured_target_names_the_setting(
    engine: AsyncEngine, db_url: str, aimms_sandbox: StartAimms
) -> None:
    sb = await aimms_sandbox()
    settings = aimms_settings(db_url, sb.base_url)
    assert await enqueue_rows(engine, rows(1)) == 1
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt, vendor="aimms")
    (outcome,) = report.outcomes
    assert outcome.status != "sent"
    assert "vendors.aimms.options.push" in (outcome.detail or ""), outcome
