"""Paging and polling for connectors: pure policy plus small drivers that take the clock.

* ``follow_next``: follow a next link to the end (Amilia ``Paging.Next``, OData
  ``@odata.nextLink``); a link seen twice is a pagination loop, not an endless walk.
* ``walk_pages``: page/perPage or offset/limit with a total: the first page tells the
  total, the rest are fetched concurrently (the vendor limiter is the only brake) and
  yielded in order; without a total it follows the pages one by one.
* ``poll_job``: create → poll with backoff → done, or ``JobTimeout`` at the deadline.

Nothing here sleeps or reads the time on its own: ``clock``/``sleep`` come from the
stream context, so tests run on fake time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.errors import FatalError, ParseError

T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page as a connector parsed it: its items, and what it says about the rest."""

    items: list[T]
    next: str | None = None  # a next link, when the vendor gives one
    total: int | None = None  # total item count, when the vendor gives one


def remaining_pages(total: int, per_page: int, *, first: int = 1) -> list[int]:
    """Page numbers after ``first`` needed to cover ``total`` items (page numbering)."""
    if per_page < 1:
        raise ValueError("per_page must be >= 1")
    count = max(1, -(-total // per_page))
    return list(range(first + 1, first + count))


def remaining_offsets(total: int, limit: int, *, start: int = 0) -> list[int]:
    """Offsets after ``start`` needed to cover ``total`` items (offset/limit paging)."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    return list(range(start + limit, total, limit))


async def fetch_in_order(
    keys: Sequence[K],
    fetch: Callable[[K], Awaitable[T]],
    *,
    max_parallel: int,
    ahead: int | None = None,
) -> AsyncGenerator[T, None]:
    """``fetch(k)`` for every key, at most ``max_parallel`` at once, yielded in key order.

    Up to ``ahead`` results (default: ``max_parallel``) may wait, done, behind one that is
    slow: one slow response then does not stop the others (head-of-line blocking would
    leave the vendor's budget unspent); it bounds the memory of results held.

    Cancellation-safe: when the consumer stops early, fails or is cancelled, every task
    still running is cancelled and awaited before this generator returns. A failed fetch
    cancels the others and its error surfaces here.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be >= 1")
    window = max_parallel + (max_parallel if ahead is None else max(0, ahead))
    running = asyncio.Semaphore(max_parallel)

    async def one(key: K) -> T:
        async with running:  # FIFO: keys start in order
            return await fetch(key)

    pending: dict[int, asyncio.Task[T]] = {}
    next_start = 0
    try:
        for i in range(len(keys)):
            while next_start < len(keys) and len(pending) < window:
                pending[next_start] = asyncio.ensure_future(one(keys[next_start]))
                next_start += 1
            task = pending[i]
            while not task.done():
                # Wake on any completion: a failure anywhere stops the walk at once.
                done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if not finished.cancelled() and finished.exception() is not None:
                        finished.result()
            del pending[i]
            yield task.result()
    finally:
        for task in pending.values():
            task.cancel()
        for task in pending.values():
            with contextlib.suppress(BaseException):
                await task


async def follow_next(
    first: str, fetch: Callable[[str], Awaitable[Page[T]]], *, max_pages: int = 1_000_000
) -> AsyncIterator[Page[T]]:
    """Fetch ``first`` and every page its next links lead to, one after another."""
    seen: set[str] = set()
    url: str | None = first
    while url is not None:
        if url in seen or len(seen) >= max_pages:
            raise ParseError(f"pagination loop: {url} was already read")
        seen.add(url)
        page = await fetch(url)
        yield page
        url = page.next


async def walk_pages(
    fetch_page: Callable[[int], Awaitable[Page[T]]],
    *,
    first: int,
    per_page: int,
    max_parallel: int,
    offsets: bool = False,
) -> AsyncIterator[Page[T]]:
    """The first page, then the rest: concurrently and in order when it gave a total,
    else one by one while pages come back full.

    ``fetch_page`` takes a page number (``offsets=False``) or an offset (``offsets=True``).
    """
    head = await fetch_page(first)
    yield head
    if head.total is not None:
        rest = (
            remaining_offsets(head.total, per_page, start=first)
            if offsets
            else remaining_pages(head.total, per_page, first=first)
        )
        async with contextlib.aclosing(
            fetch_in_order(rest, fetch_page, max_parallel=max_parallel)
        ) as pages:
            async for page in pages:
                yield page
        return
    page, position = head, first
    while len(page.items) >= per_page:
        position += per_page if offsets else 1
        page = await fetch_page(position)
        yield page


class JobTimeout(FatalError):
    """A vendor job did not finish by its deadline."""


class JobFailed(FatalError):
    """The vendor reports the job failed."""


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Poll after ``min_interval_s``, growing by ``factor`` up to ``max_interval_s``; give up
    ``deadline_s`` after the job was created."""

    min_interval_s: float = 1.0
    max_interval_s: float = 30.0
    factor: float = 2.0
    deadline_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.min_interval_s <= self.max_interval_s:
            raise ValueError("need 0 < min_interval_s <= max_interval_s")
        if self.factor < 1 or self.deadline_s <= 0:
            raise ValueError("need factor >= 1 and deadline_s > 0")

    def delay_s(self, attempt: int) -> float:
        """The wait before poll number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 64)
        return float(min(self.max_interval_s, self.min_interval_s * self.factor**exponent))


@dataclass(slots=True)
class JobStatus(Generic[T]):
    """What one poll found: ``done`` (with ``result``), ``failed`` (with ``error``), or
    still running (``state`` for logs and progress)."""

    state: str
    done: bool = False
    failed: bool = False
    error: str | None = None
    result: T | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def poll_job(
    check: Callable[[], Awaitable[JobStatus[T]]],
    policy: PollPolicy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[Any]],
    what: str = "job",
    on_poll: Callable[[JobStatus[T]], None] | None = None,
) -> JobStatus[T]:
    """Poll ``check`` with backoff until the job is done (returned) or failed
    (``JobFailed``), or raise ``JobTimeout`` once ``policy.deadline_s`` has passed."""
    deadline = clock() + policy.deadline_s
    attempt = 0
    while True:
        attempt += 1
        delay = policy.delay_s(attempt)
        if clock() + delay > deadline:
            raise JobTimeout(f"{what} not finished after {policy.deadline_s:.0f}s")
        await sleep(delay)
        status = await check()
        if on_poll is not None:
            on_poll(status)
        if status.failed:
            raise JobFailed(f"{what} failed: {status.error or status.state}")
        if status.done:
            return status
