"""The push outbox store on SQLite and PostgreSQL: newest write wins, dedupe, claims, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.outbox import OutboxStatus, Settlement, enqueue, outbox_summary
from service.db.outbox_claim import claim, settle, supersede_claimed
from service.db.tables import push_outbox
from service.errors import StagingError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
t = push_outbox.c


def user(name: str, **extra: Any) -> dict[str, Any]:
    return {"userName": name, "userFirstName": "A", "userLastName": "B", **extra}


async def add(engine: AsyncEngine, *payloads: dict[str, Any], dedupe: bool = True) -> int:
    async with engine.begin() as conn:
        rows = [(p["userName"], p) for p in payloads]
        return await enqueue(conn, "aimsio", "User", rows, now=NOW, dedupe=dedupe)


async def table(engine: AsyncEngine) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        q = sa.select(t.id, t.record_key, t.status).order_by(t.id)
        return [tuple(r) for r in await conn.execute(q)]  # type: ignore[misc]


async def send_all(engine: AsyncEngine, owner: str = "w") -> list[int]:
    """Claim every due row and mark it accepted by the vendor."""
    async with engine.begin() as conn:
        rows = await claim(conn, owner, now=NOW, claim_ttl_s=60, limit=100)
        await settle(conn, owner, [(r.id, Settlement(OutboxStatus.SENT)) for r in rows], now=NOW)
    return [r.id for r in rows]


async def test_a_newer_enqueue_supersedes_older_waiting_rows(engine: AsyncEngine) -> None:
    assert await add(engine, user("k", v=1)) == 1
    assert await add(engine, user("k", v=2), user("other")) == 2
    assert [s for _, _, s in await table(engine)] == ["superseded", "pending", "pending"]
    # Within one call the last payload for a key wins; the earlier one is never queued.
    assert await add(engine, user("j", v=1), user("j", v=2)) == 1


async def test_claim_takes_only_the_newest_row_of_a_key(engine: AsyncEngine) -> None:
    # Plain SQL inserts (or concurrent enqueuers) bypass enqueue's superseding.
    async with engine.begin() as conn:
        for v in (1, 2, 3):
            await conn.execute(
                sa.insert(push_outbox).values(
                    vendor="aimsio",
                    entity="User",
                    record_key="k",
                    payload=user("k", v=v),
                    payload_hash=f"h{v}",
                    next_attempt_at=NOW,
                )
            )
        rows = await claim(conn, "w", now=NOW, claim_ttl_s=60, limit=10)
    assert [r.payload["v"] for r in rows] == [3]
    assert [s for _, _, s in await table(engine)] == ["superseded", "superseded", "sending"]


async def test_a_key_in_flight_is_not_claimed_twice_and_is_checked_before_sending(
    engine: AsyncEngine,
) -> None:
    await add(engine, user("k", v=1))
    async with engine.begin() as conn:
        first = await claim(conn, "a", now=NOW, claim_ttl_s=60, limit=10)
    await add(engine, user("k", v=2))  # arrives while worker a holds v=1
    async with engine.begin() as conn:
        # Worker b must not send v=2 while v=1 may still be on the wire.
        assert await claim(conn, "b", now=NOW, claim_ttl_s=60, limit=10) == []
        # Worker a, about to send, learns that v=1 was overtaken.
        assert await supersede_claimed(conn, "a", [first[0].id]) == {first[0].id}
        again = await claim(conn, "b", now=NOW, claim_ttl_s=60, limit=10)
    assert [r.payload["v"] for r in again] == [2]


async def test_dedupe_compares_with_the_accepted_payload_not_any_earlier_row(
    engine: AsyncEngine,
) -> None:
    a, b = user("k", v="A"), user("k", v="B")
    assert await add(engine, a) == 1
    await send_all(engine)
    assert await add(engine, a) == 0  # the vendor holds A already
    assert await add(engine, b) == 1
    await send_all(engine)
    assert await add(engine, a) == 1  # A again after B: must be sent again
    assert await add(engine, a) == 0  # identical to the newest row, still pending
    assert await add(engine, b) == 1  # B is what the vendor holds, but A is queued
    statuses = [s for _, _, s in await table(engine)]
    assert statuses == ["sent", "sent", "superseded", "pending"]


async def test_outbox_database_errors_are_translated(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE push_outbox"))
    async with engine.connect() as conn:
        with pytest.raises(StagingError):
            await claim(conn, "w", now=NOW, claim_ttl_s=60, limit=10)
    async with engine.connect() as conn:
        with pytest.raises(StagingError):
            await outbox_summary(conn)


async def test_expired_claim_of_an_overtaken_row_is_superseded(engine: AsyncEngine) -> None:
    await add(engine, user("k", v=1))
    async with engine.begin() as conn:
        await claim(conn, "dead-worker", now=NOW, claim_ttl_s=60, limit=10)
    await add(engine, user("k", v=2))
    later = NOW + timedelta(minutes=5)  # the dead worker's claim expired
    async with engine.begin() as conn:
        rows = await claim(conn, "w", now=later, claim_ttl_s=60, limit=10)
    assert [r.payload["v"] for r in rows] == [2]
    assert [s for _, _, s in await table(engine)] == ["superseded", "sending"]


async def test_concurrent_claims_take_each_keys_newest_row_once(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(push_outbox),
            [
                {
                    "vendor": "aimsio",
                    "entity": "User",
                    "record_key": f"k{k}",
                    "payload": user(f"k{k}", v=v),
                    "payload_hash": f"h{k}.{v}",
                    "next_attempt_at": NOW,
                }
                for v in (1, 2, 3)
                for k in range(40)
            ],
        )

    async def worker(owner: str) -> list[tuple[str, int]]:
        taken: list[tuple[str, int]] = []
        while True:
            async with engine.begin() as conn:
                rows = await claim(conn, owner, now=NOW, claim_ttl_s=60, limit=7)
            if not rows:
                return taken
            taken += [(r.record_key, r.payload["v"]) for r in rows]

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [row for taken in results for row in taken]
    assert sorted(claimed) == sorted((f"k{k}", 3) for k in range(40))
    statuses = {s for _, _, s in await table(engine)}
    assert statuses == {"superseded", "sending"}
