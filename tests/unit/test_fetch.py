"""bounded_fetch and the Aimsio GET-one pool: bounded, and no task outlives its consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any

import pytest

from service.config import VendorSettings
from service.connectors.aimsio import AimsioConnector, Stub
from service.connectors.fetch import bounded_fetch
from service.errors import ParseError
from service.models import Record


def others() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def drain(results: AsyncGenerator[Any, None]) -> list[Any]:
    async with contextlib.aclosing(results):
        return [r async for r in results]


class Fetcher:
    """fetch_one for tests: item i takes ``delays[i]`` loop turns (or sleeps) then returns
    i; records how many run at once and which were cancelled and cleaned up."""

    def __init__(self, fail_on: int | None = None, sleep_s: float = 0.0) -> None:
        self.fail_on = fail_on
        self.sleep_s = sleep_s
        self.running = 0
        self.peak = 0
        self.cancelled: list[int] = []

    async def __call__(self, i: int) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.sleep_s if i != self.fail_on else 0.001)
            if i == self.fail_on:
                raise ValueError(f"item {i} is bad")
            return i
        except asyncio.CancelledError:
            self.cancelled.append(i)
            raise
        finally:
            self.running -= 1


async def test_all_results_bounded_parallelism() -> None:
    fetch = Fetcher(sleep_s=0.001)
    async with contextlib.aclosing(bounded_fetch(range(50), fetch, 4)) as results:
        got = [r async for r in results]
    assert sorted(got) == list(range(50))
    assert fetch.peak == 4
    assert not others()


async def test_results_arrive_in_completion_order() -> None:
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.05 if i == 0 else 0)
        return i

    got = [r async for r in bounded_fetch([0, 1, 2], fetch, 3)]
    assert got == [1, 2, 0]


async def test_consumer_stopping_early_cancels_and_awaits_every_fetch() -> None:
    fetch = Fetcher(sleep_s=0.05)
    got = []
    async with contextlib.aclosing(bounded_fetch(range(100), fetch, 5)) as results:
        async for r in results:
            got.append(r)
            if len(got) == 3:
                break
    assert len(got) == 3
    assert fetch.running == 0  # every fetch finished its cleanup before aclose returned
    assert fetch.cancelled
    assert not others()


async def test_fetching_goes_on_while_the_consumer_is_busy_within_the_buffer() -> None:
    fetch = Fetcher()
    results = bounded_fetch(range(100), fetch, 3, buffer=5)
    assert await anext(results) == 0
    await asyncio.sleep(0.01)  # consumer busy: fetches continue up to the buffer
    assert fetch.peak == 3
    await results.aclose()
    assert not others()


async def test_cancelled_consumer_propagates_cancellation_and_leaves_nothing() -> None:
    fetch = Fetcher(sleep_s=10)

    consumer = asyncio.create_task(drain(bounded_fetch(range(20), fetch, 4)))
    while fetch.running < 4:
        await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert sorted(fetch.cancelled) == [0, 1, 2, 3]
    assert fetch.running == 0
    assert not others()


async def test_a_failed_fetch_cancels_the_others_and_surfaces() -> None:
    fetch = Fetcher(fail_on=2, sleep_s=10)
    with pytest.raises(ValueError, match="item 2 is bad"):
        await drain(bounded_fetch(range(20), fetch, 4))
    assert sorted(fetch.cancelled) == [0, 1, 3]
    assert fetch.running == 0
    assert not others()


async def test_no_items_and_bad_parallelism() -> None:
    assert [r async for r in bounded_fetch([], Fetcher(), 3)] == []
    with pytest.raises(ValueError, match="max_parallel"):
        await anext(bounded_fetch([1], Fetcher(), 0))


def aimsio(request: Any, max_parallel: int = 2) -> AimsioConnector:
    settings = VendorSettings.model_validate(
        {"base_url": "http://aimsio.test", "max_parallel": max_parallel}
    )
    return AimsioConnector(settings, SimpleNamespace(request=request))  # type: ignore[arg-type]


async def test_aimsio_pool_leaves_no_task_when_its_consumer_stops() -> None:
    """Old pool: its workers, blocked on a full result queue, swallowed the cancellation
    and blocked again, so closing the generator never returned."""

    async def request(method: str, path: str, **kw: Any) -> Any:
        key = path.rsplit("/", 1)[1]
        return SimpleNamespace(json=lambda: {"guid": key, "updatedAt": 5})

    connector = aimsio(request)
    stubs = [Stub(f"g{i}", 5) for i in range(50)]
    got: list[Record | str] = []

    async def consume() -> None:
        async with contextlib.aclosing(connector.fetch_records("User", stubs)) as records:
            async for record in records:
                got.append(record)
                await asyncio.sleep(0.01)  # a slow consumer: results pile up
                if len(got) == 3:
                    break

    await asyncio.wait_for(consume(), 5)
    assert [r.key for r in got if isinstance(r, Record)] == ["g0", "g1", "g2"]
    assert not others()


async def test_aimsio_pool_failure_surfaces_and_cancels_the_rest() -> None:
    started: list[str] = []

    async def request(method: str, path: str, **kw: Any) -> Any:
        key = path.rsplit("/", 1)[1]
        started.append(key)
        if key == "g1":
            return SimpleNamespace(json=lambda: ["not", "an", "object"])
        await asyncio.sleep(10)
        raise AssertionError("never reached")

    connector = aimsio(request, max_parallel=3)
    stubs = [Stub(f"g{i}", 5) for i in range(10)]
    with pytest.raises(ParseError, match="not a JSON object"):
        await drain(connector.fetch_records("User", stubs))
    assert started == ["g0", "g1", "g2"]  # nothing new started after the failure
    assert not others()
