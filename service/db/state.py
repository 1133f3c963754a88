"""Stream checkpoints: saved in the same transaction as the batch they follow."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.dialect import upsert_insert
from service.db.engine import translate_db_errors
from service.db.tables import require_aware, stream_state
from service.models import JSON

t = stream_state


@translate_db_errors()
async def load_state(conn: AsyncConnection, vendor: str, stream: str) -> JSON | None:
    """The stream's saved checkpoint, or None before its first committed batch."""
    result = await conn.execute(
        sa.select(t.c.state).where(t.c.vendor == vendor, t.c.stream == stream)
    )
    state = result.scalar_one_or_none()
    return dict(state) if state is not None else None


@translate_db_errors()
async def save_state(
    conn: AsyncConnection, vendor: str, stream: str, state: JSON, *, now: datetime
) -> None:
    """Replace the stream's checkpoint (call inside the batch's transaction)."""
    stmt = upsert_insert(conn, t).values(
        vendor=vendor, stream=stream, state=state, updated_at=require_aware(now)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.vendor, t.c.stream],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
    )
    await conn.execute(stmt)
