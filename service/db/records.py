"""Staged records: batched upserts that count exactly, soft deletes, and reads.

Only the sync engine writes here. A row whose payload hash is unchanged is never
rewritten (its ``synced_at``, ``cursor`` and ``last_run_id`` stay as they were), so a
re-run over unchanged data updates no row.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.dialect import is_postgres
from service.db.engine import translate_db_errors
from service.db.tables import UTCDateTime, require_aware, staged_record
from service.models import JSON, Record, UpsertCounts, canonical_json

BATCH_ROWS = 1000
"""Rows per statement: bounded memory and parameter counts on both databases."""

PreparedRow = tuple[str, str | None, str, str]
"""(record_key, cursor, canonical payload JSON, payload hash)"""

t = staged_record


def prepare_rows(records: Iterable[Record]) -> list[PreparedRow]:
    """Serialise once; a key repeated in one batch keeps its last record."""
    latest: dict[str, Record] = {}
    for record in records:
        latest[record.key] = record
    rows: list[PreparedRow] = []
    for record in latest.values():
        text = canonical_json(record.payload)
        # Same digest as service.models.payload_hash, without serialising twice.
        rows.append((record.key, record.cursor, text, hashlib.sha256(text.encode()).hexdigest()))
    return rows


def _chunks(items: Sequence[Any], size: int = BATCH_ROWS) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- PostgreSQL: one statement per chunk, exact counts from RETURNING (xmax = 0) ---------

_PG_UPSERT = sa.text(
    """
    INSERT INTO staged_record (vendor, stream, record_key, cursor, payload, payload_hash,
                               first_seen_at, synced_at, deleted_at, last_run_id)
    SELECT CAST(:vendor AS VARCHAR), CAST(:stream AS VARCHAR), u.k, u.c, CAST(u.p AS JSONB),
           u.h, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ), NULL,
           CAST(:run_id AS BIGINT)
    FROM unnest(CAST(:keys AS TEXT[]), CAST(:cursors AS TEXT[]),
                CAST(:payloads AS TEXT[]), CAST(:hashes AS TEXT[])) AS u(k, c, p, h)
    ON CONFLICT (vendor, stream, record_key) DO UPDATE SET
        cursor = excluded.cursor,
        payload = excluded.payload,
        payload_hash = excluded.payload_hash,
        synced_at = excluded.synced_at,
        deleted_at = NULL,
        last_run_id = excluded.last_run_id
    WHERE staged_record.payload_hash IS DISTINCT FROM excluded.payload_hash
       OR staged_record.deleted_at IS NOT NULL
    RETURNING (xmax = 0) AS inserted
    """
).bindparams(sa.bindparam("now", type_=UTCDateTime()))


async def _upsert_pg(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    rows: Sequence[PreparedRow],
    run_id: int | None,
    now: datetime,
) -> UpsertCounts:
    keys, cursors, payloads, hashes = (list(col) for col in zip(*rows, strict=True))
    result = await conn.execute(
        _PG_UPSERT,
        {
            "vendor": vendor,
            "stream": stream,
            "now": now,
            "run_id": run_id,
            "keys": keys,
            "cursors": cursors,
            "payloads": payloads,
            "hashes": hashes,
        },
    )
    flags = result.scalars().all()
    inserted = sum(1 for f in flags if f)
    return UpsertCounts(
        inserted=inserted, updated=len(flags) - inserted, unchanged=len(rows) - len(flags)
    )


# --- SQLite: insert-new (RETURNING), then compare hashes under the write lock ------------
#
# SQLite's RETURNING cannot tell an inserted row from an updated one. The first INSERT takes
# the database write lock, so the hash comparison that follows sees exactly what the update
# will change: counts are exact even with other writers waiting.


@functools.lru_cache(maxsize=16)
def _sqlite_insert_new_sql(n_rows: int) -> str:
    # ?1..?4 are shared by every row (vendor, stream, now, run_id); each row adds four.
    values = ", ".join(
        f"(?1, ?2, ?{5 + 4 * i}, ?{6 + 4 * i}, ?{7 + 4 * i}, ?{8 + 4 * i}, ?3, ?3, ?4)"
        for i in range(n_rows)
    )
    return (
        "INSERT INTO staged_record (vendor, stream, record_key, cursor, payload, payload_hash,"
        f" first_seen_at, synced_at, last_run_id) VALUES {values}"
        " ON CONFLICT (vendor, stream, record_key) DO NOTHING RETURNING record_key"
    )


_SQLITE_EXISTING = (
    "SELECT record_key, payload_hash, deleted_at IS NOT NULL FROM staged_record"
    " WHERE vendor = ? AND stream = ? AND record_key IN (SELECT value FROM json_each(?))"
)
_SQLITE_UPDATE_CHANGED = (
    "UPDATE staged_record SET cursor = ?, payload = ?, payload_hash = ?, synced_at = ?,"
    " deleted_at = NULL, last_run_id = ? WHERE vendor = ? AND stream = ? AND record_key = ?"
)


async def _upsert_sqlite(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    rows: Sequence[PreparedRow],
    run_id: int | None,
    now: datetime,
) -> UpsertCounts:
    # Driver-level SQL: Core's per-row parameter processing cost more than SQLite's work.
    to_db_time = UTCDateTime().bind_processor(conn.dialect)
    db_now = to_db_time(now) if to_db_time else now
    params: list[Any] = [vendor, stream, db_now, run_id]
    for row in rows:
        params.extend(row)
    result = await conn.exec_driver_sql(_sqlite_insert_new_sql(len(rows)), tuple(params))
    inserted = {key for (key,) in result}
    rest = [row for row in rows if row[0] not in inserted]
    changed: list[tuple[Any, ...]] = []
    if rest:
        result = await conn.exec_driver_sql(
            _SQLITE_EXISTING, (vendor, stream, json.dumps([row[0] for row in rest]))
        )
        found: Sequence[Any] = result.all()
        old = {r[0]: (r[1], bool(r[2])) for r in found}
        for key, cursor, payload, digest in rest:
            old_digest, deleted = old[key]
            if digest != old_digest or deleted:
                changed.append((cursor, payload, digest, db_now, run_id, vendor, stream, key))
        if changed:
            await conn.exec_driver_sql(_SQLITE_UPDATE_CHANGED, changed)
    return UpsertCounts(
        inserted=len(inserted), updated=len(changed), unchanged=len(rest) - len(changed)
    )


@translate_db_errors()
async def upsert_records(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    records: Sequence[Record],
    *,
    run_id: int | None,
    now: datetime,
) -> UpsertCounts:
    """Insert new keys, update changed or soft-deleted ones, leave identical ones untouched.

    A key repeated within ``records`` counts once, with its last record. ``stream`` (not
    ``Record.stream``) decides where rows go. Runs inside the caller's transaction.
    """
    require_aware(now)
    rows = prepare_rows(records)
    upsert = _upsert_pg if is_postgres(conn) else _upsert_sqlite
    counts = UpsertCounts()
    for chunk in _chunks(rows):
        counts.add(await upsert(conn, vendor, stream, chunk, run_id, now))
    return counts


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
    for chunk in _chunks(keys):
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
