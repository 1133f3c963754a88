"""Staged records: soft deletes and reads (upserts live in ``service.db.upsert``).

Only the sync engine writes here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.tables import require_aware, staged_record
from service.models import JSON

BATCH_ROWS = 1000
"""Rows per statement: bounded memory and parameter counts on both databases."""

t = staged_record


def chunks(items: Sequence[Any], size: int = BATCH_ROWS) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- soft deletes -------------------------------------------------------------------------


async def _mark_deleted(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    keys: Sequence[str],
    *,
    run_id: int | None,
    now: datetime,
) -> int:
    values: dict[str, Any] = {"deleted_at": require_aware(now)}
    if run_id is not None:
        values["last_run_id"] = run_id
    deleted = 0
    for chunk in chunks(keys):
        result = await conn.execute(
            sa.update(t)
            .where(
                t.c.vendor == vendor,
                t.c.stream == stream,
                t.c.record_key.in_(list(chunk)),
                t.c.deleted_at.is_(None),
            )
            .values(values)
        )
        deleted += result.rowcount
    return deleted


@translate_db_errors()
async def soft_delete_missing(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    seen_keys: Collection[str],
    *,
    run_id: int | None,
    now: datetime,
) -> int:
    """After a full pass: mark every live row whose key is not in ``seen_keys`` deleted.

    Streams the stream's live keys and diffs them in memory, so cost is linear in the
    stream's size whatever the number of seen keys (no giant IN list, no planner surprises).
    """
    seen = seen_keys if isinstance(seen_keys, set | frozenset) else set(seen_keys)
    missing: list[str] = []
    result = await conn.stream(
        sa.select(t.c.record_key).where(
            t.c.vendor == vendor, t.c.stream == stream, t.c.deleted_at.is_(None)
        )
    )
    async for partition in result.scalars().partitions(10_000):
        missing.extend(key for key in partition if key not in seen)
    return await _mark_deleted(conn, vendor, stream, missing, run_id=run_id, now=now)


@translate_db_errors()
async def mark_seen(
    conn: AsyncConnection, vendor: str, stream: str, keys: Collection[str], *, run_id: int
) -> int:
    """Record that run ``run_id`` saw these keys (live or not); returns rows marked."""
    marked = 0
    for chunk in chunks(sorted(set(keys))):
        result = await conn.execute(
            sa.update(t)
            .where(
                t.c.vendor == vendor,
                t.c.stream == stream,
                t.c.record_key.in_(list(chunk)),
            )
            .values(seen_run_id=run_id)
        )
        marked += result.rowcount
    return marked


@translate_db_errors()
async def soft_delete_unseen(
    conn: AsyncConnection, vendor: str, stream: str, *, run_id: int, now: datetime
) -> int:
    """After a complete pass marked with ``mark_seen``: soft-delete every live row the run
    did not see, in one statement (no key set in memory, however large the stream)."""
    result = await conn.execute(
        sa.update(t)
        .where(
            t.c.vendor == vendor,
            t.c.stream == stream,
            t.c.deleted_at.is_(None),
            sa.or_(t.c.seen_run_id.is_(None), t.c.seen_run_id != run_id),
        )
        .values(deleted_at=require_aware(now), last_run_id=run_id)
    )
    return int(result.rowcount)


@translate_db_errors()
async def soft_delete_keys(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    keys: Collection[str],
    *,
    now: datetime,
    run_id: int | None = None,
) -> int:
    """Mark the given live keys deleted (the vendor reported them deleted); returns how many."""
    return await _mark_deleted(conn, vendor, stream, sorted(set(keys)), run_id=run_id, now=now)


# --- reads --------------------------------------------------------------------------------


def _live(vendor: str, stream: str) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.vendor == vendor, t.c.stream == stream, t.c.deleted_at.is_(None))


@translate_db_errors()
async def staged_cursors(conn: AsyncConnection, vendor: str, stream: str) -> dict[str, str | None]:
    """Key → cursor of every live row (what the connector compares a listing against)."""
    result = await conn.execute(sa.select(t.c.record_key, t.c.cursor).where(_live(vendor, stream)))
    return {key: cursor for key, cursor in result}


@translate_db_errors()
async def count_live(conn: AsyncConnection, vendor: str, stream: str) -> int:
    result = await conn.execute(
        sa.select(sa.func.count()).select_from(t).where(_live(vendor, stream))
    )
    return int(result.scalar_one())


@translate_db_errors()
async def fetch_live(conn: AsyncConnection, vendor: str, stream: str) -> dict[str, JSON]:
    """Key → payload of every live row (tests and the demo; not for large streams)."""
    result = await conn.execute(sa.select(t.c.record_key, t.c.payload).where(_live(vendor, stream)))
    return {key: payload for key, payload in result}
