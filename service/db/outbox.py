"""The push outbox: rows waiting to be sent to a vendor, and their outcomes.

Statuses: ``pending`` → (claimed, ``sending``) → ``sent`` | ``rejected`` | ``dead``, or
``pending`` again with a later ``next_attempt_at`` after a transient failure; ``skipped``
when the payload equals the last one the vendor accepted for that key; ``invalid`` when
it failed local validation.

A claim is a per-row lease (``claimed_by``, ``claimed_until``) taken by one atomic
statement: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the single UPDATE runs under
the database write lock. A worker that dies leaves its claims to expire and be retaken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.tables import push_outbox
from service.models import JSON, payload_hash

PENDING, SENDING, SENT = "pending", "sending", "sent"
REJECTED, DEAD, SKIPPED, INVALID = "rejected", "dead", "skipped", "invalid"
FINAL = (SENT, REJECTED, DEAD, SKIPPED, INVALID)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    vendor: str
    entity: str
    record_key: str
    payload: JSON
    payload_hash: str
    attempts: int


async def enqueue(
    conn: AsyncConnection,
    vendor: str,
    entity: str,
    rows: Sequence[tuple[str, JSON]],
    *,
    now: datetime,
    dedupe: bool = True,
) -> int:
    """Add rows; with ``dedupe``, a row equal to any earlier row for its key is not added.

    Equal means the same payload hash, whatever that row's fate: a payload already sent
    needs no resend, and one already rejected would only be rejected again.
    """
    if not rows:
        return 0
    values = [
        {
            "vendor": vendor,
            "entity": entity,
            "record_key": key,
            "payload": payload,
            "payload_hash": payload_hash(payload),
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for key, payload in rows
    ]
    if dedupe:
        known = await _known_hashes(conn, vendor, entity, [key for key, _ in rows])
        values = [v for v in values if (v["record_key"], v["payload_hash"]) not in known]
    if values:
        await conn.execute(sa.insert(push_outbox), values)
    return len(values)


async def _known_hashes(
    conn: AsyncConnection, vendor: str, entity: str, keys: list[str]
) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    t = push_outbox.c
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        q = sa.select(t.record_key, t.payload_hash).where(
            t.vendor == vendor,
            t.entity == entity,
            t.record_key.in_(chunk),
        )
        out.update((r.record_key, r.payload_hash) for r in await conn.execute(q))
    return out


async def fill_missing_hashes(conn: AsyncConnection) -> int:
    """Rows inserted by plain SQL may lack a hash or due time; complete them."""
    t = push_outbox.c
    rows = (
        await conn.execute(
            sa.select(t.id, t.payload).where(t.status == PENDING, t.payload_hash.is_(None))
        )
    ).all()
    for row in rows:
        await conn.execute(
            sa.update(push_outbox)
            .where(t.id == row.id)
            .values(payload_hash=payload_hash(row.payload))
        )
    return len(rows)


def _claimable(now: datetime) -> Any:
    t = push_outbox.c
    due = sa.or_(t.next_attempt_at.is_(None), t.next_attempt_at <= now)
    return sa.or_(
        sa.and_(t.status == PENDING, due),
        sa.and_(t.status == SENDING, t.claimed_until < now),  # a dead worker's claim
    )


async def claim(
    conn: AsyncConnection,
    owner: str,
    *,
    now: datetime,
    claim_ttl_s: float,
    limit: int,
    vendor: str | None = None,
    entity: str | None = None,
) -> list[OutboxRow]:
    """Claim up to ``limit`` due rows (oldest first) in one atomic statement."""
    t = push_outbox.c
    pick = sa.select(t.id).where(_claimable(now)).order_by(t.id).limit(limit)
    if vendor is not None:
        pick = pick.where(t.vendor == vendor)
    if entity is not None:
        pick = pick.where(t.entity == entity)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(push_outbox)
        .where(t.id.in_(pick.scalar_subquery()))
        .values(
            status=SENDING,
            claimed_by=owner,
            claimed_until=now + timedelta(seconds=claim_ttl_s),
        )
        .returning(t.id, t.vendor, t.entity, t.record_key, t.payload, t.payload_hash, t.attempts)
    )
    rows = (await conn.execute(stmt)).all()
    return sorted(
        (
            OutboxRow(
                r.id,
                r.vendor,
                r.entity,
                r.record_key,
                r.payload,
                r.payload_hash or payload_hash(r.payload),
                r.attempts,
            )
            for r in rows
        ),
        key=lambda r: r.id,
    )


async def last_accepted_hashes(
    conn: AsyncConnection, vendor: str, entity: str, keys: Sequence[str]
) -> dict[str, str]:
    """Key → payload hash of the most recent row the vendor accepted."""
    t = push_outbox.c
    out: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        q = (
            sa.select(t.record_key, t.payload_hash)
            .where(
                t.vendor == vendor,
                t.entity == entity,
                t.status == SENT,
                t.record_key.in_(keys[i : i + 500]),
            )
            .order_by(t.id)
        )
        for r in await conn.execute(q):
            out[r.record_key] = r.payload_hash
    return out


async def settle(
    conn: AsyncConnection,
    row_id: int,
    owner: str,
    *,
    status: str,
    now: datetime,
    error: str | None = None,
    response: JSON | None = None,
    next_attempt_at: datetime | None = None,
    count_attempt: bool = True,
) -> bool:
    """Record a row's outcome, only if ``owner`` still holds its claim."""
    t = push_outbox.c
    values: dict[str, Any] = {
        "status": status,
        "last_error": error,
        "claimed_by": None,
        "claimed_until": None,
    }
    if count_attempt:
        values["attempts"] = t.attempts + 1
    if response is not None:
        values["response"] = response
    if status == SENT:
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = await conn.execute(
        sa.update(push_outbox)
        .where(t.id == row_id, t.claimed_by == owner, t.status == SENDING)
        .values(**values)
    )
    return bool(result.rowcount)


async def release_claims(conn: AsyncConnection, owner: str) -> int:
    """Hand back unsent claims (dry run, shutdown)."""
    t = push_outbox.c
    result = await conn.execute(
        sa.update(push_outbox)
        .where(t.claimed_by == owner, t.status == SENDING)
        .values(status=PENDING, claimed_by=None, claimed_until=None)
    )
    return int(result.rowcount)


async def outbox_summary(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Counts per (vendor, entity, status), for ``vendorsync status``."""
    t = push_outbox.c
    q = (
        sa.select(t.vendor, t.entity, t.status, sa.func.count().label("n"))
        .group_by(t.vendor, t.entity, t.status)
        .order_by(t.vendor, t.entity, t.status)
    )
    return [dict(r._mapping) for r in await conn.execute(q)]


async def recent_failures(conn: AsyncConnection, limit: int = 10) -> list[dict[str, Any]]:
    t = push_outbox.c
    q = (
        sa.select(t.id, t.vendor, t.entity, t.record_key, t.status, t.attempts, t.last_error)
        .where(t.status.in_((REJECTED, DEAD, INVALID)))
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in await conn.execute(q)]
