"""Deletes of a large snapshot without its keys in memory: marked in SQL, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.connectors import REGISTRY, Connector, StreamContext, StreamSpec
from service.db import fetch_live
from service.db.tables import staged_record
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream
from service.errors import ServerError
from service.models import Batch, Record
from tests.integration.test_engine import VENDOR, make_settings


class SnapshotConnector(Connector):
    """Streams an export in batches; never holds its keys; marks what it saw."""

    vendor = VENDOR
    stream_specs = (StreamSpec("items", "id"),)
    rows: ClassVar[list[dict[str, Any]]] = []
    fail_at: ClassVar[int | None] = None

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        for start in range(0, len(self.rows), ctx.batch_size):
            if self.fail_at is not None and start >= self.fail_at:
                raise ServerError("export download broke", vendor=VENDOR)
            chunk = self.rows[start : start + ctx.batch_size]
            last = start + ctx.batch_size >= len(self.rows)
            yield Batch(
                records=[Record("items", str(r["id"]), r) for r in chunk],
                state={"rows": len(self.rows)} if last else None,
                marks=(),
                complete=last,
            )


@pytest.fixture
def snapshot(monkeypatch: pytest.MonkeyPatch) -> type[SnapshotConnector]:
    monkeypatch.setitem(REGISTRY, VENDOR, SnapshotConnector)
    monkeypatch.setattr(SnapshotConnector, "rows", [{"id": i, "v": 1} for i in range(95)])
    monkeypatch.setattr(SnapshotConnector, "fail_at", None)
    return SnapshotConnector


async def live_keys(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await fetch_live(conn, VENDOR, "items"))


async def test_a_complete_pass_deletes_what_it_did_not_see(
    engine: AsyncEngine, db_url: str, snapshot: type[SnapshotConnector]
) -> None:
    async with Runtime(make_settings(db_url), db=engine) as rt:
        first = await execute_stream(rt, VENDOR, "items", "manual")
        assert (first.counts.inserted, first.counts.deleted) == (95, 0)
        # The vendor dropped ids 10-19 and added 100-102; one row changed.
        snapshot.rows = [r for r in snapshot.rows if not 10 <= r["id"] < 20]
        snapshot.rows += [{"id": i, "v": 1} for i in (100, 101, 102)]
        snapshot.rows[0] = {"id": 0, "v": 2}
        second = await execute_stream(rt, VENDOR, "items", "manual")
        assert second.counts.deleted == 10
        assert (second.counts.inserted, second.counts.updated) == (3, 1)
        assert await live_keys(engine) == {str(r["id"]) for r in snapshot.rows}

        # An incomplete pass (the download broke after 30 rows) deletes nothing.
        snapshot.rows = snapshot.rows[:40]
        snapshot.fail_at = 30
        broken = await execute_stream(rt, VENDOR, "items", "manual")
        assert broken.status == "failed"
        assert broken.counts.deleted == 0
        assert len(await live_keys(engine)) == 88

        # A deleted id that comes back is live again.
        snapshot.fail_at = None
        snapshot.rows = [{"id": i, "v": 1} for i in range(1, 20)]
        back = await execute_stream(rt, VENDOR, "items", "manual")
    assert back.status == "succeeded"
    assert await live_keys(engine) == {str(i) for i in range(1, 20)}
    async with engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(staged_record))).scalar()
    assert total == 98  # soft deletes: rows kept, never duplicated


async def test_marks_ride_on_the_upsert_and_leave_unchanged_rows_unwritten(
    engine: AsyncEngine, db_url: str, snapshot: type[SnapshotConnector]
) -> None:
    async with Runtime(make_settings(db_url), db=engine) as rt:
        first = await execute_stream(rt, VENDOR, "items", "manual")
        # Row 3 comes back in a version the database cannot hold: it stays as staged, alive.
        snapshot.rows[3] = {"id": 3, "v": "bad\u0000"}
        snapshot.rows[4] = {"id": 4, "v": 2}
        second = await execute_stream(rt, VENDOR, "items", "manual")
    assert second.status == "succeeded"
    assert (second.counts.updated, second.counts.invalid, second.counts.deleted) == (1, 1, 0)
    assert await live_keys(engine) == {str(i) for i in range(95)}
    async with engine.connect() as conn:
        rows = {
            key: (last, seen)
            for key, last, seen in await conn.execute(
                sa.select(
                    staged_record.c.record_key,
                    staged_record.c.last_run_id,
                    staged_record.c.seen_run_id,
                )
            )
        }
    # Every row was seen by the second pass; only the changed one was written by it.
    assert {seen for _, seen in rows.values()} == {second.run_id}
    assert rows["4"][0] == second.run_id
    assert {last for key, (last, _) in rows.items() if key != "4"} == {first.run_id}
