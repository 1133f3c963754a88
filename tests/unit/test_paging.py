"""Paging and polling helpers on fake time: order, concurrency, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.connectors.paging import (
    JobFailed,
    JobStatus,
    JobTimeout,
    Page,
    PollPolicy,
    fetch_in_order,
    follow_next,
    remaining_offsets,
    remaining_pages,
    walk_pages,
)
from service.errors import ParseError


def test_remaining_pages_and_offsets() -> None:
    assert remaining_pages(0, 200) == []
    assert remaining_pages(200, 200) == []
    assert remaining_pages(201, 200) == [2]
    assert remaining_pages(1000, 100, first=0) == list(range(1, 10))
    assert remaining_offsets(250, 100) == [100, 200]
    assert remaining_offsets(100, 100) == []
    with pytest.raises(ValueError, match="per_page"):
        remaining_pages(5, 0)


async def test_fetch_in_order_yields_in_key_order_with_bounded_concurrency() -> None:
    running = peak = 0

    async def fetch(k: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * ((k * 7) % 5))  # finish out of order
        running -= 1
        return k * 10

    got = [v async for v in fetch_in_order(list(range(30)), fetch, max_parallel=4)]
    assert got == [k * 10 for k in range(30)]
    assert peak == 4


async def test_fetch_in_order_leaves_no_task_behind_when_the_consumer_stops() -> None:
    started: list[int] = []

    async def fetch(k: int) -> int:
        started.append(k)
        await asyncio.sleep(0 if k < 3 else 60)
        return k

    before = len(asyncio.all_tasks())
    async with contextlib.aclosing(fetch_in_order(list(range(50)), fetch, max_parallel=5)) as it:
        async for k in it:
            if k == 2:
                break
    assert len(asyncio.all_tasks()) == before
    assert len(started) <= 8


async def test_a_failed_fetch_cancels_the_rest_and_surfaces() -> None:
    cancelled = 0

    async def fetch(k: int) -> int:
        nonlocal cancelled
        if k == 3:
            raise RuntimeError("page 3 broke")
        try:
            await asyncio.sleep(60 if k != 0 else 0)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return k

    with pytest.raises(RuntimeError, match="page 3"):
        _ = [v async for v in fetch_in_order(list(range(10)), fetch, max_parallel=5)]
    # Keys 1, 2 and 4 were in flight, and 5 and 6 had taken the places of 0 (done, and
    # held for the consumer) and 3 (failed).
    assert cancelled == 5


async def test_cancelling_the_consumer_propagates() -> None:
    async def fetch(k: int) -> int:
        await asyncio.sleep(60)
        return k

    async def consume() -> None:
        async for _ in fetch_in_order(list(range(5)), fetch, max_parallel=2):
            pass

    before = len(asyncio.all_tasks())
    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(asyncio.all_tasks()) == before


async def test_follow_next_stops_at_the_end_and_catches_loops() -> None:
    pages = {"a": Page([1], "b"), "b": Page([2], "c"), "c": Page([3], None)}

    async def fetch(url: str) -> Page[int]:
        return pages[url]

    assert [p.items async for p in follow_next("a", fetch)] == [[1], [2], [3]]
    pages["c"] = Page([3], "a")
    with pytest.raises(ParseError, match="pagination loop"):
        _ = [p async for p in follow_next("a", fetch)]


async def test_walk_pages_with_a_total_fetches_the_rest_concurrently_in_order() -> None:
    data = list(range(950))
    calls: list[int] = []

    async def fetch(page: int) -> Page[int]:
        calls.append(page)
        await asyncio.sleep(0.001 * (page % 3))
        return Page(data[(page - 1) * 100 : page * 100], total=len(data))

    got = [
        x async for p in walk_pages(fetch, first=1, per_page=100, max_parallel=5) for x in p.items
    ]
    assert got == data
    assert sorted(calls) == list(range(1, 11))


async def test_walk_pages_by_offset_without_a_total_reads_until_a_short_page() -> None:
    data = list(range(250))

    async def fetch(offset: int) -> Page[int]:
        return Page(data[offset : offset + 100])

    got = [
        x
        async for p in walk_pages(fetch, first=0, per_page=100, max_parallel=5, offsets=True)
        for x in p.items
    ]
    assert got == data


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_poll_job_backs_off_until_done() -> None:
    from service.connectors.paging import poll_job

    t = FakeTime()
    states = iter(["Queued", "Inprogress", "Inprogress", "Completed"])

    async def check() -> JobStatus[str]:
        state = next(states)
        return JobStatus(state, done=state == "Completed", result="link")

    policy = PollPolicy(min_interval_s=1, max_interval_s=4, deadline_s=60)
    status = await poll_job(check, policy, clock=t.clock, sleep=t.sleep)
    assert status.result == "link"
    assert t.sleeps == [1, 2, 4, 4]


async def test_poll_job_fails_clearly_and_times_out_at_the_deadline() -> None:
    from service.connectors.paging import poll_job

    async def failed() -> JobStatus[None]:
        return JobStatus("Failed", failed=True, error="export crashed")

    t = FakeTime()
    with pytest.raises(JobFailed, match="export crashed"):
        await poll_job(failed, PollPolicy(), clock=t.clock, sleep=t.sleep, what="export job")

    async def forever() -> JobStatus[None]:
        return JobStatus("Inprogress")

    t = FakeTime()
    with pytest.raises(JobTimeout, match="not finished after 20s"):
        await poll_job(
            forever,
            PollPolicy(min_interval_s=1, max_interval_s=5, deadline_s=20),
            clock=t.clock,
            sleep=t.sleep,
        )
    assert t.now <= 20
