"""The pull engine on both databases: checkpoints, crash convergence, leases, deletes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import service.engine.sync as sync_mod
from service.config import Settings, StreamSettings
from service.connectors import REGISTRY, Connector, StreamContext, StreamSpec
from service.db import fetch_live, load_state
from service.db.tables import staged_record, sync_run
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from service.errors import LeaseHeld, ServerError
from service.models import Batch, Record

VENDOR = "aimms"  # any configured id; the test connector stands in for the real one


class SourceConnector(Connector):
    """Serves ``source`` in offset order; can fail after a given batch or wait on a gate."""

    vendor = VENDOR
    stream_specs = (StreamSpec("items", "id", "v"),)
    source: ClassVar[list[dict[str, Any]]] = []
    fail_after: ClassVar[int | None] = None
    gate: ClassVar[asyncio.Event | None] = None
    full_pass: ClassVar[bool] = False

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        offset = int((ctx.state or {}).get("offset", 0))
        yielded = 0
        while offset < len(self.source):
            if self.gate is not None:
                await self.gate.wait()
            chunk = self.source[offset : offset + ctx.batch_size]
            offset += len(chunk)
            last = offset >= len(self.source)
            seen = frozenset(str(r["id"]) for r in self.source) if self.full_pass and last else None
            yield Batch(
                records=[Record("items", str(r["id"]), r, str(r["v"])) for r in chunk],
                state={"offset": offset},
                seen_keys=seen,
            )
            yielded += 1
            if self.fail_after is not None and yielded == self.fail_after:
                raise ServerError("vendor went away", vendor=VENDOR, stream="items")


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> type[SourceConnector]:
    monkeypatch.setitem(REGISTRY, VENDOR, SourceConnector)
    monkeypatch.setattr(SourceConnector, "source", [{"id": i, "v": 1} for i in range(95)])
    monkeypatch.setattr(SourceConnector, "fail_after", None)
    monkeypatch.setattr(SourceConnector, "gate", None)
    monkeypatch.setattr(SourceConnector, "full_pass", False)
    return SourceConnector


def make_settings(db_url: str, **sync: Any) -> Settings:
    return Settings(
        database={"url": db_url},
        sync={"batch_size": 10, **sync},
        vendors={
            VENDOR: {
                "base_url": "http://127.0.0.1:9",
                "auth": {"kind": "none"},
                "streams": {"items": {}},
            }
        },
    )


async def staged_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(staged_record)
        return int((await conn.execute(q)).scalar_one())


async def state_offset(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        state = await load_state(conn, VENDOR, "items")
    return int((state or {}).get("offset", 0))


async def test_crash_then_rerun_converges(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url)
    source.fail_after = 3
    async with Runtime(settings, db=engine) as rt:
        with pytest.raises(ServerError):
            await run_stream(rt, VENDOR, "items", "manual")
    # Every batch committed before the failure stays, and the state is not ahead of it.
    assert await staged_count(engine) == 30
    assert await state_offset(engine) == 30
    async with engine.connect() as conn:
        runs = (await conn.execute(select(sync_run.c.status, sync_run.c.error))).all()
    assert runs[0].status == "failed"
    assert "vendor went away" in runs[0].error

    source.fail_after = None
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, VENDOR, "items", "manual")
    assert result.status == "succeeded"
    assert result.counts.inserted == 65
    async with engine.connect() as conn:
        live = await fetch_live(conn, VENDOR, "items")
    assert live == {str(r["id"]): r for r in source.source}  # exactly the source rows
    assert await staged_count(engine) == 95  # no duplicates
    assert await state_offset(engine) == 95


async def test_crash_inside_the_batch_transaction_rolls_back_rows_and_state(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = sync_mod.save_state
    calls = 0

    async def flaky_save(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk on fire")  # after batch 3's rows were written
        await real_save(*args, **kwargs)

    monkeypatch.setattr(sync_mod, "save_state", flaky_save)
    settings = make_settings(db_url)
    async with Runtime(settings, db=engine) as rt:
        with pytest.raises(RuntimeError):
            await run_stream(rt, VENDOR, "items", "manual")
    assert await staged_count(engine) == 20
    assert await state_offset(engine) == 20

    monkeypatch.setattr(sync_mod, "save_state", real_save)
    async with Runtime(settings, db=engine) as rt:
        await run_stream(rt, VENDOR, "items", "manual")
    assert await staged_count(engine) == 95


async def test_second_run_writes_nothing_and_full_pass_soft_deletes(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url)
    source.full_pass = True
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, VENDOR, "items", "manual")
        again = await run_stream(rt, VENDOR, "items", "manual", full=True)
        source.source = source.source[:90]
        shrunk = await run_stream(rt, VENDOR, "items", "manual", full=True)
    assert first.counts.inserted == 95
    assert (again.counts.inserted, again.counts.updated, again.counts.unchanged) == (0, 0, 95)
    assert shrunk.counts.deleted == 5
    async with engine.connect() as conn:
        assert len(await fetch_live(conn, VENDOR, "items")) == 90


async def test_two_runners_of_one_stream(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    settings = make_settings(db_url)
    gate = asyncio.Event()
    source.gate = gate
    async with (
        Runtime(settings, db=engine, owner="runner-a") as a,
        Runtime(settings, db=engine, owner="runner-b") as b,
    ):
        first = asyncio.create_task(run_stream(a, VENDOR, "items", "schedule"))
        refusal = ""
        for _ in range(200):  # until runner-a holds the lease (bounded)
            await asyncio.sleep(0.01)
            try:
                await run_stream(b, VENDOR, "items", "manual")
            except LeaseHeld as exc:
                refusal = str(exc)
                break
        assert "already running (owner runner-a, since " in refusal
        gate.set()
        result = await first
        assert result.status == "succeeded"
        # Released: runner-b may run now.
        second = await run_stream(b, VENDOR, "items", "manual")
        assert second.status == "succeeded"


async def test_expired_lease_is_taken_over(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector]
) -> None:
    from datetime import UTC, datetime, timedelta

    from service.db import acquire_lease

    settings = make_settings(db_url, lease_ttl_s=30, heartbeat_s=10)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with engine.begin() as conn:  # a dead holder left this behind
        await acquire_lease(conn, f"stream:{VENDOR}:items", "dead", ttl_s=30, now=long_ago)
    async with Runtime(settings, db=engine, owner="alive") as rt:
        result = await run_stream(rt, VENDOR, "items", "manual")
    assert result.status == "succeeded"


async def test_random_crash_points_always_converge(
    engine: AsyncEngine, db_url: str, source: type[SourceConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after a random batch, or inside a random batch's transaction; then re-run.
    Every time: the state was never ahead of the staged rows, and the re-run converges to
    exactly the source."""
    import random

    from sqlalchemy import delete

    from service.db.tables import lease, stream_state

    real_save = sync_mod.save_state
    rng = random.Random(20261123)
    for _ in range(6):
        async with engine.begin() as conn:
            for table in (staged_record, stream_state, sync_run, lease):
                await conn.execute(delete(table))
        n, batch = rng.randint(1, 60), rng.randint(1, 13)
        source.source = [{"id": i, "v": rng.randint(0, 3)} for i in range(n)]
        batches = -(-n // batch)
        crash_at = rng.randint(1, batches)
        inside = rng.random() < 0.5
        source.fail_after = None if inside else crash_at
        calls = 0

        async def flaky_save(*args: Any, _at: int = crash_at, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == _at:
                raise RuntimeError("crash inside the batch transaction")
            await real_save(*args, **kwargs)

        monkeypatch.setattr(sync_mod, "save_state", flaky_save if inside else real_save)
        settings = make_settings(db_url, batch_size=batch)
        async with Runtime(settings, db=engine) as rt:
            with pytest.raises((RuntimeError, ServerError)):
                await run_stream(rt, VENDOR, "items", "manual")
        assert await state_offset(engine) <= await staged_count(engine)
        monkeypatch.setattr(sync_mod, "save_state", real_save)
        source.fail_after = None
        async with Runtime(settings, db=engine) as rt:
            await run_stream(rt, VENDOR, "items", "manual")
        async with engine.connect() as conn:
            live = await fetch_live(conn, VENDOR, "items")
        assert live == {str(r["id"]): r for r in source.source}
        assert await state_offset(engine) == n


async def test_one_process_drives_a_vendor_at_a_time(
    engine: AsyncEngine,
    db_url: str,
    source: type[SourceConnector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another stream of the same vendor in another process is refused (its limiter would
    add to ours); in the same process, streams share the vendor lease."""
    settings = make_settings(db_url)
    settings.vendors[VENDOR].streams["other"] = StreamSettings()
    specs = (StreamSpec("items", "id", "v"), StreamSpec("other", "id", "v"))
    monkeypatch.setattr(source, "stream_specs", specs)
    gate = asyncio.Event()
    source.gate = gate
    async with (
        Runtime(settings, db=engine, owner="proc-a") as a,
        Runtime(settings, db=engine, owner="proc-b") as b,
    ):
        first = asyncio.create_task(run_stream(a, VENDOR, "items", "schedule"))
        sibling = asyncio.create_task(run_stream(a, VENDOR, "other", "schedule"))
        refusal = ""
        for _ in range(200):
            await asyncio.sleep(0.01)
            try:
                await run_stream(b, VENDOR, "other", "manual")
            except LeaseHeld as exc:
                refusal = str(exc)
                break
        assert f"vendor:{VENDOR} is already running (owner proc-a" in refusal
        gate.set()
        results = await asyncio.gather(first, sibling)
        assert [r.status for r in results] == ["succeeded", "succeeded"]
        assert (await run_stream(b, VENDOR, "other", "manual")).status == "succeeded"
