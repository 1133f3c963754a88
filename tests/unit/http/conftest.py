"""Shared fakes for the HTTP layer tests: a clock whose sleep advances it instantly."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse

from service.http import HttpClient, RetryPolicy, VendorClient, VendorLimiter

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BASE = "https://api.acme.test/v1"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class _CompatClientResponse(ClientResponse):
    """aiohttp 3.14 made ``stream_writer`` a required argument; aioresponses 0.7.9 does
    not pass it (pnuckowski/aioresponses#289). A finished upload needs only its size."""

    def __init__(self, *args: Any, stream_writer: Any = None, **kwargs: Any) -> None:
        if stream_writer is None:
            stream_writer = SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=stream_writer, **kwargs)


_NEEDS_SHIM = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses.aioresponses]:
    """aioresponses, made to work with the installed aiohttp."""
    if _NEEDS_SHIM:
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _CompatClientResponse)
    with aioresponses.aioresponses() as m:
        yield m


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def client(fake: FakeTime) -> AsyncIterator[HttpClient]:
    async with HttpClient(
        clock=fake.clock, sleep=fake.sleep, now=lambda: NOW, rng=random.Random(7)
    ) as c:
        yield c


RegisterVendor = Callable[..., VendorClient]


@pytest.fixture
def register(client: HttpClient, fake: FakeTime) -> RegisterVendor:
    def make(vendor: str = "acme", *, max_parallel: int = 4, **kw: Any) -> VendorClient:
        limiter = VendorLimiter(
            vendor, max_parallel, rate_per_s=1000, clock=fake.clock, sleep=fake.sleep
        )
        kw.setdefault("retry", RetryPolicy(max_attempts=4, base_s=0.5, max_backoff_s=4))
        return client.register(vendor, kw.pop("base_url", BASE), limiter=limiter, **kw)

    return make
