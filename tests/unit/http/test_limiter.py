"""VendorLimiter: parallelism, sliding-window rate, fairness, vendor-wide pause.

These run on the real clock with small numbers (how the limiter behaves on a real event
loop); ``test_limiter_clock.py`` checks the same rules exactly on virtual time.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from service.http.limiter import REDATE_ALLOWANCE_S, VendorLimiter, default_burst


class FakeTime:
    """A clock whose sleep advances it instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def max_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_never_more_than_max_parallel_inside_slots() -> None:
    limiter = VendorLimiter("acme", max_parallel=3, rate_per_s=1000)
    inside = peak = 0

    async def call() -> None:
        nonlocal inside, peak
        async with limiter.slot():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(30))), 5)
    assert peak == 3
    assert limiter.peak_in_flight == 3
    assert limiter.in_flight == 0
    assert limiter.slots_granted == 30
    assert limiter.wait_max_s > 0
    assert limiter.wait_total_s >= limiter.wait_max_s


async def test_rate_never_exceeded_in_any_window_and_close_to_cap() -> None:
    rate = 20
    limiter = VendorLimiter("acme", max_parallel=40, rate_per_s=rate)
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(time.monotonic())

    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(2 * rate))), 5)
    starts.sort()
    assert len(starts) == 2 * rate
    assert max_in_window(starts, 1.0) <= rate
    # Smoothed, not 20 at once; a late wake-up is caught up, so at most two bursts meet.
    assert max_in_window(starts, 0.1) <= 2 * limiter.burst == 4
    # Steady state: the (i+rate)-th start follows the i-th by one stretched period,
    # so the achieved rate is rate / gap; keep it within 5 % of the cap.
    gap = statistics.median(starts[i + rate] - starts[i] for i in range(rate))
    assert gap >= 1.0 * 1.02 - 0.002
    assert rate / gap >= 0.95 * rate


async def test_rate_with_short_period() -> None:
    # 5 per 0.1 s: 25 slots take ~4 stretched periods.
    limiter = VendorLimiter("acme", max_parallel=25, rate_per_s=50, period_s=0.1)
    assert limiter.rate_limit == 5
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(time.monotonic())

    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(25))), 5)
    assert max_in_window(starts, 0.1) <= 5


def test_fractional_rates_never_exceed_the_cap() -> None:
    assert VendorLimiter("a", 1, 2.5).rate_limit == 2  # 2 per second, not 3
    slow = VendorLimiter("a", 1, 0.5, safety_margin=0)
    assert (slow.rate_limit, slow.period_s, slow.throttle_period_s) == (1, 2.0, 2.0)
    with pytest.raises(ValueError, match="max_parallel"):
        VendorLimiter("a", 0, 1)
    with pytest.raises(ValueError, match="rate_per_s"):
        VendorLimiter("a", 1, 0)


@pytest.mark.parametrize(
    ("limit", "burst"), [(1, 1), (5, 1), (10, 1), (20, 2), (23, 1), (25, 1), (100, 10), (1000, 100)]
)
def test_default_burst_divides_the_limit(limit: int, burst: int) -> None:
    assert default_burst(limit) == burst
    limiter = VendorLimiter("a", 1, limit)
    assert limiter.burst == burst
    # burst per sub-period, L/burst sub-periods per stretched period: L per period.
    assert limiter.throttle_period_s * limit / burst == pytest.approx(limiter.period_s)


def test_burst_must_divide_the_limit() -> None:
    assert VendorLimiter("a", 1, 20, burst=20).throttle_period_s == pytest.approx(1.02)
    with pytest.raises(ValueError, match="burst"):
        VendorLimiter("a", 1, 20, burst=3)


async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = VendorLimiter("acme", max_parallel=1, rate_per_s=100, period_s=0.05)
    order: list[int] = []

    async def call(i: int) -> None:
        async with limiter.slot():
            order.append(i)
            await asyncio.sleep(0)

    tasks = []
    for i in range(15):
        tasks.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0)  # enqueue in a known order
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == list(range(15))


async def test_pause_blocks_every_new_slot() -> None:
    limiter = VendorLimiter("acme", max_parallel=5, rate_per_s=1000)
    async with limiter.slot():
        pass
    t0 = time.monotonic()
    limiter.pause(0.15)
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(time.monotonic() - t0)

    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(8))), 5)
    assert len(starts) == 8
    assert min(starts) >= 0.15 - 0.005
    assert limiter.pauses == 1


async def test_pause_does_not_interrupt_granted_slots() -> None:
    limiter = VendorLimiter("acme", max_parallel=2, rate_per_s=1000)
    async with limiter.slot():
        limiter.pause(60)  # e.g. this request just got a 429
        assert limiter.in_flight == 1  # still ours to finish
    assert limiter.paused_for_s() > 59


def test_later_longer_pause_extends_shorter_does_not_shorten() -> None:
    fake = FakeTime()
    limiter = VendorLimiter("acme", 1, 10, clock=fake.clock, sleep=fake.sleep)
    assert limiter.paused_for_s() == 0.0
    limiter.pause(10)
    fake.now += 2
    limiter.pause(3)  # ends before the current pause: no change
    assert limiter.paused_for_s() == pytest.approx(8)
    limiter.pause(20)
    assert limiter.paused_for_s() == pytest.approx(20)
    limiter.pause(0)
    limiter.pause(-1)
    assert limiter.pauses == 3


async def test_pause_waits_on_the_injected_clock() -> None:
    fake = FakeTime()
    limiter = VendorLimiter("acme", 2, 1000, clock=fake.clock, sleep=fake.sleep)
    limiter.pause(30)
    t0 = time.monotonic()
    async with limiter.slot() as grant:
        assert grant.wait_s == pytest.approx(30)
    assert fake.slept == [pytest.approx(30)]
    assert time.monotonic() - t0 < 1  # no real waiting


async def test_pause_that_starts_while_queued_is_honoured() -> None:
    fake = FakeTime()
    limiter = VendorLimiter("acme", 1, 1000, clock=fake.clock, sleep=fake.sleep)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    waiter = asyncio.create_task(_granted_at(limiter))
    await asyncio.sleep(0)
    limiter.pause(5)  # arrives while the waiter queues on the semaphore
    release.set()
    granted = await asyncio.wait_for(waiter, 2)
    await task
    assert granted >= 1005


async def _granted_at(limiter: VendorLimiter) -> float:
    async with limiter.slot() as grant:
        return grant.granted_at


async def test_cancelled_waiter_releases_nothing_it_did_not_hold() -> None:
    limiter = VendorLimiter("acme", max_parallel=1, rate_per_s=1000)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_granted_at(limiter))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await task
    await asyncio.wait_for(_granted_at(limiter), 1)
    assert limiter.in_flight == 0
    assert limiter.slots_granted == 2
    assert "acme" in repr(limiter)
    assert limiter.snapshot()["slots_granted"] == 2


async def test_a_late_send_pushes_the_window_back() -> None:
    """A request that leaves late (a stall after its grant) re-dates its token, so the
    limit-th request after it cannot reach the vendor within one period of it."""
    limiter = VendorLimiter("v", max_parallel=5, rate_per_s=10, safety_margin=0.0)
    async with limiter.slot() as first:
        await asyncio.sleep(0.15)  # e.g. a busy event loop between grant and send
        sent_at = time.monotonic()
        first.sent()
    for _ in range(limiter.rate_limit):
        async with limiter.slot():
            last_at = time.monotonic()
    assert last_at - sent_at >= limiter.period_s - REDATE_ALLOWANCE_S - 0.002
