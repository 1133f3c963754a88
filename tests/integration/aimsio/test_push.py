"""Pushing master data to the Aimsio sandbox through the outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import FieldMap
from service.connectors.aimsio import AimsioConnector
from service.db import upsert_records
from service.db.tables import push_outbox
from service.engine.enqueue import PushRow, enqueue_rows
from service.engine.push import push_once
from service.engine.runtime import Runtime
from service.models import Record
from tests.integration.aimsio.conftest import StartAimsio, aimsio_settings, control, vendor_get


def user(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "userName": f"push.user{i:04d}@acme-sandbox",
        "userFirstName": "Push",
        "userLastName": f"User {i}",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
        **extra,
    }


def rows(users: list[dict[str, Any]]) -> list[PushRow]:
    return [PushRow("aimsio", "User", u["userName"], u) for u in users]


async def statuses(engine: AsyncEngine) -> dict[str, int]:
    t = push_outbox.c
    q = sa.select(t.status, sa.func.count()).group_by(t.status)
    async with engine.connect() as conn:
        return {s: n for s, n in (await conn.execute(q)).all()}


class Clock:
    """A settable UTC clock for claim expiry and retry backoff."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_push_1000_users_with_three_rejected(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=20)
    users = [user(i) for i in range(1000)]
    doomed = [users[i]["userName"] for i in (5, 500, 999)]
    await control(sb, "faults", {"reject_keys": doomed})
    settings = aimsio_settings(db_url, sb.base_url, push={"batch_size": 100})
    assert await enqueue_rows(engine, rows(users)) == 1000
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt)
    by_status: dict[str, list[str]] = {}
    for o in report.outcomes:
        by_status.setdefault(o.status, []).append(o.record_key)
    assert len(by_status["sent"]) == 997
    assert sorted(by_status["rejected"]) == sorted(doomed)
    rejected = [o for o in report.outcomes if o.status == "rejected"]
    assert all(o.detail and "reject" in o.detail.lower() for o in rejected), rejected
    assert await statuses(engine) == {"sent": 997, "rejected": 3}
    assert len(await vendor_get(sb, "User")) == 20 + 997

    # A re-run sends nothing new, and enqueuing the same rows again adds nothing.
    await control(sb, "reset", {"faults": False})
    assert await enqueue_rows(engine, rows(users)) == 0
    async with Runtime(settings, db=engine) as rt:
        again = await push_once(rt)
    assert again.outcomes == []
    stats = await control(sb, "stats")
    assert stats["requests"] == 0


async def test_killed_mid_batch_then_rerun_creates_each_user_once(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    await control(sb, "faults", {"latency_ms": 400})
    users = [user(i) for i in range(300)]
    await enqueue_rows(engine, rows(users))
    clock = Clock()
    settings = aimsio_settings(db_url, sb.base_url, push={"batch_size": 50, "claim_ttl_s": 60})
    async with Runtime(settings, db=engine, clock=clock, owner="doomed") as rt:
        task = asyncio.create_task(push_once(rt))
        for _ in range(200):  # until the vendor has seen a few POSTs (bounded)
            await asyncio.sleep(0.05)
            if (await control(sb, "stats"))["requests"] >= 3:
                break
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
    killed = await statuses(engine)
    assert killed.get("sent", 0) < 300  # really interrupted

    await control(sb, "faults", {"latency_ms": 0})
    clock.now += timedelta(seconds=61)  # the dead worker's claims expire
    async with Runtime(settings, db=engine, clock=clock, owner="rescuer") as rt:
        await push_once(rt)
    assert await statuses(engine) == {"sent": 300}
    listing = await vendor_get(sb, "User")
    assert len(listing) == 10 + 300  # none lost, none created twice


async def test_transient_failures_retry_then_dead_letter(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    await control(sb, "faults", {"error_rate": 1.0, "error_status": 503})
    await enqueue_rows(engine, rows([user(1)]))
    clock = Clock()
    settings = aimsio_settings(
        db_url,
        sb.base_url,
        retry={"max_attempts": 1},
        push={"max_attempts": 3, "backoff_base_s": 5},
    )
    seen = []
    async with Runtime(settings, db=engine, clock=clock) as rt:
        for _ in range(3):
            report = await push_once(rt, rng=random.Random(1))
            seen.append([o.status for o in report.outcomes])
            clock.now += timedelta(minutes=5)
    assert seen == [["retry"], ["retry"], ["dead"]]
    t = push_outbox.c
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.status, t.attempts, t.last_error))).one()
    assert (row.status, row.attempts) == ("dead", 3)
    assert "503" in row.last_error


async def test_unchanged_payload_is_skipped_and_changed_one_sent(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    first = user(1)
    changed = user(1, userPhone="555-0100")
    async with Runtime(settings, db=engine) as rt:
        await enqueue_rows(engine, rows([first]))
        assert [o.status for o in (await push_once(rt)).outcomes] == ["sent"]
        await enqueue_rows(engine, rows([changed]))
        assert [o.status for o in (await push_once(rt)).outcomes] == ["sent"]
        # Forced re-enqueue of what the vendor already holds: skipped, not sent.
        await enqueue_rows(engine, rows([changed]), force=True)
        report = await push_once(rt)
    assert [o.status for o in report.outcomes] == ["skipped"]


async def test_local_validation_and_dry_run_send_nothing(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    bad = [
        user(1, userShortCode="ABCD"),
        {k: v for k, v in user(2).items() if k != "userRoleNames"},
        {k: v for k, v in user(3).items() if k != "userLastName"},
    ]
    await enqueue_rows(engine, rows([*bad, user(4)]))
    async with Runtime(settings, db=engine) as rt:
        preview = await push_once(rt, dry_run=True)
        assert sorted(o.status for o in preview.outcomes) == [
            "invalid",
            "invalid",
            "invalid",
            "would-send",
        ]
        assert (await control(sb, "stats"))["requests"] == 0
        assert await statuses(engine) == {"pending": 4}
        report = await push_once(rt)
    reasons = {o.record_key: o.detail for o in report.outcomes if o.status == "invalid"}
    assert "userShortCode" in reasons[bad[0]["userName"]]
    assert "userRoleNames" in reasons[bad[1]["userName"]]
    assert "userLastName" in reasons[bad[2]["userName"]]
    assert await statuses(engine) == {"invalid": 3, "sent": 1}


async def test_mapping_rule_and_plain_sql_insert_feed_the_outbox(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    rule = {
        "source_vendor": "imis",
        "source_stream": "Party",
        "target_vendor": "aimsio",
        "entity": "User",
        "key_field": "userName",
        "fields": {
            "userName": "Emails.$values.0.Address",
            "userFirstName": "PersonName.FirstName",
            "userLastName": "PersonName.LastName",
            "userRoleNames": "=[Field Worker]",
            "userIsActive": "=true",
        },
    }
    settings.push.mappings = [FieldMap(**rule)]
    party = {
        "PersonName": {"FirstName": "Ada", "LastName": "Lovelace"},
        "Emails": {"$values": [{"Address": "ada@example.org"}]},
    }
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await upsert_records(
            conn, "imis", "Party", [Record("Party", "1", party)], run_id=None, now=now
        )
        await conn.execute(
            sa.insert(push_outbox).values(
                vendor="aimsio",
                entity="User",
                record_key="sql.user@acme-sandbox",
                payload=user(9, userName="sql.user@acme-sandbox"),
            )
        )
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt)
        assert report.enqueued_by_mappings == 1
        assert sorted(o.record_key for o in report.outcomes if o.status == "sent") == [
            "ada@example.org",
            "sql.user@acme-sandbox",
        ]
        again = await push_once(rt)  # the rule maps the same row: nothing new
    assert again.enqueued_by_mappings == 0
    assert again.outcomes == []


async def test_two_concurrent_push_workers_send_each_row_once(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    """Two workers (processes) claim disjoint rows; only one may drive the vendor at a
    time (its limiter is per process), so the other defers its claimed rows, unsent."""
    sb = await aimsio_sandbox(records=10)
    await control(sb, "faults", {"latency_ms": 50})
    await enqueue_rows(engine, rows([user(i) for i in range(200)]))
    settings = aimsio_settings(db_url, sb.base_url, push={"batch_size": 20})
    clock = Clock()
    async with (
        Runtime(settings, db=engine, owner="worker-a", clock=clock) as a,
        Runtime(settings, db=engine, owner="worker-b", clock=clock) as b,
    ):
        ra, rb = await asyncio.gather(push_once(a), push_once(b))
        sent_a = {o.record_key for o in ra.outcomes if o.status == "sent"}
        sent_b = {o.record_key for o in rb.outcomes if o.status == "sent"}
        deferred = [o for o in ra.outcomes + rb.outcomes if o.status == "deferred"]
        assert sent_a.isdisjoint(sent_b)
        assert all("vendor:aimsio is already running" in (o.detail or "") for o in deferred)
        assert len(sent_a | sent_b) + len(deferred) == 200
        clock.now += timedelta(minutes=1)  # deferred rows fall due again
        rest = await push_once(b)
    sent = sent_a | sent_b | {o.record_key for o in rest.outcomes if o.status == "sent"}
    assert len(sent) == 200
    assert await statuses(engine) == {"sent": 200}
    assert len(await vendor_get(sb, "User")) == 10 + 200


async def test_rows_for_a_disabled_vendor_wait_instead_of_dying(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    await enqueue_rows(engine, rows([user(1)]))
    settings = aimsio_settings(db_url, sb.base_url)
    settings.vendors["aimsio"].enabled = False
    clock = Clock()
    async with Runtime(settings, db=engine, clock=clock) as rt:
        report = await push_once(rt)
    assert [o.status for o in report.outcomes] == ["deferred"]
    t = push_outbox.c
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t.status, t.attempts))).one()
    assert (row.status, row.attempts) == ("pending", 0)
    assert (await control(sb, "stats"))["requests"] == 0

    settings.vendors["aimsio"].enabled = True
    clock.now += timedelta(minutes=1)
    async with Runtime(settings, db=engine, clock=clock) as rt:
        report = await push_once(rt)
    assert [o.status for o in report.outcomes] == ["sent"]


async def vendor_user(sb: Any, user_name: str) -> dict[str, Any]:
    """The vendor's copy of one user (newest first: pushed users are listed last)."""
    for stub in reversed(await vendor_get(sb, "User")):
        row = await vendor_get(sb, f"User/{stub['guid']}")
        if row.get("userName") == user_name:
            return dict(row)
    raise AssertionError(f"the vendor has no user {user_name}")


async def test_older_row_in_backoff_never_overwrites_a_newer_one(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    clock = Clock()
    settings = aimsio_settings(
        db_url, sb.base_url, retry={"max_attempts": 1}, push={"backoff_base_s": 60}
    )
    older, newer = user(1, userPhone="555-0001"), user(1, userPhone="555-0002")
    async with Runtime(settings, db=engine, clock=clock) as rt:
        await enqueue_rows(engine, rows([older]))
        clock.now = datetime.now(UTC)
        await control(sb, "faults", {"error_rate": 1.0, "error_status": 503})
        assert [o.status for o in (await push_once(rt)).outcomes] == ["retry"]
        await control(sb, "faults", {"error_rate": 0.0})
        await enqueue_rows(engine, rows([newer]))
        clock.now = datetime.now(UTC)  # the older row still backs off (>= 30 s)
        first = await push_once(rt)
        clock.now += timedelta(hours=1)  # the older row's backoff is over
        second = await push_once(rt)
    assert [o.status for o in first.outcomes] == ["sent"]
    assert second.outcomes == []
    assert await statuses(engine) == {"superseded": 1, "sent": 1}
    assert (await vendor_user(sb, newer["userName"]))["userPhone"] == "555-0002"


async def test_a_payload_sent_before_is_sent_again_after_another_one(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    a, b = user(1, userPhone="555-000A"), user(1, userPhone="555-000B")
    async with Runtime(settings, db=engine) as rt:
        for payload in (a, b, a):
            assert await enqueue_rows(engine, rows([payload])) == 1
            assert [o.status for o in (await push_once(rt)).outcomes] == ["sent"]
    assert (await vendor_user(sb, a["userName"]))["userPhone"] == "555-000A"


def party_rule() -> FieldMap:
    return FieldMap(
        source_vendor="imis",
        source_stream="Party",
        target_vendor="aimsio",
        entity="User",
        key_field="userName",
        fields={
            "userName": "Email",
            "userFirstName": "FirstName",
            "userLastName": "LastName",
            "userRoleNames": "=[Field Worker]",
            "userIsActive": "=true",
        },
    )


async def stage_party(engine: AsyncEngine, last_name: str) -> None:
    party = {"Email": "ada@example.org", "FirstName": "Ada", "LastName": last_name}
    async with engine.begin() as conn:
        await upsert_records(
            conn, "imis", "Party", [Record("Party", "1", party)], run_id=None, now=datetime.now(UTC)
        )


async def test_mapping_rule_sends_a_reverted_value_again(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    settings.push.mappings = [party_rule()]
    async with Runtime(settings, db=engine) as rt:
        for last_name in ("Lovelace", "King", "Lovelace"):
            await stage_party(engine, last_name)
            report = await push_once(rt)
            assert report.enqueued_by_mappings == 1
            assert [o.status for o in report.outcomes] == ["sent"]
        assert (await push_once(rt)).enqueued_by_mappings == 0
    assert (await vendor_user(sb, "ada@example.org"))["userLastName"] == "Lovelace"


async def test_wrong_password_pauses_the_vendor_without_spending_attempts(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    await enqueue_rows(engine, rows([user(i) for i in range(5)]))
    settings = aimsio_settings(db_url, sb.base_url, push={"batch_size": 2})
    settings.vendors["aimsio"].auth.password = SecretStr("wrong")  # type: ignore[assignment]
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt)
    assert {o.status for o in report.outcomes} == {"paused"}
    assert len(report.outcomes) == 2  # one batch tried, then the vendor is left alone
    assert "aimsio" in report.auth_failures
    assert report.exit_code == 1
    assert "authentication failed" in (report.problem() or "")
    t = push_outbox.c
    async with engine.connect() as conn:
        left = (await conn.execute(sa.select(t.status, t.attempts))).all()
    assert {(r.status, r.attempts) for r in left} == {("pending", 0)}

    fixed = aimsio_settings(db_url, sb.base_url)
    async with Runtime(fixed, db=engine) as rt:
        report = await push_once(rt)
    assert [o.status for o in report.outcomes] == ["sent"] * 5
    assert report.exit_code == 0


async def _broken_push(self: Any, entity: str, batch: Any) -> Any:
    raise RuntimeError("a bug in the connector")


def _broken_validation(self: Any, entity: str, payload: Any) -> Any:
    raise KeyError("a bug in validation")


@pytest.mark.parametrize(
    ("method", "broken"),
    [("push", _broken_push), ("validate_push_row", _broken_validation)],
)
async def test_an_unexpected_exception_never_dead_letters(
    engine: AsyncEngine,
    db_url: str,
    aimsio_sandbox: StartAimsio,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    broken: Any,
) -> None:
    sb = await aimsio_sandbox(records=10)
    await enqueue_rows(engine, rows([user(1), user(2)]))
    settings = aimsio_settings(db_url, sb.base_url, push={"max_attempts": 2})
    monkeypatch.setattr(AimsioConnector, method, broken)
    clock = Clock()
    async with Runtime(settings, db=engine, clock=clock) as rt:
        for _ in range(3):  # more rounds than max_attempts
            report = await push_once(rt, rng=random.Random(1))
            assert [o.status for o in report.outcomes] == ["error", "error"]
            assert report.bugs == 1
            assert report.exit_code == 1
            clock.now += timedelta(days=1)
        t = push_outbox.c
        async with engine.connect() as conn:
            left = (await conn.execute(sa.select(t.status, t.attempts, t.next_attempt_at))).all()
        assert {(r.status, r.attempts) for r in left} == {("pending", 3)}
        assert all(r.next_attempt_at > clock.now - timedelta(days=1) for r in left)
        monkeypatch.undo()
        report = await push_once(rt)
    assert [o.status for o in report.outcomes] == ["sent", "sent"]


async def test_outcomes_are_settled_in_bulk(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    await enqueue_rows(engine, rows([user(i) for i in range(100)]))
    settings = aimsio_settings(db_url, sb.base_url, push={"batch_size": 100})
    updates: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE PUSH_OUTBOX"):
            updates.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with Runtime(settings, db=engine) as rt:
            report = await push_once(rt)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert [o.status for o in report.outcomes] == ["sent"] * 100
    assert len(updates) <= 8, updates  # claims, supersede checks, one settle: not 100


async def test_dry_run_writes_nothing_and_shows_what_mappings_would_enqueue(
    engine: AsyncEngine, db_url: str, aimsio_sandbox: StartAimsio
) -> None:
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    settings.push.mappings = [party_rule()]
    await stage_party(engine, "Lovelace")
    await enqueue_rows(engine, rows([user(1, userPhone="1")]))
    await enqueue_rows(engine, rows([user(1, userPhone="2")]))
    async with engine.begin() as conn:  # a row inserted by plain SQL, without a hash
        await conn.execute(
            sa.insert(push_outbox).values(
                vendor="aimsio", entity="User", record_key="sql@x", payload=user(9)
            )
        )
    writes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with Runtime(settings, db=engine) as rt:
            report = await push_once(rt, dry_run=True)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert writes == []
    kinds = sorted((o.record_key, str(o.status)) for o in report.outcomes)
    assert kinds == [
        ("ada@example.org", "would-enqueue"),
        (user(1)["userName"], "would-send"),
        ("sql@x", "would-send"),
    ]
    assert report.enqueued_by_mappings == 1
    assert (await control(sb, "stats"))["requests"] == 0
