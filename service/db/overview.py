"""Read-mostly queries for operators: last successes, lease holders, dead letters, requeue.

Used by ``vendorsync status`` and the daemon's status page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.outbox import DEAD, PENDING, SENDING
from service.db.tables import lease, push_outbox, require_aware, sync_run

SUCCEEDED = "succeeded"


@translate_db_errors()
async def last_successes(conn: AsyncConnection) -> dict[tuple[str, str], datetime]:
    """When each stream's last successful run finished."""
    r = sync_run.c
    q = (
        sa.select(r.vendor, r.stream, sa.func.max(r.finished_at).label("at"))
        .where(r.status == SUCCEEDED, r.finished_at.is_not(None))
        .group_by(r.vendor, r.stream)
    )
    # max() keeps the column's type, so the value comes back UTC-aware on both backends.
    return {(row.vendor, row.stream): row.at for row in await conn.execute(q)}


@translate_db_errors()
async def lease_holders(conn: AsyncConnection, now: datetime) -> dict[str, str]:
    """Live leases: name (``vendor:<id>``, ``stream:<id>:<stream>``) → owner."""
    q = sa.select(lease.c.name, lease.c.owner).where(lease.c.expires_at > require_aware(now))
    return {r.name: r.owner for r in await conn.execute(q)}


@translate_db_errors()
async def dead_letters(conn: AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead-lettered outbox rows with their last error."""
    t = push_outbox.c
    q = (
        sa.select(t.id, t.vendor, t.entity, t.record_key, t.attempts, t.last_error, t.created_at)
        .where(t.status == DEAD)
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in await conn.execute(q)]


@translate_db_errors()
async def outbox_backlog(conn: AsyncConnection) -> int:
    """Rows still to send (pending or being sent)."""
    t = push_outbox.c
    q = sa.select(sa.func.count()).where(t.status.in_((PENDING, SENDING)))
    return int((await conn.execute(q)).scalar_one())


@translate_db_errors()
async def requeue_dead_letter(conn: AsyncConnection, row_id: int, now: datetime) -> bool:
    """Make a dead row pending again with fresh attempts; False when it is not dead (gone,
    or requeued already). A newer row for the same key still supersedes it at send time."""
    t = push_outbox
    done = await conn.execute(
        sa.update(t)
        .where(t.c.id == row_id, t.c.status == DEAD)
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=require_aware(now),
            claimed_by=None,
            claimed_until=None,
        )
    )
    return bool(done.rowcount)


@translate_db_errors()
async def dead_letter_count(conn: AsyncConnection) -> int:
    q = sa.select(sa.func.count()).where(push_outbox.c.status == DEAD)
    return int((await conn.execute(q)).scalar_one())
