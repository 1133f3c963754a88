"""A cancellation-safe bounded fetch: many small requests, a few at a time.

``bounded_fetch`` runs ``fetch_one`` over ``items`` with at most ``max_parallel`` running
and yields results as they complete. It owns its tasks: when the consumer stops early
(``aclose()``, an exception, or cancellation) every fetch still running is cancelled and
awaited before the generator returns; the first failure cancels the others and is
raised to the consumer. Nothing here paces requests: the vendor limiter does that.

Consume it under ``contextlib.aclosing`` so an early stop closes it at once rather than
when the garbage collector finds it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def bounded_fetch(
    items: Iterable[T],
    fetch_one: Callable[[T], Awaitable[R]],
    max_parallel: int,
    *,
    buffer: int | None = None,
) -> AsyncGenerator[R, None]:
    """Yield ``await fetch_one(item)`` for every item, in completion order.

    At most ``max_parallel`` fetches run at once, and at most ``buffer`` (default
    ``max_parallel``) finished results wait for the consumer, so fetching goes on while
    the consumer is busy with a result, but memory stays bounded.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be >= 1")
    buffer = max_parallel if buffer is None else max(buffer, 0)
    todo = iter(items)
    running: set[asyncio.Future[R]] = set()
    finished: deque[asyncio.Future[R]] = deque()
    wake = asyncio.Event()
    stopped = False  # no items left, a fetch failed or the consumer left
    failed = False

    def on_done(task: asyncio.Future[R]) -> None:
        nonlocal stopped, failed
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if not failed:
                failed = stopped = True
                for other in running:
                    other.cancel()
            finished.appendleft(task)  # raise it before any result still waiting
        else:
            finished.append(task)
            start_more()
        wake.set()

    def start_more() -> None:
        nonlocal stopped
        while (
            not stopped
            and len(running) < max_parallel
            and len(running) + len(finished) < max_parallel + buffer
        ):
            try:
                item = next(todo)
            except StopIteration:
                stopped = True
                return
            task = asyncio.ensure_future(fetch_one(item))
            running.add(task)
            task.add_done_callback(on_done)

    try:
        start_more()
        while running or finished:
            if not finished:
                wake.clear()
                await wake.wait()
                continue
            task = finished.popleft()
            start_more()
            yield task.result()  # a failed fetch raises here; `finally` stops the rest
    finally:
        stopped = True
        for task in running:
            task.cancel()
        while running:
            await asyncio.wait(list(running))
        for task in finished:  # mark failures as seen: they are superseded by ours
            if not task.cancelled():
                task.exception()
