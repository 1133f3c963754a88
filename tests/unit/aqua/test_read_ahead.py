"""read_ahead: items in order, errors raised in the consumer, nothing left running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from service.connectors.aqua import read_ahead
from service.errors import ParseError


async def numbers(
    n: int, closed: list[bool], fail_at: int | None = None
) -> AsyncGenerator[Any, None]:
    try:
        for i in range(n):
            if i == fail_at:
                raise ParseError("broken at 3")
            yield [{"i": i}]
            await asyncio.sleep(0)
    finally:
        closed.append(True)


async def test_items_arrive_in_order_and_errors_reach_the_consumer() -> None:
    closed: list[bool] = []
    got = [item async for item in read_ahead(numbers(10, closed), 2)]
    assert got == [[{"i": i}] for i in range(10)]
    seen: list[Any] = []

    async def consume() -> None:
        async for item in read_ahead(numbers(10, closed, fail_at=3), 2):
            seen.append(item)

    with pytest.raises(ParseError, match="broken at 3"):
        await consume()
    assert len(seen) == 3
    assert closed == [True, True]


async def test_leaving_early_stops_the_producer() -> None:
    closed: list[bool] = []
    before = len(asyncio.all_tasks())
    async with contextlib.aclosing(read_ahead(numbers(10_000, closed), 3)) as items:
        async for _ in items:
            break
    assert closed == [True]
    assert len(asyncio.all_tasks()) == before
