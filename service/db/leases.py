"""Leases: which process drives a stream (or vendor) right now.

Acquiring is one atomic conditional upsert, so it is correct across processes on SQLite
(the statement holds the write lock) and across machines on PostgreSQL (ON CONFLICT
serialises contenders on the row). A dead holder's lease simply expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.dialect import upsert_insert
from service.db.engine import translate_db_errors
from service.db.tables import lease, require_aware
from service.errors import LeaseHeld

t = lease
_ATTEMPTS = 3  # the holder may release between our upsert and our look at who holds it


# A released lease stays as a row expiring at its last heartbeat; any other row is held,
# or lapsed (expired without a release: its holder died).
UNRELEASED = t.c.expires_at > t.c.heartbeat_at


@dataclass(frozen=True, slots=True)
class TakenOver:
    """A lease another owner held until ``expired_at``, that ``acquire_lease`` took.

    ``released``: given up (``release_lease``); else it lapsed, its holder having stopped
    renewing it (died, most likely).
    """

    owner: str
    expired_at: datetime
    released: bool = False


@translate_db_errors()
async def acquire_lease(
    conn: AsyncConnection, name: str, owner: str, *, ttl_s: float, now: datetime
) -> TakenOver | None:
    """Take ``name`` for ``owner`` until ``now + ttl_s``, or raise ``LeaseHeld``.

    Succeeds when the lease is free, expired, or already ours (then it is extended).
    Returns the lease of another owner it took over, released or lapsed (a vendor may still
    count that holder's last requests), else None.
    Commit promptly: on PostgreSQL the row stays locked until the transaction ends.
    """
    before = (
        await conn.execute(
            sa.select(t.c.owner, t.c.expires_at, t.c.heartbeat_at).where(t.c.name == name)
        )
    ).first()
    taken = (
        TakenOver(
            before.owner,
            require_aware(before.expires_at),
            released=before.heartbeat_at == before.expires_at,
        )
        if before is not None and before.owner != owner and before.expires_at < now
        else None
    )
    expires_at = require_aware(now) + timedelta(seconds=ttl_s)
    stmt = upsert_insert(conn, t).values(
        name=name, owner=owner, acquired_at=now, expires_at=expires_at, heartbeat_at=now
    )
    ours = t.c.owner == stmt.excluded.owner
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.name],
        set_={
            "owner": stmt.excluded.owner,
            "acquired_at": sa.case((ours, t.c.acquired_at), else_=stmt.excluded.acquired_at),
            "expires_at": stmt.excluded.expires_at,
            "heartbeat_at": stmt.excluded.heartbeat_at,
        },
        where=sa.or_(t.c.expires_at < now, t.c.owner == owner),
    ).returning(t.c.owner)
    for _ in range(_ATTEMPTS):
        if (await conn.execute(stmt)).first() is not None:
            return taken
        holder = (
            await conn.execute(
                sa.select(t.c.owner, t.c.acquired_at, t.c.expires_at).where(t.c.name == name)
            )
        ).first()
        if holder is not None:
            raise LeaseHeld(
                name,
                holder.owner,
                holder.acquired_at.isoformat(),
                holder.expires_at.isoformat(),
            )
    raise LeaseHeld(name, "unknown", now.isoformat())


@translate_db_errors()
async def renew_lease(
    conn: AsyncConnection, name: str, owner: str, *, ttl_s: float, now: datetime
) -> bool:
    """Heartbeat: extend our lease to ``now + ttl_s``. False when it is no longer ours."""
    result = await conn.execute(
        sa.update(t)
        .where(t.c.name == name, t.c.owner == owner, UNRELEASED)
        .values(expires_at=require_aware(now) + timedelta(seconds=ttl_s), heartbeat_at=now)
    )
    return result.rowcount == 1


@translate_db_errors()
async def release_lease(conn: AsyncConnection, name: str, owner: str, *, now: datetime) -> None:
    """Give the lease up (a no-op when it is not ours any more).

    The row stays as the record of the release: expired at ``now``, last heartbeat at
    ``now`` too (how a release differs from a lapse), so the next holder knows when the
    last one stopped. Held leases are the rows with ``expires_at`` in the future.
    """
    at = require_aware(now)
    await conn.execute(
        sa.update(t)
        .where(t.c.name == name, t.c.owner == owner)
        .values(expires_at=at, heartbeat_at=at)
    )


@translate_db_errors()
async def live_leases(
    conn: AsyncConnection, prefix: str, *, now: datetime
) -> dict[str, tuple[str, datetime]]:
    """Held leases (``expires_at`` in the future) whose name starts with ``prefix``:
    name → (owner, expires_at). Released and lapsed rows are not held."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await conn.execute(
        sa.select(t.c.name, t.c.owner, t.c.expires_at).where(
            t.c.name.like(f"{escaped}%", escape="\\"), t.c.expires_at > require_aware(now)
        )
    )
    return {r.name: (r.owner, r.expires_at) for r in rows}


@translate_db_errors()
async def renew_owned(
    conn: AsyncConnection, names: list[str], owner: str, *, ttl_s: float, now: datetime
) -> set[str]:
    """Heartbeat many leases in one statement; the names still ours (the rest were taken)."""
    if not names:
        return set()
    expires_at = require_aware(now) + timedelta(seconds=ttl_s)
    await conn.execute(
        sa.update(t)
        .where(t.c.name.in_(names), t.c.owner == owner, UNRELEASED)
        .values(expires_at=expires_at, heartbeat_at=now)
    )
    rows = await conn.execute(
        sa.select(t.c.name).where(t.c.name.in_(names), t.c.owner == owner, UNRELEASED)
    )
    return {r.name for r in rows}
