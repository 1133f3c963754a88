"""VendorLimiter: the one place a vendor's parallelism and request rate are enforced.

A slot is, in this order: a parallel slot (FIFO semaphore), then the pause and fence
(vendor-wide holds), then a rate token. The token is stamped immediately before the
request goes out; taking a token and then queueing on the semaphore would let tokens of
one window be spent together in the next, and the vendor would see a burst above its cap.

Rate, two logs:
* the *window* (the guarantee): the send times of the newest L tokens, for a limit of L
  per period; a token is due once the oldest of them is a period old. Sends are logged
  when their headers actually left (``Grant.sent``), so no window of the period ever
  holds more than L sends.
* the *pace* (the shape): ``burst`` per ``period * burst / L`` (``burst`` divides L, about
  L/10 by default), so the L requests of a window do not leave together (a simultaneous
  burst opens many cold connections whose setup delays the first arrivals, and the next,
  warm window then lands closer to them than the margin allows). The pace logs when
  tokens were *due*, not when they were taken: a wake-up late by a busy event loop (ten
  pages decoding at once) is caught up afterwards instead of slowing every later token,
  up to half a ``throttle_period_s`` behind (more would send bigger bursts, which a busy
  vendor stamps over a longer spread, eating the margin). ``burst=L`` gives plain windows.

Only the task at the head of a FIFO gate waits for a token, pause or fence, and it sleeps
exactly until the moment it can go: no polling. Every read of time goes through the
injected ``clock`` and every wait through the injected ``sleep``.

Abandoned requests: a request we gave up on (our timeout, a connection we dropped) may
still run at the vendor, and the vendor counts it against its parallel cap. The client
calls ``Grant.abandon(hold_s)``; the parallel slot then stays taken until ``hold_s``
after the request was sent, released by a timer task the limiter owns (``aclose()``).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
REDATE_ALLOWANCE_S = 0.005
ON_SCHEDULE_S = 0.001


def default_burst(limit: int) -> int:
    """The largest divisor of ``limit`` not above a tenth of it (at least 1)."""
    cap = max(1, limit // 10)
    return next(b for b in range(cap, 0, -1) if limit % b == 0)


class Grant:
    """What ``slot()`` yields: when the slot was granted and how long the caller waited.

    Call ``sent()`` when the request has actually left (its headers are written): the
    rate token is then re-dated to that moment, so a delay between grant and send (a
    busy event loop, a slow connection setup) cannot bunch requests up at the vendor.
    Call ``abandon(hold_s)`` when we give up on a request the vendor may still be
    working on: its parallel slot stays taken until ``hold_s`` after it was sent.
    """

    __slots__ = ("_limiter", "granted_at", "hold_s", "sent_at", "stamp", "wait_s")

    def __init__(
        self, limiter: VendorLimiter | None, wait_s: float, granted_at: float, stamp: float
    ) -> None:
        self._limiter = limiter
        self.wait_s = wait_s
        self.granted_at = granted_at
        self.stamp = stamp  # this request's entry in the rate log
        self.sent_at: float | None = None
        self.hold_s: float | None = None

    def sent(self) -> None:
        if self._limiter is not None:
            self._limiter._sent(self)

    def abandon(self, hold_s: float) -> None:
        self.hold_s = max(hold_s, self.hold_s or 0.0)

    def release_at(self) -> float | None:
        """When an abandoned request's slot frees (None: not abandoned)."""
        if self.hold_s is None:
            return None
        start = self.sent_at if self.sent_at is not None else self.granted_at
        return start + self.hold_s


class VendorLimiter:
    """Semaphore(max_parallel) + sliding-window rate limit + vendor-wide pause and fence.

    ``async with limiter.slot():`` around one HTTP exchange (request sent → body read).
    No window of ``period_s`` sees more than ``floor(rate_per_s * period_s)`` slot starts
    (at least one; a rate below one per period stretches the period instead), released
    ``burst`` at a time. The period is stretched by ``safety_margin`` because the server
    counts arrivals, and wire jitter must not squeeze one more into its window.

    Owns the timers of abandoned slots: ``await limiter.aclose()`` (or ``async with``)
    when done with it.
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
        self._gate = asyncio.Lock()  # FIFO; only its holder waits for token/pause/fence
        self._stamps: list[float] = []  # the window: newest `rate_limit` sends, ascending
        self._pace: list[float] = []  # the pace: newest `burst` due times, ascending
        self._paused_until = -math.inf
        self._unfenced = asyncio.Event()
        self._unfenced.set()
        self._timers: set[asyncio.Task[None]] = set()
        self._closed = False
        self.fence_reason: str | None = None
        self.slots_granted = 0
        self.wait_total_s = 0.0
        self.wait_max_s = 0.0
        self.in_flight = 0
        self.held = 0  # slots of abandoned requests the vendor may still be working on
        self.abandoned = 0
        self.peak_in_flight = 0  # in flight + held: what the vendor may see at once
        self.pauses = 0

    def __repr__(self) -> str:
        return (
            f"VendorLimiter({self.vendor!r}, max_parallel={self.max_parallel}, "
            f"rate={self.rate_limit}/{self.period_s:.3f}s, burst={self.burst})"
        )

    # vendor-wide holds -------------------------------------------------------------------
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

    # rate logs --------------------------------------------------------------------------
    def _window_due(self) -> float:
        if len(self._stamps) < self.rate_limit:
            return -math.inf
        return self._stamps[0] + self.period_s

    def _pace_due(self) -> float:
        if len(self._pace) < self.burst:
            return -math.inf
        return self._pace[0] + self.throttle_period_s

    def _log(self, stamp: float) -> None:
        bisect.insort(self._stamps, stamp)
        del self._stamps[: -self.rate_limit]

    async def _take_token(self) -> float:
        """Wait (as the gate holder) until unfenced, unpaused and a token is due; log it.

        Returns the token's stamp in the window log. A token that was waited for is
        stamped up to ``ON_SCHEDULE_S`` before the (late) wake-up: timer wake-ups run
        about a millisecond late, and logged as is, the window would slide by that much
        each time. Stamps never precede their due time, so the window log itself never
        holds more than ``rate_limit`` per ``period_s``.
        """
        while True:
            await self._unfenced.wait()
            now = self._clock()
            window, pace = self._window_due(), self._pace_due()
            wait_s = max(window, pace, self._paused_until) - now
            if wait_s <= 0:
                break
            await self._sleep(wait_s)
        bisect.insort(
            self._pace, now if pace == -math.inf else max(pace, now - self.throttle_period_s / 2)
        )
        del self._pace[: -self.burst]
        stamp = now if window == -math.inf else max(window, now - ON_SCHEDULE_S, self._stamps[-1])
        self._log(stamp)
        return stamp

    def _sent(self, grant: Grant) -> None:
        """Move a grant's rate stamp to when it was really sent.

        Only the delay beyond ``REDATE_ALLOWANCE_S`` counts: the ordinary grant→send time
        (a millisecond or two) would otherwise be added to every interval and cost rate,
        while a stall longer than that must not bunch requests up at the vendor. A stamp
        already pushed out of the log by newer ones is logged again (conservative).
        """
        now = self._clock()
        if grant.sent_at is None:
            grant.sent_at = now
        redated = now - REDATE_ALLOWANCE_S
        if redated <= grant.stamp:
            return
        index = bisect.bisect_left(self._stamps, grant.stamp)
        if index < len(self._stamps) and self._stamps[index] == grant.stamp:
            del self._stamps[index]
        grant.stamp = redated
        self._log(redated)

    # slots -------------------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Grant]:
        """Hold one parallel slot and one rate token for the duration of the block."""
        start = self._clock()
        await self._sem.acquire()
        try:
            async with self._gate:
                stamp = await self._take_token()
        except BaseException:
            self._sem.release()
            raise
        granted = self._clock()
        wait_s = granted - start
        self.slots_granted += 1
        self.wait_total_s += wait_s
        self.wait_max_s = max(self.wait_max_s, wait_s)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight + self.held)
        grant = Grant(self, wait_s, granted, stamp)
        try:
            yield grant
        finally:
            self.in_flight -= 1
            self._end(grant)

    def _end(self, grant: Grant) -> None:
        until = grant.release_at()
        if until is not None:
            self.abandoned += 1
        if until is None or until <= self._clock() or self._closed:
            self._sem.release()
            return
        self.held += 1
        timer = asyncio.get_running_loop().create_task(
            self._hold(until), name=f"limiter {self.vendor}: abandoned slot"
        )
        self._timers.add(timer)
        # A callback, not a `finally`: it also runs for a timer cancelled before it started.
        timer.add_done_callback(self._release_held)

    async def _hold(self, until: float) -> None:
        while (left_s := until - self._clock()) > 0:
            await self._sleep(left_s)

    def _release_held(self, timer: asyncio.Task[None]) -> None:
        self._timers.discard(timer)
        self.held -= 1
        self._sem.release()

    # lifecycle ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel the timers of abandoned slots (their slots are freed); later
        abandoned slots are freed at once. Idempotent."""
        self._closed = True
        timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        if timers:
            await asyncio.wait(timers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
            "held": self.held,
            "abandoned": self.abandoned,
            "peak_in_flight": self.peak_in_flight,
            "pauses": self.pauses,
            "paused_for_s": self.paused_for_s(),
            "fenced": self.fenced,
        }
