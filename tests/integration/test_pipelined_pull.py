"""The engine commits one batch while the connector builds the next: what that may change
and what it must not (order, barriers, failures, cancellations), on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.connectors import REGISTRY, Connector, StreamContext, StreamSpec
from service.db import fetch_live, load_state
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream
from service.errors import ServerError
from service.models import Batch, Record
from tests.integration.test_engine import VENDOR, make_settings


class Probe(Connector):
    """Yields ``batches`` batches of ten; logs what it did, and what was committed then."""

    vendor = VENDOR
    stream_specs = (StreamSpec("items", "id"),)
    batches: ClassVar[int] = 4
    state_every: ClassVar[int] = 0  # every n-th batch moves the checkpoint (0: only the last)
    fail_after: ClassVar[int | None] = None
    stray_cancel_after: ClassVar[int | None] = None
    engine: ClassVar[AsyncEngine | None] = None
    log: ClassVar[list[tuple[str, int, int]]] = []  # (event, batch, rows staged then)

    async def staged(self) -> int:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return len(await fetch_live(conn, VENDOR, "items"))

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        for n in range(1, self.batches + 1):
            if self.stray_cancel_after is not None and n > self.stray_cancel_after:
                raise asyncio.CancelledError  # a bug in a connector, not a cancellation
            last = n == self.batches
            moves = last or (self.state_every and n % self.state_every == 0)
            rows = [{"id": 10 * n + i} for i in range(10)]
            yield Batch(
                [Record("items", str(r["id"]), r) for r in rows],
                state={"batch": n} if moves else None,
            )
            self.log.append(("resumed", n, await self.staged()))
            if self.fail_after == n:
                raise ServerError("vendor went away", vendor=VENDOR, stream="items")


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine) -> type[Probe]:
    monkeypatch.setitem(REGISTRY, VENDOR, Probe)
    for name, value in {
        "batches": 4,
        "state_every": 0,
        "fail_after": None,
        "stray_cancel_after": None,
        "engine": engine,
        "log": [],
    }.items():
        monkeypatch.setattr(Probe, name, value)
    return Probe


async def run(engine: AsyncEngine, db_url: str) -> Any:
    async with Runtime(make_settings(db_url), db=engine) as rt:
        return await asyncio.wait_for(execute_stream(rt, VENDOR, "items", "manual"), 30)


async def test_the_connector_runs_ahead_of_commits_by_at_most_one_batch(
    engine: AsyncEngine, db_url: str, probe: type[Probe]
) -> None:
    result = await run(engine, db_url)
    assert result.status == "succeeded"
    assert result.counts.inserted == 40
    # Resumed after yielding batch n, the connector may find batch n not yet committed
    # (it builds n+1 meanwhile), but never batch n-1.
    for _, n, staged in probe.log:
        assert staged >= 10 * (n - 1)


async def test_a_batch_that_moves_the_checkpoint_is_committed_before_the_connector_goes_on(
    engine: AsyncEngine, db_url: str, probe: type[Probe]
) -> None:
    probe.state_every = 1
    result = await run(engine, db_url)
    assert result.status == "succeeded"
    assert [staged for _, _, staged in probe.log] == [10, 20, 30, 40]


async def test_a_failure_after_some_batches_commits_every_batch_yielded_before_it(
    engine: AsyncEngine, db_url: str, probe: type[Probe]
) -> None:
    probe.fail_after = 3
    result = await run(engine, db_url)
    assert result.status == "failed"
    assert "vendor went away" in (result.error or "")
    assert result.counts.inserted == 30
    async with engine.connect() as conn:
        assert len(await fetch_live(conn, VENDOR, "items")) == 30
        assert await load_state(conn, VENDOR, "items") is None  # no checkpoint ahead of data


async def test_a_stray_cancellation_inside_the_connector_ends_the_run_never_hangs_it(
    engine: AsyncEngine, db_url: str, probe: type[Probe]
) -> None:
    probe.stray_cancel_after = 2
    with pytest.raises(asyncio.CancelledError):
        await run(engine, db_url)  # within wait_for's 30 s, or it would be a TimeoutError
    async with engine.connect() as conn:
        assert len(await fetch_live(conn, VENDOR, "items")) == 20
