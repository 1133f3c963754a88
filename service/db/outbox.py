"""The push outbox: rows waiting to be sent to a vendor, and their outcomes.

Statuses: ``pending`` → (claimed, ``sending``) → ``sent`` | ``rejected`` | ``dead``, or
``pending`` again with a later ``next_attempt_at`` after a transient failure; ``skipped``
when the payload equals the last one the vendor accepted for that key; ``invalid`` when
it failed local validation; ``superseded`` when a newer row exists for the same
(vendor, entity, record_key): per key only the newest enqueued payload is ever sent.

Superseding happens at enqueue, at claim (rows enqueued concurrently), and once more just
before a send under the vendor's lease, so an older row can never overtake a newer one.

A claim is a per-row lease (``claimed_by``, ``claimed_until``) taken by one atomic
statement: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the single UPDATE runs under
the database write lock. A worker that dies leaves its claims to expire and be retaken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.tables import push_outbox
from service.models import JSON, payload_hash

CHUNK = 500  # keys or ids per IN (...) list


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    REJECTED = "rejected"
    DEAD = "dead"
    SKIPPED = "skipped"
    INVALID = "invalid"
    SUPERSEDED = "superseded"


PENDING, SENDING, SENT = OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.SENT
REJECTED, DEAD, SKIPPED = OutboxStatus.REJECTED, OutboxStatus.DEAD, OutboxStatus.SKIPPED
INVALID, SUPERSEDED = OutboxStatus.INVALID, OutboxStatus.SUPERSEDED
FINAL = (SENT, REJECTED, DEAD, SKIPPED, INVALID, SUPERSEDED)
# A newest row in one of these with the same payload makes a re-enqueue a no-op: it is
# queued already, or was refused as it is (mapping rules would re-queue it every round).
_SAME_AS_NEWEST = (PENDING, SENDING, REJECTED, INVALID)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    vendor: str
    entity: str
    record_key: str
    payload: JSON
    payload_hash: str
    attempts: int
    superseded: bool = False  # a newer row exists (only set by ``due_rows``)


@dataclass(frozen=True, slots=True)
class Settlement:
    """One row's outcome to record; rows with equal settlements share one UPDATE."""

    status: OutboxStatus
    error: str | None = None
    response: JSON | None = None
    next_attempt_at: datetime | None = None
    count_attempt: bool = True


def chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def same_key(a: Any, b: Any) -> Any:
    return sa.and_(a.vendor == b.vendor, a.entity == b.entity, a.record_key == b.record_key)


def newer_exists(row: Any) -> Any:
    newer = push_outbox.alias("newer")
    return sa.exists().where(same_key(newer.c, row), newer.c.id > row.id)


def stale(row: Any, now: datetime) -> Any:
    """Waiting rows (or a dead worker's claims) that no one is sending right now."""
    return sa.or_(
        row.status == PENDING,
        sa.and_(row.status == SENDING, row.claimed_until < now),
    )


# --- enqueue --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Newest:
    status: str
    payload_hash: str | None


async def _newest_rows(
    conn: AsyncConnection, vendor: str, entity: str, keys: Sequence[str], *, sent_only: bool
) -> dict[str, _Newest]:
    """Key → its newest row (or newest sent row: the payload the vendor holds)."""
    inner = push_outbox.alias("inner")
    out: dict[str, _Newest] = {}
    t = push_outbox.c
    for chunk in chunks(keys):
        latest = sa.select(sa.func.max(inner.c.id)).where(
            inner.c.vendor == vendor,
            inner.c.entity == entity,
            inner.c.record_key.in_(chunk),
        )
        if sent_only:
            latest = latest.where(inner.c.status == SENT)
        q = sa.select(t.record_key, t.status, t.payload_hash).where(
            t.id.in_(latest.group_by(inner.c.record_key).scalar_subquery())
        )
        for r in await conn.execute(q):
            out[r.record_key] = _Newest(r.status, r.payload_hash)
    return out


@translate_db_errors()
async def plan_enqueue(
    conn: AsyncConnection,
    vendor: str,
    entity: str,
    rows: Sequence[tuple[str, JSON]],
    *,
    dedupe: bool = True,
) -> list[tuple[str, JSON]]:
    """The rows ``enqueue`` would add (read only): the last one per key, and with
    ``dedupe`` only if it differs from the payload that key is headed for.

    That is the newest row's payload while it is still pending (or was refused as is),
    else the last payload the vendor accepted. Older history does not count: after
    A, B, A the vendor must end with A again.
    """
    latest = dict(rows)  # the last payload given for a key wins
    if not dedupe or not latest:
        return list(latest.items())
    keys = list(latest)
    newest = await _newest_rows(conn, vendor, entity, keys, sent_only=False)
    accepted = await _newest_rows(conn, vendor, entity, keys, sent_only=True)
    out = []
    for key, payload in latest.items():
        h = payload_hash(payload)
        head = newest.get(key)
        if head is not None and head.payload_hash == h and head.status in _SAME_AS_NEWEST:
            continue
        if head is not None and head.status in (PENDING, SENDING):
            out.append((key, payload))  # another payload is queued: this one must follow it
            continue
        sent = accepted.get(key)
        if sent is None or sent.payload_hash != h:
            out.append((key, payload))
    return out


@translate_db_errors()
async def enqueue(
    conn: AsyncConnection,
    vendor: str,
    entity: str,
    rows: Sequence[tuple[str, JSON]],
    *,
    now: datetime,
    dedupe: bool = True,
) -> int:
    """Add rows (see ``plan_enqueue``) and supersede older waiting rows of their keys."""
    todo = await plan_enqueue(conn, vendor, entity, rows, dedupe=dedupe)
    if not todo:
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
        for key, payload in todo
    ]
    await conn.execute(sa.insert(push_outbox), values)
    for chunk in chunks([key for key, _ in todo]):
        await supersede(conn, now, vendor=vendor, entity=entity, keys=chunk)
    return len(values)


async def supersede(
    conn: AsyncConnection,
    now: datetime,
    *,
    vendor: str | None = None,
    entity: str | None = None,
    keys: Sequence[str] | None = None,
) -> int:
    """Mark waiting rows that have a newer row for their key ``superseded``.

    Rows another worker is claiming right now are skipped (SKIP LOCKED), not waited for:
    the pre-send check catches them.
    """
    cand = push_outbox.alias("cand")
    pick = sa.select(cand.c.id).where(stale(cand.c, now), newer_exists(cand.c))
    if vendor is not None:
        pick = pick.where(cand.c.vendor == vendor)
    if entity is not None:
        pick = pick.where(cand.c.entity == entity)
    if keys is not None:
        pick = pick.where(cand.c.record_key.in_(keys))
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    result = await conn.execute(
        sa.update(push_outbox)
        .where(push_outbox.c.id.in_(pick.scalar_subquery()))
        .values(status=SUPERSEDED, claimed_by=None, claimed_until=None)
    )
    return int(result.rowcount)


@translate_db_errors()
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


@translate_db_errors()
async def last_accepted_hashes(
    conn: AsyncConnection, vendor: str, entity: str, keys: Sequence[str]
) -> dict[str, str]:
    """Key → payload hash of the most recent row the vendor accepted."""
    newest = await _newest_rows(conn, vendor, entity, keys, sent_only=True)
    return {k: r.payload_hash for k, r in newest.items() if r.payload_hash is not None}


# --- status ---------------------------------------------------------------------------------


@translate_db_errors()
async def outbox_summary(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Counts per (vendor, entity, status), for ``vendorsync status``."""
    t = push_outbox.c
    q = (
        sa.select(t.vendor, t.entity, t.status, sa.func.count().label("n"))
        .group_by(t.vendor, t.entity, t.status)
        .order_by(t.vendor, t.entity, t.status)
    )
    return [dict(r._mapping) for r in await conn.execute(q)]


@translate_db_errors()
async def recent_failures(conn: AsyncConnection, limit: int = 10) -> list[dict[str, Any]]:
    t = push_outbox.c
    q = (
        sa.select(t.id, t.vendor, t.entity, t.record_key, t.status, t.attempts, t.last_error)
        .where(t.status.in_((REJECTED, DEAD, INVALID)))
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in await conn.execute(q)]
