"""Sync runs (one row per run of one stream) and the per-stream status view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.tables import lease, require_aware, staged_record, stream_state, sync_run
from service.models import StreamStatus, UpsertCounts

RUNNING = "running"
ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class RunRow:
    """One ``sync_run`` row as plain data."""

    id: int
    vendor: str
    stream: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: UpsertCounts
    requests: int
    error: str | None
    owner: str | None = None
    full: bool = False
    note: str | None = None


@translate_db_errors()
async def start_run(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    trigger: str,
    *,
    now: datetime,
    owner: str | None = None,
    full: bool = False,
) -> int:
    """Record a run as ``running``; returns its id."""
    result = await conn.execute(
        sa.insert(sync_run)
        .values(
            vendor=vendor,
            stream=stream,
            trigger=trigger,
            started_at=require_aware(now),
            status=RUNNING,
            owner=owner,
            full=full,
        )
        .returning(sync_run.c.id)
    )
    return int(result.scalar_one())


@translate_db_errors()
async def finish_run(
    conn: AsyncConnection,
    run_id: int,
    *,
    status: str,
    counts: UpsertCounts,
    requests: int,
    error: str | None,
    now: datetime,
    note: str | None = None,
) -> None:
    await conn.execute(
        sa.update(sync_run)
        .where(sync_run.c.id == run_id)
        .values(
            status=status,
            finished_at=require_aware(now),
            inserted=counts.inserted,
            updated=counts.updated,
            unchanged=counts.unchanged,
            deleted=counts.deleted,
            invalid=counts.invalid,
            requests=requests,
            error=error,
            note=note,
        )
    )


def _run_row(row: sa.Row[tuple[object, ...]]) -> RunRow:
    m = row._mapping
    return RunRow(
        id=m["id"],
        vendor=m["vendor"],
        stream=m["stream"],
        trigger=m["trigger"],
        status=m["status"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        counts=UpsertCounts(
            inserted=m["inserted"],
            updated=m["updated"],
            unchanged=m["unchanged"],
            deleted=m["deleted"],
            invalid=m["invalid"],
        ),
        requests=m["requests"],
        error=m["error"],
        owner=m["owner"],
        full=bool(m["full"]),
        note=m["note"],
    )


@translate_db_errors()
async def recent_runs(conn: AsyncConnection, limit: int = 20) -> list[RunRow]:
    """The latest runs, newest first."""
    result = await conn.execute(sa.select(sync_run).order_by(sync_run.c.id.desc()).limit(limit))
    return [_run_row(row) for row in result]


@translate_db_errors()
async def stream_statuses(
    conn: AsyncConnection, *, now: datetime | None = None
) -> list[StreamStatus]:
    """One entry per (vendor, stream) that has a run or a checkpoint, sorted by name.

    ``last_run_rows`` is what the last run received: inserted + updated + unchanged. A
    last run still ``running`` whose owner holds no live lease on the stream is shown as
    ``abandoned``: its process died before it could finish it.
    """
    now = now or datetime.now(UTC)
    live_leases = {
        (r.name, r.owner)
        for r in await conn.execute(
            sa.select(lease.c.name, lease.c.owner).where(lease.c.expires_at > now)
        )
    }
    last_ids = (
        sa.select(sa.func.max(sync_run.c.id))
        .group_by(sync_run.c.vendor, sync_run.c.stream)
        .scalar_subquery()
    )
    last_runs = {
        (r.vendor, r.stream): _run_row(r)
        for r in await conn.execute(sa.select(sync_run).where(sync_run.c.id.in_(last_ids)))
    }
    states = {
        (r.vendor, r.stream): (r.state, r.updated_at)
        for r in await conn.execute(sa.select(stream_state))
    }
    sr = staged_record
    staged = {
        (r.vendor, r.stream): int(r.n)
        for r in await conn.execute(
            sa.select(sr.c.vendor, sr.c.stream, sa.func.count().label("n"))
            .where(sr.c.deleted_at.is_(None))
            .group_by(sr.c.vendor, sr.c.stream)
        )
    }
    statuses = []
    for key in sorted(last_runs.keys() | states.keys()):
        run = last_runs.get(key)
        state, state_updated_at = states.get(key, (None, None))
        statuses.append(
            StreamStatus(
                vendor=key[0],
                stream=key[1],
                state=dict(state) if state is not None else None,
                state_updated_at=state_updated_at,
                last_run_status=(
                    None
                    if run is None
                    else ABANDONED
                    if run.status == RUNNING
                    and (f"stream:{run.vendor}:{run.stream}", run.owner) not in live_leases
                    else run.status
                ),
                last_run_started_at=run.started_at if run else None,
                last_run_finished_at=run.finished_at if run else None,
                last_run_rows=(
                    run.counts.inserted + run.counts.updated + run.counts.unchanged if run else None
                ),
                last_error=run.error if run else None,
                staged_rows=staged.get(key, 0),
            )
        )
    return statuses


@translate_db_errors()
async def abandon_stale_runs(
    conn: AsyncConnection, vendor: str, stream: str, *, now: datetime
) -> int:
    """Mark the stream's ``running`` rows abandoned; call only while holding its lease.

    Holding the stream's lease proves no other process runs it, so such rows belong to a
    process that died (or lost its database) before it could finish them.
    """
    t = sync_run.c
    result = await conn.execute(
        sa.update(sync_run)
        .where(t.vendor == vendor, t.stream == stream, t.status == RUNNING)
        .values(
            status=ABANDONED,
            finished_at=require_aware(now),
            error=sa.func.coalesce(t.error, "abandoned: its process ended without finishing it"),
        )
    )
    return int(result.rowcount or 0)


@translate_db_errors()
async def last_full_run_at(conn: AsyncConnection, vendor: str, stream: str) -> datetime | None:
    """When the stream's latest successful full read started: a full run, else its first
    successful run (a first run reads everything). None when it never succeeded."""
    t = sync_run.c
    ok = sa.and_(t.vendor == vendor, t.stream == stream, t.status == "succeeded")
    q = sa.select(
        sa.func.max(sa.case((t.full.is_(True), t.started_at))), sa.func.min(t.started_at)
    ).where(ok)
    row = (await conn.execute(q)).one()
    last_full, first = row[0], row[1]
    value: datetime | None = last_full if last_full is not None else first
    if isinstance(value, str):  # SQLite loses the column type inside CASE
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value
