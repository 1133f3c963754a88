"""VendorLimiter on virtual time: rate windows, FIFO, pause, fence and held slots.

No real sleeps: the limiter's injected clock and sleep are a ``VirtualTime``.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.http.limiter import VendorLimiter
from tests.unit.http.test_limiter import max_in_window
from tests.unit.http.vtime import VirtualTime


def make(vt: VirtualTime, max_parallel: int, rate_per_s: float, **kw: object) -> VendorLimiter:
    return VendorLimiter(
        "v",
        max_parallel,
        rate_per_s,
        clock=vt.clock,
        sleep=vt.sleep,
        **kw,  # type: ignore[arg-type]
    )


async def calls(
    vt: VirtualTime, limiter: VendorLimiter, n: int, hold_s: float = 0.0
) -> list[float]:
    """Start ``n`` slots at once, each kept ``hold_s``; their grant times, in order."""
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(vt.now)
            if hold_s:
                await vt.sleep(hold_s)

    await asyncio.gather(*(call() for _ in range(n)))
    return starts


async def grant_times(
    vt: VirtualTime, limiter: VendorLimiter, n: int, hold_s: float = 0.0
) -> list[float]:
    return await vt.run(calls(vt, limiter, n, hold_s))


@pytest.mark.parametrize(
    ("rate", "period_s", "burst"),
    [(10, 1.0, None), (100, 1.0, None), (20, 1.0, 20), (50, 0.1, None), (0.5, 1.0, None)],
)
async def test_no_window_of_the_period_holds_more_than_the_limit(
    rate: float, period_s: float, burst: int | None
) -> None:
    vt = VirtualTime()
    limiter = make(vt, 1000, rate, period_s=period_s, burst=burst)
    n = 5 * limiter.rate_limit + 1
    starts = await grant_times(vt, limiter, n)
    assert len(starts) == n
    # The nominal period (not only the stretched one) never sees more than the limit.
    nominal = max(period_s, limiter.rate_limit / rate)
    assert max_in_window(starts, nominal) == limiter.rate_limit
    assert max_in_window(starts, limiter.throttle_period_s - 1e-9) <= limiter.burst  # float sums
    # ...and the limiter keeps up with the cap: exactly rate / (1 + margin).
    achieved = (n - 1) / (max(starts) - min(starts))
    assert achieved >= limiter.rate_limit / limiter.period_s * 0.999


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([5, 10, 20, 100]),
    delays=st.lists(st.floats(0.0, 0.95), min_size=5, max_size=60),
)
def test_sends_stalled_after_their_grant_never_bunch_up(rate: int, delays: list[float]) -> None:
    """Requests leave late by up to (almost) one interval, in random amounts: re-dating
    each token to its real send keeps every window of the period within the limit."""

    async def scenario() -> list[float]:
        vt = VirtualTime()
        limiter = make(vt, 1000, rate)
        interval = limiter.throttle_period_s
        sends: list[float] = []

        async def call(delay: float) -> None:
            async with limiter.slot() as grant:
                await vt.sleep(delay * interval)
                grant.sent()
                sends.append(vt.now)

        await vt.run(asyncio.gather(*(call(d) for d in delays)))
        return sends

    sends = asyncio.run(scenario())
    assert max_in_window(sends, 1.0) <= rate


async def test_waiters_are_granted_in_arrival_order() -> None:
    vt = VirtualTime()
    limiter = make(vt, 2, 10)
    order: list[int] = []

    async def call(i: int) -> None:
        async with limiter.slot():
            order.append(i)
            await vt.sleep(0.3)

    async def all_calls() -> None:
        tasks = []
        for i in range(12):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0)  # enqueue in a known order
        await asyncio.gather(*tasks)

    await vt.run(all_calls())
    assert order == list(range(12))


async def test_waiters_sleep_once_per_grant_never_poll() -> None:
    vt = VirtualTime()
    limiter = make(vt, 50, 10)
    await grant_times(vt, limiter, 30)
    assert vt.sleeps <= 30  # one exact sleep per rate-bound grant, however many wait


async def test_pause_holds_new_slots_on_the_injected_clock() -> None:
    vt = VirtualTime()
    limiter = make(vt, 5, 1000)
    t0 = vt.now
    limiter.pause(30)
    starts = await grant_times(vt, limiter, 4)
    assert min(starts) == pytest.approx(t0 + 30)
    assert limiter.pauses == 1


async def test_pause_arriving_during_a_token_wait_is_honoured() -> None:
    vt = VirtualTime()
    limiter = make(vt, 5, 1)  # one per ~1.02 s
    async with limiter.slot():
        pass
    t0 = vt.now
    waiter = asyncio.ensure_future(calls(vt, limiter, 1))
    await vt.advance(0.5)  # it sleeps for its token...
    limiter.pause(10)  # ...when the vendor pauses
    starts = await vt.run(waiter)
    assert starts == [pytest.approx(t0 + 0.5 + 10)]


async def test_fence_holds_new_slots_and_lets_granted_ones_finish() -> None:
    vt = VirtualTime()
    limiter = make(vt, 5, 10)
    order: list[int] = []

    async def call(i: int) -> None:
        async with limiter.slot():
            order.append(i)

    inside = limiter.slot()
    await inside.__aenter__()  # granted before the fence
    limiter.fence("lease not renewed")
    assert limiter.fenced
    assert limiter.fence_reason == "lease not renewed"
    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0)
    await vt.advance(120)
    assert order == []  # nothing new while fenced, however long
    await inside.__aexit__(None, None, None)  # the granted request still completes
    assert limiter.in_flight == 0
    t_unfence = vt.now
    limiter.unfence()
    assert not limiter.fenced
    assert limiter.fence_reason is None
    await vt.run(asyncio.gather(*tasks))
    assert order == [0, 1, 2]
    assert vt.now <= t_unfence + 2 * limiter.throttle_period_s  # rate spacing only


async def test_fence_arriving_during_a_token_wait_stops_the_grant() -> None:
    vt = VirtualTime()
    limiter = make(vt, 5, 1)
    async with limiter.slot():
        pass
    waiter = asyncio.ensure_future(calls(vt, limiter, 1))
    await vt.advance(0.5)
    limiter.fence("db unreachable")
    await vt.advance(30)
    assert not waiter.done()
    limiter.unfence()
    starts = await vt.run(waiter)
    assert starts == [pytest.approx(vt.now)]


async def test_abandoned_slot_is_held_until_the_vendor_would_have_ended_it() -> None:
    vt = VirtualTime()
    limiter = make(vt, 2, 1000)
    t0 = vt.now
    async with limiter.slot() as grant:
        await vt.advance(0.25)
        grant.sent()
        await vt.advance(2)  # our timeout
        grant.abandon(5)  # the vendor may work on it for 5 s after the send
    assert (limiter.in_flight, limiter.held) == (0, 1)
    snap = limiter.snapshot()
    assert (snap["held"], snap["abandoned"]) == (1, 1)

    starts = await grant_times(vt, limiter, 3, hold_s=100)
    # One slot is free: the first goes at once; the second waits for the held slot.
    assert starts[0] == pytest.approx(t0 + 2.25, abs=0.01)
    assert starts[1] == pytest.approx(t0 + 0.25 + 5, abs=0.01)
    assert starts[2] == pytest.approx(t0 + 2.25 + 100, abs=0.01)
    assert limiter.held == 0
    assert limiter.peak_in_flight == 2


async def test_abandoned_before_sending_counts_from_the_grant() -> None:
    vt = VirtualTime()
    limiter = make(vt, 1, 1000)
    t0 = vt.now
    async with limiter.slot() as grant:
        grant.abandon(3)
    starts = await grant_times(vt, limiter, 1)
    assert starts == [pytest.approx(t0 + 3)]


async def test_hold_already_over_frees_the_slot_at_once() -> None:
    vt = VirtualTime()
    limiter = make(vt, 1, 1000)
    async with limiter.slot() as grant:
        grant.sent()
        await vt.advance(5)
        grant.abandon(2)
    assert limiter.held == 0
    assert limiter.abandoned == 1
    assert await grant_times(vt, limiter, 1) == [vt.now]


async def test_aclose_cancels_hold_timers_and_frees_their_slots() -> None:
    vt = VirtualTime()
    limiter = make(vt, 1, 1000)
    async with limiter.slot() as grant:
        grant.abandon(3600)
    assert limiter.held == 1
    mine = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not mine]  # the timer
    await limiter.aclose()
    assert [t for t in asyncio.all_tasks() if t is not mine] == []
    assert limiter.held == 0
    async with limiter as same:  # a closed limiter no longer holds anything
        async with same.slot() as grant:
            grant.abandon(3600)
        assert limiter.held == 0


async def test_cancelled_waiter_gives_back_its_parallel_slot() -> None:
    vt = VirtualTime()
    limiter = make(vt, 1, 1)
    async with limiter.slot():
        pass
    waiter = asyncio.ensure_future(calls(vt, limiter, 1))
    await vt.advance(0.1)  # parallel slot taken, sleeping for its token
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    starts = await grant_times(vt, limiter, 1)
    assert len(starts) == 1


@pytest.mark.parametrize("stall_s", [0.004, 0.05, 0.2])
async def test_a_late_wake_up_is_caught_up(stall_s: float) -> None:
    """A busy event loop (here: one call blocking it for ``stall_s``) makes the waiting
    tokens late; the pace then lets the next ones come sooner until the schedule is met
    again, so the stall is not paid again by every later token. The window still holds."""
    vt = VirtualTime()
    limiter = make(vt, 1000, 100)
    starts: list[float] = []

    async def call(i: int) -> None:
        async with limiter.slot():
            starts.append(vt.now)
            if i in (25, 150):
                vt.now += stall_s  # blocking work: no task runs meanwhile

    await vt.run(asyncio.gather(*(call(i) for i in range(301))))
    assert max_in_window(starts, 1.0) <= 100
    # 301 tokens take 30 paces; each stall costs at most itself, once, not per token.
    assert max(starts) - min(starts) <= 30 * limiter.throttle_period_s + 2 * stall_s + 1e-6


async def test_steady_lateness_does_not_add_up() -> None:
    """Every call keeps the loop busy for 2 ms (a page decoding), so the tenth token of a
    burst is taken 18 ms after it was due: the schedule must not slide by that each time."""
    vt = VirtualTime()
    limiter = make(vt, 1000, 100)
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(vt.now)
            vt.now += 0.002

    await vt.run(asyncio.gather(*(call() for _ in range(301))))
    assert max_in_window(starts, 1.0) <= 100
    assert max(starts) - min(starts) <= 30 * limiter.throttle_period_s + 0.02
