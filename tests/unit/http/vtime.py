"""Virtual time for tests: many concurrent sleepers, time jumps only when all are idle."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
SETTLE_STEPS = 50  # loop turns that let every runnable task reach its next await


class VirtualTime:
    """``clock``/``sleep`` for code under test; ``run(aw)`` drives it to completion.

    Sleepers wake in deadline order; the clock jumps to the next deadline only once
    every task has settled, so no real time passes and none is skipped.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), fut))
        await fut

    async def settle(self) -> None:
        for _ in range(SETTLE_STEPS):
            await asyncio.sleep(0)

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleeper
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, waking sleepers on the way."""
        end = self.now + seconds
        await self.settle()
        while (due := self._next_deadline()) is not None and due <= end:
            self.now = max(self.now, due)
            heapq.heappop(self._sleepers)[2].set_result(None)
            await self.settle()
        self.now = end
        await self.settle()

    async def run(self, aw: Awaitable[T], max_s: float = 3600.0) -> T:
        """Await ``aw`` in virtual time; fails if it blocks on anything but a sleep."""
        task = asyncio.ensure_future(aw)
        limit = self.now + max_s
        await self.settle()
        while not task.done():
            due = self._next_deadline()
            if due is None or due > limit:
                task.cancel()
                raise AssertionError(f"blocked at t={self.now} with no sleeper due")
            self.now = max(self.now, due)
            heapq.heappop(self._sleepers)[2].set_result(None)
            await self.settle()
        return task.result()
