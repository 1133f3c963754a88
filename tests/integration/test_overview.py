"""Freshness, dead letters and requeue on SQLite and PostgreSQL (the data behind
``vendorsync status`` and the daemon's status page)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db.overview import dead_letters, outbox_backlog, requeue_dead_letter
from service.db.tables import lease, push_outbox, sync_run
from service.engine.freshness import collect_freshness

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def settings() -> Settings:
    return Settings.model_validate(
        {
            "vendors": {
                "aimsio": {
                    "base_url": "http://127.0.0.1:9/aimsio",
                    "auth": {"kind": "basic", "username": "u", "password": "p"},
                    "schedule": "every 15m",
                    "streams": {"User": {}, "Employee": {}, "Customer": {}, "Invoice": {}},
                }
            }
        }
    )


def run(stream: str, status: str, started_ago_min: float) -> dict[str, object]:
    started = NOW - timedelta(minutes=started_ago_min)
    return {
        "vendor": "aimsio",
        "stream": stream,
        "trigger": "schedule",
        "status": status,
        "started_at": started,
        "finished_at": started + timedelta(seconds=5),
    }


async def test_freshness_per_stream(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(sync_run),
            [
                run("User", "succeeded", 5),
                run("Employee", "succeeded", 60),  # 4 periods ago: late
                run("Customer", "succeeded", 10),
                run("Customer", "failed", 2),
            ],
        )
        await conn.execute(
            sa.insert(lease).values(
                name="vendor:aimsio",
                owner="host-a:123",
                acquired_at=NOW,
                heartbeat_at=NOW,
                expires_at=NOW + timedelta(seconds=60),
            )
        )
    async with engine.connect() as conn:
        found = {f.stream: f for f in await collect_freshness(conn, settings(), NOW)}
    assert {s: f.state for s, f in found.items()} == {
        "User": "fresh",
        "Employee": "late",
        "Customer": "failing",
        "Invoice": "never",
    }
    user = found["User"]
    assert user.lag_s == 5 * 60 - 5
    assert user.next_run_at == NOW + timedelta(minutes=10)
    assert user.holder == "host-a:123"
    assert found["Invoice"].next_run_at == NOW
    assert found["Invoice"].lag_s is None


async def test_dead_letters_and_requeue(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ids = []
        for status in ("dead", "pending", "sent"):
            res = await conn.execute(
                sa.insert(push_outbox)
                .values(
                    vendor="aimsio",
                    entity="User",
                    record_key=f"k-{status}",
                    payload={"a": 1},
                    status=status,
                    attempts=5,
                    last_error="HTTP 500 after 5 attempts",
                )
                .returning(push_outbox.c.id)
            )
            ids.append(res.scalar_one())
    async with engine.connect() as conn:
        (dead,) = await dead_letters(conn)
        assert dead["id"] == ids[0]
        assert dead["last_error"] == "HTTP 500 after 5 attempts"
        assert await outbox_backlog(conn) == 1
    async with engine.begin() as conn:
        assert await requeue_dead_letter(conn, ids[0], NOW)
        assert not await requeue_dead_letter(conn, ids[0], NOW)  # not dead any more
        assert not await requeue_dead_letter(conn, ids[2], NOW)  # sent rows stay sent
    async with engine.connect() as conn:
        assert await dead_letters(conn) == []
        assert await outbox_backlog(conn) == 2
        row = (await conn.execute(sa.select(push_outbox).where(push_outbox.c.id == ids[0]))).one()
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, NOW)
