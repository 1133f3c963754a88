"""The staging store contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import (
    acquire_lease,
    check_schema,
    count_live,
    create_engine,
    fetch_live,
    finish_run,
    head_revision,
    load_state,
    migrate,
    recent_runs,
    save_state,
    schema_revision,
    soft_delete_keys,
    soft_delete_missing,
    staged_cursors,
    start_run,
    stream_statuses,
    upsert_records,
)
from service.db.tables import metadata, staged_record
from service.errors import ConfigError, SchemaBehind, StagingError
from service.models import Record, UpsertCounts, payload_hash

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
V, S = "aimsio", "assets"


def rec(key: str, payload: dict[str, Any] | None = None, cursor: str | None = None) -> Record:
    return Record(
        stream=S, key=key, payload={"id": key} if payload is None else payload, cursor=cursor
    )


async def upsert(
    engine: AsyncEngine, records: list[Record], *, now: datetime = T0, run_id: int | None = None
) -> UpsertCounts:
    async with engine.begin() as conn:
        return await upsert_records(conn, V, S, records, run_id=run_id, now=now)


async def staged_rows(engine: AsyncEngine) -> dict[str, sa.Row[Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(staged_record).where(staged_record.c.vendor == V))
        return {row.record_key: row for row in result}


# --- schema --------------------------------------------------------------------------------


async def test_migrations_create_exactly_the_schema(engine: AsyncEngine) -> None:
    def inspect(sync_conn: sa.Connection) -> tuple[list[Any], set[str]]:
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(ctx, metadata), set(sa.inspect(sync_conn).get_table_names())

    async with engine.connect() as conn:
        diff, tables = await conn.run_sync(inspect)
    assert diff == []
    assert tables == {*metadata.tables, "alembic_version"}


async def test_migrate_is_idempotent_and_reports_head(db_url: str) -> None:
    assert await migrate(db_url) == head_revision()
    assert await migrate(db_url) == head_revision()
    eng = create_engine(db_url)
    try:
        assert await schema_revision(eng) == head_revision()
        await check_schema(eng)
    finally:
        await eng.dispose()


async def test_concurrent_migrations_wait_for_each_other(db_url: str) -> None:
    revisions = await asyncio.gather(*(migrate(db_url) for _ in range(3)))
    assert revisions == [head_revision()] * 3


async def test_check_schema_refuses_an_unmigrated_database(db_url: str) -> None:
    eng = create_engine(db_url)
    try:
        assert await schema_revision(eng) is None
        with pytest.raises(SchemaBehind) as info:
            await check_schema(eng)
    finally:
        await eng.dispose()
    message = str(info.value)
    assert message.startswith("database schema is at none")
    assert f"needs {head_revision()}: run `vendorsync migrate`" in message


def test_alembic_command_line_upgrades(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VENDORSYNC_DATABASE__URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={db_url}", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=ROOT,
        env={**env, "VENDORSYNC_DATABASE__URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert head_revision() in done.stdout


# --- upserts -------------------------------------------------------------------------------


async def test_upsert_counts_inserts_updates_and_unchanged(engine: AsyncEngine) -> None:
    assert await upsert(engine, [rec("a"), rec("b"), rec("c")]) == UpsertCounts(inserted=3)
    assert await upsert(engine, [rec("a"), rec("b"), rec("c")]) == UpsertCounts(unchanged=3)
    changed = [rec("a"), rec("b", {"id": "b", "v": 2}), rec("c"), rec("d")]
    assert await upsert(engine, changed) == UpsertCounts(inserted=1, updated=1, unchanged=2)
    async with engine.connect() as conn:
        assert await fetch_live(conn, V, S) == {
            "a": {"id": "a"},
            "b": {"id": "b", "v": 2},
            "c": {"id": "c"},
            "d": {"id": "d"},
        }
    assert await upsert(engine, []) == UpsertCounts()


async def test_duplicate_keys_in_one_batch_last_wins_counted_once(engine: AsyncEngine) -> None:
    batch = [rec("a", {"n": 1}), rec("b"), rec("a", {"n": 2}), rec("a", {"n": 3}, cursor="c3")]
    assert await upsert(engine, batch) == UpsertCounts(inserted=2)
    again = [rec("a", {"n": 4}), rec("a", {"n": 3})]
    assert await upsert(engine, again) == UpsertCounts(unchanged=1)
    rows = await staged_rows(engine)
    assert rows["a"].payload == {"n": 3}
    assert rows["a"].cursor == "c3"  # same hash, so the row was not rewritten at all
    assert rows["a"].payload_hash == payload_hash({"n": 3})


async def test_soft_deleted_rows_are_resurrected_as_updates(engine: AsyncEngine) -> None:
    await upsert(engine, [rec("a"), rec("b")])
    async with engine.begin() as conn:
        assert await soft_delete_keys(conn, V, S, ["a", "zzz"], now=T0) == 1
        assert await count_live(conn, V, S) == 1
    # Same payload, but the row was deleted: it comes back and counts as an update.
    assert await upsert(engine, [rec("a"), rec("b")], now=T0 + timedelta(hours=1)) == UpsertCounts(
        updated=1, unchanged=1
    )
    rows = await staged_rows(engine)
    assert rows["a"].deleted_at is None
    assert rows["a"].synced_at == T0 + timedelta(hours=1)


async def test_unchanged_rows_are_never_rewritten(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        run1 = await start_run(conn, V, S, "manual", now=T0)
        run2 = await start_run(conn, V, S, "manual", now=T0)
    await upsert(engine, [rec("a", cursor="1"), rec("b", cursor="1")], run_id=run1)
    later = T0 + timedelta(days=1)
    counts = await upsert(
        engine,
        [rec("a", cursor="1"), rec("b", {"id": "b", "x": 1}, cursor="2")],
        now=later,
        run_id=run2,
    )
    assert counts == UpsertCounts(updated=1, unchanged=1)
    rows = await staged_rows(engine)
    assert (rows["a"].synced_at, rows["a"].last_run_id, rows["a"].first_seen_at) == (T0, run1, T0)
    assert (rows["b"].synced_at, rows["b"].last_run_id, rows["b"].first_seen_at) == (
        later,
        run2,
        T0,
    )
    assert rows["b"].cursor == "2"


async def test_large_batches_are_split_and_counted(engine: AsyncEngine) -> None:
    records = [rec(f"k{i:05d}", {"i": i}) for i in range(2_345)]
    assert await upsert(engine, records) == UpsertCounts(inserted=2_345)
    records[1_500] = rec("k01500", {"i": -1})
    assert await upsert(engine, records) == UpsertCounts(updated=1, unchanged=2_344)


async def test_soft_delete_missing_with_a_large_seen_set(engine: AsyncEngine) -> None:
    await upsert(engine, [rec(f"k{i:06d}", {"i": i}) for i in range(3_000)])
    # 120k seen keys: the 2,500 staged ones we keep, plus many the store never saw.
    seen = {f"k{i:06d}" for i in range(500, 3_000)} | {f"x{i:06d}" for i in range(117_500)}
    async with engine.begin() as conn:
        run_id = await start_run(conn, V, S, "full", now=T0)
        assert await soft_delete_missing(conn, V, S, seen, run_id=run_id, now=T0) == 500
        assert await soft_delete_missing(conn, V, S, seen, run_id=run_id, now=T0) == 0
        assert await count_live(conn, V, S) == 2_500
        cursors = await staged_cursors(conn, V, S)
    assert set(cursors) == {f"k{i:06d}" for i in range(500, 3_000)}
    rows = await staged_rows(engine)
    assert rows["k000000"].deleted_at == T0
    assert rows["k000000"].last_run_id == run_id
    assert rows["k000500"].deleted_at is None


async def test_soft_delete_missing_only_touches_its_stream(engine: AsyncEngine) -> None:
    await upsert(engine, [rec("a"), rec("b")])
    async with engine.begin() as conn:
        await upsert_records(conn, V, "other", [rec("a")], run_id=None, now=T0)
        await upsert_records(conn, "imis", S, [rec("a")], run_id=None, now=T0)
        assert await soft_delete_missing(conn, V, S, [], run_id=None, now=T0) == 2
        assert await count_live(conn, V, "other") == 1
        assert await count_live(conn, "imis", S) == 1


async def test_staged_cursors_list_live_rows_only(engine: AsyncEngine) -> None:
    await upsert(engine, [rec("a", cursor="2024-01-01"), rec("b"), rec("c", cursor="x")])
    async with engine.begin() as conn:
        await soft_delete_keys(conn, V, S, {"c"}, now=T0)
        assert await staged_cursors(conn, V, S) == {"a": "2024-01-01", "b": None}
        assert await fetch_live(conn, V, S) == {"a": {"id": "a"}, "b": {"id": "b"}}


# --- state and runs ------------------------------------------------------------------------


async def test_state_roundtrip(engine: AsyncEngine) -> None:
    state = {"cursor": "2024-03-01T00:00:00Z", "jobs": {"view": [1, 2]}, "name": "Zoë ✓"}
    async with engine.begin() as conn:
        assert await load_state(conn, V, S) is None
        await save_state(conn, V, S, state, now=T0)
        assert await load_state(conn, V, S) == state
        await save_state(conn, V, S, {"cursor": "later"}, now=T0 + timedelta(minutes=1))
    async with engine.connect() as conn:
        assert await load_state(conn, V, S) == {"cursor": "later"}
        assert await load_state(conn, V, "other") is None


async def test_runs_and_stream_statuses(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await start_run(conn, V, S, "schedule", now=T0)
        await finish_run(
            conn, first, status="failed", counts=UpsertCounts(), requests=3, error="boom", now=T0
        )
        second = await start_run(conn, V, S, "manual", now=T0 + timedelta(hours=1))
        await upsert_records(conn, V, S, [rec("a"), rec("b")], run_id=second, now=T0)
        await save_state(conn, V, S, {"cursor": "c1"}, now=T0 + timedelta(hours=1))
        await finish_run(
            conn,
            second,
            status="succeeded",
            counts=UpsertCounts(inserted=2, updated=1, unchanged=4, deleted=1),
            requests=7,
            error=None,
            now=T0 + timedelta(hours=2),
        )
        await save_state(conn, "imis", "members", {"cursor": "m"}, now=T0)  # state, no run
        running = await start_run(conn, "amilia", "people", "schedule", now=T0, owner="p1")
        # Its process still holds the stream's lease: it is running, not abandoned.
        await acquire_lease(conn, "stream:amilia:people", "p1", ttl_s=60, now=T0)
        statuses = await stream_statuses(conn, now=T0 + timedelta(seconds=30))
        runs = await recent_runs(conn, limit=2)

    assert [(s.vendor, s.stream) for s in statuses] == [
        ("aimsio", "assets"),
        ("amilia", "people"),
        ("imis", "members"),
    ]
    aimsio, amilia, imis = statuses
    assert aimsio.last_run_status == "succeeded"
    assert aimsio.last_run_started_at == T0 + timedelta(hours=1)
    assert aimsio.last_run_finished_at == T0 + timedelta(hours=2)
    assert aimsio.last_run_rows == 7
    assert aimsio.last_error is None
    assert aimsio.state == {"cursor": "c1"}
    assert aimsio.state_updated_at == T0 + timedelta(hours=1)
    assert aimsio.staged_rows == 2
    assert (amilia.last_run_status, amilia.last_run_finished_at, amilia.state) == (
        "running",
        None,
        None,
    )
    assert (imis.last_run_status, imis.last_run_rows, imis.staged_rows) == (None, None, 0)
    assert imis.state == {"cursor": "m"}

    assert [r.id for r in runs] == [running, second]
    assert runs[1].counts == UpsertCounts(inserted=2, updated=1, unchanged=4, deleted=1)
    assert (runs[1].requests, runs[1].trigger, runs[1].error) == (7, "manual", None)


# --- time and errors -----------------------------------------------------------------------


async def test_datetimes_come_back_utc_aware(engine: AsyncEngine) -> None:
    local = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    await upsert(engine, [rec("a")], now=local)
    async with engine.begin() as conn:
        run_id = await start_run(conn, V, S, "manual", now=local)
        await save_state(conn, V, S, {}, now=local)
        (status,) = await stream_statuses(conn)
        (run,) = await recent_runs(conn, 1)
    row = (await staged_rows(engine))["a"]
    for value in (row.first_seen_at, row.synced_at, status.state_updated_at, run.started_at):
        assert value == local
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert run.id == run_id


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="naive datetime"):
        await upsert(engine, [rec("a")], now=naive)
    async with engine.begin() as conn:
        with pytest.raises(ValueError, match="naive datetime"):
            await save_state(conn, V, S, {}, now=naive)
        with pytest.raises(ValueError, match="naive datetime"):
            await start_run(conn, V, S, "manual", now=naive)


async def test_database_errors_become_staging_errors(db_url: str) -> None:
    eng = create_engine(db_url)  # not migrated: no tables
    try:
        with pytest.raises(StagingError) as info:
            await upsert(eng, [rec("a")])
    finally:
        await eng.dispose()
    assert info.value.__cause__ is not None
    assert "[parameters" not in str(info.value)


async def test_connection_errors_hide_the_password(tmp_path: Path) -> None:
    eng = create_engine("postgresql://vendorsync:s3cret-pw@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StagingError) as info:
            await check_schema(eng)
    finally:
        await eng.dispose()
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize("url", ["not a url", "mysql://u:secret@db/x"])
def test_bad_database_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^database\.url: ") as info:
        create_engine(url)
    assert "secret" not in str(info.value)


def test_create_engine_makes_the_sqlite_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "staging.db"
    eng = create_engine(f"sqlite:///{path}")
    assert path.parent.is_dir()
    assert eng.dialect.driver == "aiosqlite"
    eng.sync_engine.dispose()


async def test_upgrading_a_populated_database_keeps_its_runs(db_url: str) -> None:
    """0003 → head on a database with runs: the rows stay, new columns start empty."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VENDORSYNC_DATABASE__URL", None)

    def alembic(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={db_url}", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    alembic("upgrade", "0003")
    eng = create_engine(db_url)
    try:
        async with eng.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO sync_run (vendor, stream, trigger, started_at, status) "
                    "VALUES ('aqua', 'Orders', 'manual', '2026-01-01 00:00:00', 'succeeded')"
                )
            )
        alembic("upgrade", "head")
        async with eng.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT vendor, status, note FROM sync_run"))).all()
    finally:
        await eng.dispose()
    assert [tuple(r) for r in rows] == [("aqua", "succeeded", None)]
