"""Batched upserts of staged records that count inserted / updated / unchanged exactly.

A row whose payload hash is unchanged is never rewritten (its ``synced_at``, ``cursor`` and
``last_run_id`` stay as they were), so a re-run over unchanged data updates no row. Each
dialect has its own path; both run inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from service.db.dialect import is_postgres
from service.db.engine import translate_db_errors
from service.db.records import chunks
from service.db.tables import UTCDateTime, require_aware, staged_record
from service.models import Record, UpsertCounts, canonical_json

PIPELINE_ROWS = 250
"""PostgreSQL rows per write: the next rows are serialised while these are written."""

_YIELD_ROWS = 50
"""While a statement is in flight, give the event loop a turn every this many rows."""

PreparedRow = tuple[str, str | None, str, str]
"""(record_key, cursor, canonical payload JSON, payload hash)"""

t = staged_record


def _latest(records: Iterable[Record]) -> list[Record]:
    """A key repeated in one batch keeps its last record (at its first position)."""
    latest: dict[str, Record] = {}
    for record in records:
        latest[record.key] = record
    return list(latest.values())


def _prepare_row(record: Record) -> PreparedRow:
    text = canonical_json(record.payload)
    return (record.key, record.cursor, text, hashlib.sha256(text.encode()).hexdigest())


def prepare_rows(records: Iterable[Record]) -> list[PreparedRow]:
    """Serialise once; a key repeated in one batch keeps its last record."""
    return [_prepare_row(record) for record in _latest(records)]


# --- PostgreSQL: lock and read existing rows, plain INSERT for new keys, pipelined -------
#
# 1. One statement locks the call's existing rows FOR UPDATE (the lock INSERT … ON CONFLICT
#    DO UPDATE takes on every conflicting row, changed or not) and reads their hashes.
# 2. New keys go in with a plain INSERT: ON CONFLICT's speculative insertion costs about a
#    third more server time per row. Changed or soft-deleted keys go through the ON CONFLICT
#    upsert (their rows are locked, so it updates exactly them); unchanged keys are left
#    alone. Counts come from the lock step's answer and the upsert's RETURNING (xmax = 0).
# 3. Serialising payloads (JSON + SHA-256) costs the client about as much as the server needs
#    to write them, so while one statement is in flight the next PIPELINE_ROWS rows are
#    serialised. Statements still run one at a time on the caller's connection and
#    transaction.
#
# A key that a concurrent transaction inserts after step 1 makes the plain INSERT fail with
# a unique violation. The writes therefore run under a savepoint; on that error it is rolled
# back and the call is redone with the ON CONFLICT upsert alone, which handles any race.

_PG_LOCK_EXISTING = sa.text(
    """
    SELECT u.k, x.payload_hash, x.deleted
    FROM unnest(CAST(:keys AS TEXT[])) AS u(k)
    CROSS JOIN LATERAL (
        SELECT s.payload_hash, s.deleted_at IS NOT NULL AS deleted
        FROM staged_record AS s
        WHERE s.vendor = CAST(:vendor AS VARCHAR) AND s.stream = CAST(:stream AS VARCHAR)
          AND s.record_key = u.k
        FOR UPDATE
    ) AS x
    """
)
# The LATERAL subquery (kept apart by its FOR UPDATE) makes every key one probe of the unique
# index, whatever the table's statistics say.

_PG_SELECT_ROWS = """
    SELECT CAST(:vendor AS VARCHAR), CAST(:stream AS VARCHAR), u.k, u.c, CAST(u.p AS JSONB),
           u.h, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ), NULL,
           CAST(:run_id AS BIGINT), CAST(:seen_run_id AS BIGINT)
    FROM unnest(CAST(:keys AS TEXT[]), CAST(:cursors AS TEXT[]),
                CAST(:payloads AS TEXT[]), CAST(:hashes AS TEXT[])) AS u(k, c, p, h)
"""
_PG_COLUMNS = """
    INSERT INTO staged_record (vendor, stream, record_key, cursor, payload, payload_hash,
                               first_seen_at, synced_at, deleted_at, last_run_id, seen_run_id)
"""

_PG_INSERT = sa.text(_PG_COLUMNS + _PG_SELECT_ROWS).bindparams(
    sa.bindparam("now", type_=UTCDateTime())
)

_PG_UPSERT = sa.text(
    "WITH written AS ("
    + _PG_COLUMNS
    + _PG_SELECT_ROWS
    + """
    ON CONFLICT (vendor, stream, record_key) DO UPDATE SET
        cursor = excluded.cursor,
        payload = excluded.payload,
        payload_hash = excluded.payload_hash,
        synced_at = excluded.synced_at,
        deleted_at = NULL,
        last_run_id = excluded.last_run_id,
        seen_run_id = COALESCE(excluded.seen_run_id, staged_record.seen_run_id)
    WHERE staged_record.payload_hash IS DISTINCT FROM excluded.payload_hash
       OR staged_record.deleted_at IS NOT NULL
    RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted), count(*) FROM written
    """
).bindparams(sa.bindparam("now", type_=UTCDateTime()))

# Rows a complete pass saw unchanged: marked seen without rewriting them.
_PG_MARK_SEEN = sa.text(
    """
    UPDATE staged_record SET seen_run_id = CAST(:seen_run_id AS BIGINT)
    WHERE vendor = CAST(:vendor AS VARCHAR) AND stream = CAST(:stream AS VARCHAR)
      AND record_key = ANY(CAST(:keys AS TEXT[]))
      AND seen_run_id IS DISTINCT FROM CAST(:seen_run_id AS BIGINT)
    """
)

_UNIQUE_VIOLATION = "23505"


class _PgUpsert:
    """One call's writes: the lock step, then plain inserts and upserts, one at a time."""

    def __init__(
        self,
        conn: AsyncConnection,
        vendor: str,
        stream: str,
        run_id: int | None,
        now: datetime,
        seen_run_id: int | None,
    ) -> None:
        self.conn = conn
        self.params: dict[str, Any] = {
            "vendor": vendor,
            "stream": stream,
            "run_id": run_id,
            "now": now,
            "seen_run_id": seen_run_id,
        }
        self.counts = UpsertCounts()
        self.existing: dict[str, tuple[str, bool]] = {}  # key → (payload hash, deleted)
        self.savepoint: AsyncTransaction | None = None

    def _rows(self, rows: Sequence[PreparedRow]) -> dict[str, Any]:
        keys, cursors, payloads, hashes = (list(col) for col in zip(*rows, strict=True))
        return {
            **self.params,
            "keys": keys,
            "cursors": cursors,
            "payloads": payloads,
            "hashes": hashes,
        }

    async def lock_existing(self, keys: Sequence[str]) -> None:
        for chunk in chunks(keys):
            result = await self.conn.execute(
                _PG_LOCK_EXISTING,
                {"vendor": self.params["vendor"], "stream": self.params["stream"], "keys": chunk},
            )
            self.existing.update((key, (digest, deleted)) for key, digest, deleted in result)
        if len(self.existing) < len(keys):  # some keys are new: plain inserts follow
            self.savepoint = await self.conn.begin_nested()

    async def upsert(self, rows: Sequence[PreparedRow]) -> None:
        """The ON CONFLICT statement: correct whatever exists, counted by RETURNING."""
        inserted, written = (await self.conn.execute(_PG_UPSERT, self._rows(rows))).one()
        self.counts.add(
            UpsertCounts(
                inserted=inserted, updated=written - inserted, unchanged=len(rows) - written
            )
        )

    async def write(self, rows: Sequence[PreparedRow]) -> None:
        new: list[PreparedRow] = []
        changed: list[PreparedRow] = []
        for row in rows:
            old = self.existing.get(row[0])
            if old is None:
                new.append(row)
            elif old[1] or old[0] != row[3]:
                changed.append(row)
        if new:
            await self.conn.execute(_PG_INSERT, self._rows(new))
        if changed:
            await self.upsert(changed)
        unchanged = len(rows) - len(new) - len(changed)
        if unchanged and self.params["seen_run_id"] is not None:
            written = {row[0] for row in new} | {row[0] for row in changed}
            await self.mark_seen([row[0] for row in rows if row[0] not in written])
        self.counts.add(UpsertCounts(inserted=len(new), unchanged=unchanged))

    async def mark_seen(self, keys: Sequence[str]) -> None:
        p = self.params
        await self.conn.execute(
            _PG_MARK_SEEN,
            {
                "vendor": p["vendor"],
                "stream": p["stream"],
                "seen_run_id": p["seen_run_id"],
                "keys": list(keys),
            },
        )

    async def run(self, records: Sequence[Record]) -> None:
        """Serialise each PIPELINE_ROWS rows while the previous statement is in flight."""
        step: asyncio.Future[None] | None = None
        try:
            step = asyncio.ensure_future(self.lock_existing([r.key for r in records]))
            for start in range(0, len(records), PIPELINE_ROWS):
                rows = []
                for n, record in enumerate(records[start : start + PIPELINE_ROWS], 1):
                    rows.append(_prepare_row(record))
                    if n % _YIELD_ROWS == 0:
                        await asyncio.sleep(0)  # the statement in flight may need the loop
                await step
                step = asyncio.ensure_future(self.write(rows))
                await asyncio.sleep(0)  # let it go out before serialising the next rows
            await step
        finally:
            # Serialising failed, or we were cancelled: never leave a statement behind.
            if step is not None:
                if not step.done():
                    step.cancel()
                    await asyncio.wait([step])
                if not step.cancelled():
                    step.exception()  # already raised, or superseded by ours


async def _upsert_pg(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    records: Sequence[Record],
    run_id: int | None,
    now: datetime,
    seen_run_id: int | None,
) -> UpsertCounts:
    job = _PgUpsert(conn, vendor, stream, run_id, now, seen_run_id)
    try:
        await job.run(records)
    except sa.exc.IntegrityError as exc:
        if job.savepoint is None or getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        # A concurrent transaction inserted one of our keys: redo it all with ON CONFLICT.
        await job.savepoint.rollback()
        job = _PgUpsert(conn, vendor, stream, run_id, now, seen_run_id)
        for chunk in chunks([_prepare_row(record) for record in records]):
            await job.upsert(chunk)
            if seen_run_id is not None:  # the unchanged rows too (written ones are skipped)
                await job.mark_seen([row[0] for row in chunk])
        return job.counts
    if job.savepoint is not None:
        await job.savepoint.commit()
    return job.counts


# --- SQLite: insert-new (RETURNING), then compare hashes under the write lock ------------
#
# SQLite's RETURNING cannot tell an inserted row from an updated one. The first INSERT takes
# the database write lock, so the hash comparison that follows sees exactly what the update
# will change: counts are exact even with other writers waiting.


@functools.lru_cache(maxsize=16)
def _sqlite_insert_new_sql(n_rows: int) -> str:
    # ?1..?5 are shared by every row (vendor, stream, now, run_id, seen_run_id); each row
    # adds four.
    values = ", ".join(
        f"(?1, ?2, ?{6 + 4 * i}, ?{7 + 4 * i}, ?{8 + 4 * i}, ?{9 + 4 * i}, ?3, ?3, ?4, ?5)"
        for i in range(n_rows)
    )
    return (
        "INSERT INTO staged_record (vendor, stream, record_key, cursor, payload, payload_hash,"
        f" first_seen_at, synced_at, last_run_id, seen_run_id) VALUES {values}"
        " ON CONFLICT (vendor, stream, record_key) DO NOTHING RETURNING record_key"
    )


_SQLITE_EXISTING = (
    "SELECT record_key, payload_hash, deleted_at IS NOT NULL FROM staged_record"
    " WHERE vendor = ? AND stream = ? AND record_key IN (SELECT value FROM json_each(?))"
)
_SQLITE_UPDATE_CHANGED = (
    "UPDATE staged_record SET cursor = ?, payload = ?, payload_hash = ?, synced_at = ?,"
    " deleted_at = NULL, last_run_id = ?, seen_run_id = COALESCE(?, seen_run_id)"
    " WHERE vendor = ? AND stream = ? AND record_key = ?"
)
_SQLITE_MARK_SEEN = (
    "UPDATE staged_record SET seen_run_id = ? WHERE vendor = ? AND stream = ?"
    " AND record_key IN (SELECT value FROM json_each(?)) AND seen_run_id IS NOT ?"
)


async def _upsert_sqlite(
    conn: AsyncConnection,
    vendor: str,
    stream: str,
    rows: Sequence[PreparedRow],
    run_id: int | None,
    now: datetime,
    seen_run_id: int | None,
) -> UpsertCounts:
    # Driver-level SQL: Core's per-row parameter processing cost more than SQLite's work.
    to_db_time = UTCDateTime().bind_processor(conn.dialect)
    db_now = to_db_time(now) if to_db_time else now
    params: list[Any] = [vendor, stream, db_now, run_id, seen_run_id]
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
        same: list[str] = []
        for key, cursor, payload, digest in rest:
            old_digest, deleted = old[key]
            if digest != old_digest or deleted:
                changed.append(
                    (cursor, payload, digest, db_now, run_id, seen_run_id, vendor, stream, key)
                )
            else:
                same.append(key)
        if changed:
            await conn.exec_driver_sql(_SQLITE_UPDATE_CHANGED, changed)
        if same and seen_run_id is not None:
            await conn.exec_driver_sql(
                _SQLITE_MARK_SEEN, (seen_run_id, vendor, stream, json.dumps(same), seen_run_id)
            )
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
    seen_run_id: int | None = None,
) -> UpsertCounts:
    """Insert new keys, update changed or soft-deleted ones, leave identical ones untouched.

    A key repeated within ``records`` counts once, with its last record. ``stream`` (not
    ``Record.stream``) decides where rows go. Runs inside the caller's transaction.
    ``seen_run_id`` (a complete pass) marks every given row seen by that run as it goes:
    written rows in the same statement, unchanged ones by a narrow update of that column.
    """
    require_aware(now)
    if is_postgres(conn):
        return await _upsert_pg(conn, vendor, stream, _latest(records), run_id, now, seen_run_id)
    counts = UpsertCounts()
    for chunk in chunks(prepare_rows(records)):
        counts.add(await _upsert_sqlite(conn, vendor, stream, chunk, run_id, now, seen_run_id))
    return counts
