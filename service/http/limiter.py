"""VendorLimiter: the one place a vendor's parallelism and request rate are enforced.

``asyncio_throttle.Throttler`` (1.0.2) keeps a log of grant times and lets a caller in
while fewer than ``rate_limit`` grants lie within the last ``period`` seconds: a sliding
window, so no window of ``period`` ever holds more than ``rate_limit`` grants. Its
weaknesses are wrapped here rather than replaced:

* every waiter polls ``asyncio.sleep(retry_interval)`` on its own and whoever wakes first
  wins, so it is neither FIFO nor cheap with many waiters. A FIFO ``asyncio.Lock`` in
  front of ``acquire()`` lets exactly one task wait on it; the rest queue on the lock.
* polling makes every grant late by up to ``retry_interval``, which costs throughput.
  The gate holder first sleeps until the oldest logged grant leaves the window (read
  from the throttler's log), so ``acquire()`` then succeeds without polling.
* it reads ``time.monotonic()`` itself, so its clock cannot be injected; tests of the
  rate use real time with small numbers. Pauses use the injected clock and sleep.

Bursts are smoothed: a limit of L per period is enforced as ``burst`` per
``period * burst / L`` (``burst`` divides L, about L/10 by default). Every window of
``period`` still holds at most L, but the L requests of a window no longer leave
together; a simultaneous burst opens many cold connections whose setup delays the
first arrivals, and the next, warm window then lands closer to them than the margin
allows (seen in tests). ``burst=L`` restores plain windows.

Order inside ``slot()`` matters: semaphore, then pause, then throttle, so the throttle's
timestamp is taken immediately before the request goes out. Taking a throttle token and
then queueing on the semaphore (or a pause) would let tokens from one window be spent
together in the next, and the server would see a burst above the cap.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from asyncio_throttle import Throttler

Clock = Callable[[], float]
REDATE_ALLOWANCE_S = 0.005
ON_SCHEDULE_S = 0.001
Sleep = Callable[[float], Awaitable[Any]]


def default_burst(limit: int) -> int:
    """The largest divisor of ``limit`` not above a tenth of it (at least 1)."""
    cap = max(1, limit // 10)
    return next(b for b in range(cap, 0, -1) if limit % b == 0)


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``slot()`` yields: how long this caller waited for it.

    Call ``sent()`` when the request has actually left (its headers are written): the
    rate token is then re-dated to that moment, so a delay between grant and send (a
    busy event loop, a slow connection setup) cannot bunch requests up at the vendor.
    """

    wait_s: float
    granted_at: float
    on_sent: Callable[[], None] | None = None

    def sent(self) -> None:
        if self.on_sent is not None:
            self.on_sent()


class VendorLimiter:
    """Semaphore(max_parallel) + sliding-window rate limit + vendor-wide pause.

    ``async with limiter.slot():`` around one HTTP exchange (request sent → body read).
    No window of ``period_s`` sees more than ``floor(rate_per_s * period_s)`` slot starts
    (at least one; a rate below one per period stretches the period instead), released
    ``burst`` at a time. The period is stretched by ``safety_margin`` because the server
    counts arrivals, and wire jitter must not squeeze one more into its window.
    """

    def __init__(
        self,
        vendor: str,
        max_parallel: int,
        rate_per_s: float,
        *,
        period_s: float = 1.0,
        safety_margin: float = 0.02,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        burst: int | None = None,
        poll_s: float = 0.005,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be >= 1")
        if rate_per_s <= 0 or period_s <= 0:
            raise ValueError("rate_per_s and period_s must be > 0")
        if safety_margin < 0:
            raise ValueError("safety_margin must be >= 0")
        self.vendor = vendor
        self.max_parallel = max_parallel
        self.rate_per_s = rate_per_s
        self.rate_limit = max(1, math.floor(rate_per_s * period_s + 1e-9))
        # Sub-1 rates (e.g. 0.5/s) need a longer period than period_s.
        self.period_s = max(period_s, self.rate_limit / rate_per_s) * (1 + safety_margin)
        self.burst = default_burst(self.rate_limit) if burst is None else burst
        if self.burst < 1 or self.rate_limit % self.burst:
            raise ValueError(f"burst must divide the per-period limit {self.rate_limit}")
        self.throttle_period_s = self.period_s * self.burst / self.rate_limit
        self._clock = clock
        self._sleep = sleep
        self._sem = asyncio.Semaphore(max_parallel)
        self._gate = asyncio.Lock()  # FIFO; only its holder waits on the throttler
        self._throttler = Throttler(
            rate_limit=self.burst, period=self.throttle_period_s, retry_interval=poll_s
        )
        self._paused_until = -math.inf
        self._unfenced = asyncio.Event()
        self._unfenced.set()
        self.fence_reason: str | None = None
        self.slots_granted = 0
        self.wait_total_s = 0.0
        self.wait_max_s = 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.pauses = 0

    def __repr__(self) -> str:
        return (
            f"VendorLimiter({self.vendor!r}, max_parallel={self.max_parallel}, "
            f"rate={self.rate_limit}/{self.period_s:.3f}s, burst={self.burst})"
        )

    def pause(self, seconds: float) -> None:
        """Hold every new slot of this vendor for ``seconds``; a longer pause extends it.

        Slots already granted are not interrupted.
        """
        if seconds <= 0:
            return
        self.pauses += 1
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def fence(self, reason: str) -> None:
        """Hold every new slot until ``unfence()``: this process cannot prove it still
        holds the vendor's lease, so another process may be driving the vendor.

        Slots already granted are not interrupted (their requests are on the wire).
        """
        self.fence_reason = reason
        self._unfenced.clear()

    def unfence(self) -> None:
        self.fence_reason = None
        self._unfenced.set()

    @property
    def fenced(self) -> bool:
        return not self._unfenced.is_set()

    def paused_for_s(self) -> float:
        """Seconds left in the current pause (0.0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def _wait_pause(self) -> None:
        while True:
            await self._unfenced.wait()
            if (remaining := self._paused_until - self._clock()) <= 0:
                return
            await self._sleep(remaining)

    async def _until_token(self) -> float | None:
        """Sleep until the throttler's oldest grant leaves its window (no polling).

        Returns the moment the token became due (None when one was free at once). Reads
        asyncio-throttle 1.0.2's log; without it, ``acquire()`` just polls.
        """
        log = getattr(self._throttler, "_task_logs", None)
        if log is None or len(log) < self._throttler.rate_limit:
            return None
        due = log[0] + self._throttler.period
        remaining = due - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining + 1e-4)  # it admits only when strictly older
        return due

    def _date_on_schedule(self, due: float | None) -> None:
        """Log a waited-for token up to ``ON_SCHEDULE_S`` before the (late) wake-up.

        Timer wake-ups run about a millisecond late; logged as is, every interval would
        grow by that much and the rate fall short of the cap for nothing. Absorbing at
        most ``ON_SCHEDULE_S`` keeps any span of k+1 starts at least k intervals minus
        that once, far inside the safety margin.
        """
        log = getattr(self._throttler, "_task_logs", None)
        if due is None or not log or log[-1] <= due:
            return
        floor = log[-2] if len(log) > 1 else due
        log[-1] = max(due, floor, log[-1] - ON_SCHEDULE_S)

    def _last_stamp(self) -> float | None:
        log = getattr(self._throttler, "_task_logs", None)
        return log[-1] if log else None

    def _redate(self, stamp: float) -> None:
        """Move a grant's entry in the throttle log to when it was really sent.

        Only the delay beyond ``REDATE_ALLOWANCE_S`` counts: the ordinary grant→send time
        (a millisecond or two) would otherwise be added to every interval and cost rate,
        while a stall longer than that must not bunch requests up at the vendor. Any 11
        sends then span at least ten intervals minus the allowance once (not per request).
        An entry already out of the window needs nothing.
        """
        log = getattr(self._throttler, "_task_logs", None)
        if log is None:
            return
        redated = time.monotonic() - REDATE_ALLOWANCE_S
        if redated <= stamp:
            return
        try:
            log.remove(stamp)
        except ValueError:
            return
        bisect.insort(log, redated)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Grant]:
        """Hold one parallel slot and one rate token for the duration of the block."""
        start = self._clock()
        async with self._sem:
            while True:
                await self._wait_pause()
                async with self._gate:
                    due = await self._until_token()
                    await self._throttler.acquire()
                    self._date_on_schedule(due)
                    stamp = self._last_stamp()
                # A pause or fence that began while we queued on the throttle: the
                # token is spent, but sending now would land in it; take a fresh one.
                if self.paused_for_s() <= 0 and not self.fenced:
                    break
            granted = self._clock()
            wait_s = granted - start
            self.slots_granted += 1
            self.wait_total_s += wait_s
            self.wait_max_s = max(self.wait_max_s, wait_s)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                yield Grant(
                    wait_s=wait_s,
                    granted_at=granted,
                    on_sent=None if stamp is None else lambda: self._redate(stamp),
                )
            finally:
                self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "max_parallel": self.max_parallel,
            "rate_limit": self.rate_limit,
            "period_s": self.period_s,
            "burst": self.burst,
            "throttle_period_s": self.throttle_period_s,
            "slots_granted": self.slots_granted,
            "wait_total_s": self.wait_total_s,
            "wait_max_s": self.wait_max_s,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "pauses": self.pauses,
            "paused_for_s": self.paused_for_s(),
        }
