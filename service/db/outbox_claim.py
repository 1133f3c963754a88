"""Sending side of the push outbox: claim due rows, check them, record their outcomes.

See ``service.db.outbox`` for the statuses and the newest-write-wins rule.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.outbox import (
    PENDING,
    SENDING,
    SENT,
    SUPERSEDED,
    OutboxRow,
    Settlement,
    chunks,
    newer_exists,
    same_key,
    supersede,
)
from service.db.tables import push_outbox
from service.models import canonical_json, payload_hash

# --- claim ----------------------------------------------------------------------------------


def _due(row: Any, now: datetime) -> Any:
    due = sa.or_(row.next_attempt_at.is_(None), row.next_attempt_at <= now)
    return sa.or_(
        sa.and_(row.status == PENDING, due),
        sa.and_(row.status == SENDING, row.claimed_until < now),  # a dead worker's claim
    )


def _key_in_flight(row: Any, now: datetime) -> Any:
    other = push_outbox.alias("other")
    return sa.exists().where(
        same_key(other.c, row),
        other.c.id != row.id,
        other.c.status == SENDING,
        other.c.claimed_until >= now,
    )


def _to_row(r: Any, superseded: bool = False) -> OutboxRow:
    return OutboxRow(
        r.id,
        r.vendor,
        r.entity,
        r.record_key,
        r.payload,
        r.payload_hash or payload_hash(r.payload),
        r.attempts,
        superseded,
    )


@translate_db_errors()
async def claim(
    conn: AsyncConnection,
    owner: str,
    *,
    now: datetime,
    claim_ttl_s: float,
    limit: int,
    vendor: str | None = None,
    entity: str | None = None,
    skip_vendors: Collection[str] = (),
) -> list[OutboxRow]:
    """Supersede stale rows, then claim up to ``limit`` due rows (oldest first) in one
    atomic statement: only a key's newest row, and never a key already in flight."""
    await supersede(conn, now, vendor=vendor, entity=entity)
    t = push_outbox.c
    cand = push_outbox.alias("cand")
    c = cand.c
    pick = (
        sa.select(c.id)
        .where(_due(c, now), ~newer_exists(c), ~_key_in_flight(c, now))
        .order_by(c.id)
        .limit(limit)
    )
    if vendor is not None:
        pick = pick.where(c.vendor == vendor)
    if entity is not None:
        pick = pick.where(c.entity == entity)
    if skip_vendors:
        pick = pick.where(c.vendor.not_in(list(skip_vendors)))
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
    return sorted((_to_row(r) for r in rows), key=lambda r: r.id)


@translate_db_errors()
async def due_rows(
    conn: AsyncConnection,
    *,
    now: datetime,
    after_id: int,
    limit: int,
    vendor: str | None = None,
) -> list[OutboxRow]:
    """Read-only view of what ``claim`` would take (for a dry run), oldest first after
    ``after_id``; rows a newer row would supersede come with ``superseded`` set."""
    c = push_outbox.alias("cand").c
    q = (
        sa.select(
            c.id,
            c.vendor,
            c.entity,
            c.record_key,
            c.payload,
            c.payload_hash,
            c.attempts,
            newer_exists(c).label("newer"),
        )
        .where(_due(c, now), c.id > after_id)
        .order_by(c.id)
        .limit(limit)
    )
    if vendor is not None:
        q = q.where(c.vendor == vendor)
    return [_to_row(r, bool(r.newer)) for r in await conn.execute(q)]


@translate_db_errors()
async def supersede_claimed(conn: AsyncConnection, owner: str, ids: Sequence[int]) -> set[int]:
    """Just before sending: which of our claimed rows now have a newer row (marked so)."""
    t = push_outbox.c
    out: set[int] = set()
    for chunk in chunks(ids):
        result = await conn.execute(
            sa.update(push_outbox)
            .where(
                t.id.in_(chunk),
                t.claimed_by == owner,
                t.status == SENDING,
                newer_exists(t),
            )
            .values(status=SUPERSEDED, claimed_by=None, claimed_until=None)
            .returning(t.id)
        )
        out.update(r.id for r in result)
    return out


# --- settle ---------------------------------------------------------------------------------


@translate_db_errors()
async def settle(
    conn: AsyncConnection,
    owner: str,
    items: Sequence[tuple[int, Settlement]],
    *,
    now: datetime,
) -> int:
    """Record outcomes, one UPDATE per group of equal settlements, only for rows ``owner``
    still holds a claim on. Returns how many rows were updated."""
    groups: dict[tuple[Any, ...], tuple[Settlement, list[int]]] = {}
    for row_id, s in items:
        key = (
            s.status,
            s.error,
            None if s.response is None else canonical_json(s.response),
            s.next_attempt_at,
            s.count_attempt,
        )
        groups.setdefault(key, (s, []))[1].append(row_id)
    t = push_outbox.c
    updated = 0
    for s, ids in groups.values():
        values: dict[str, Any] = {
            "status": s.status,
            "last_error": s.error,
            "claimed_by": None,
            "claimed_until": None,
        }
        if s.count_attempt:
            values["attempts"] = t.attempts + 1
        if s.response is not None:
            values["response"] = s.response
        if s.status == SENT:
            values["sent_at"] = now
        if s.next_attempt_at is not None:
            values["next_attempt_at"] = s.next_attempt_at
        for chunk in chunks(ids):
            result = await conn.execute(
                sa.update(push_outbox)
                .where(t.id.in_(chunk), t.claimed_by == owner, t.status == SENDING)
                .values(**values)
            )
            updated += int(result.rowcount)
    return updated


@translate_db_errors()
async def release_claims(conn: AsyncConnection, owner: str) -> int:
    """Hand back unsent claims (shutdown)."""
    t = push_outbox.c
    result = await conn.execute(
        sa.update(push_outbox)
        .where(t.claimed_by == owner, t.status == SENDING)
        .values(status=PENDING, claimed_by=None, claimed_until=None)
    )
    return int(result.rowcount)
