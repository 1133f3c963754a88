"""Blackout windows: parsing, the time left, config errors, and a call that waits one out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web

from service.config import Settings, blackout_remaining_s, parse_window
from service.http import HttpClient, RetryPolicy, VendorLimiter

W = [parse_window("05:58-06:10"), parse_window("23:50-00:10")]


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 3, 1, hh, mm, ss, tzinfo=UTC)


def test_windows() -> None:
    assert parse_window("05:58-06:10") == (358, 370)
    assert blackout_remaining_s(W, at(6, 0)) == 600
    assert blackout_remaining_s(W, at(6, 10)) == 0
    assert blackout_remaining_s(W, at(5, 57, 59)) == 0
    assert blackout_remaining_s(W, at(23, 55)) == 15 * 60  # wraps midnight
    assert blackout_remaining_s(W, at(0, 5)) == 5 * 60
    for bad in ("6-7", "25:00-01:00", "06:00-06:00", "06:61-07:00"):
        with pytest.raises(ValueError, match=r"window|time of day"):
            parse_window(bad)


def test_a_bad_window_names_its_key() -> None:
    with pytest.raises(ValueError, match="blackouts"):
        Settings(vendors={"imis": {"base_url": "http://127.0.0.1:9", "blackouts": ["6-7"]}})


@pytest.fixture
async def down_for_a_moment() -> AsyncIterator[tuple[str, list[float]]]:
    """A vendor that answers 503 for the first 0.4 s (a restore window), then 200."""
    hits: list[float] = []
    back_at = time.monotonic() + 0.4

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if time.monotonic() < back_at:
            return web.Response(status=503)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


async def test_a_call_failing_in_a_blackout_waits_for_its_end_without_spending_retries(
    down_for_a_moment: tuple[str, list[float]],
) -> None:
    url, hits = down_for_a_moment
    window_ends = time.monotonic() + 0.45
    no_retries = RetryPolicy(max_attempts=1)
    async with HttpClient() as http:
        client = http.register("imis", url, limiter=VendorLimiter("imis", 2, 100), retry=no_retries)
        client.blackout = lambda _now: max(0.0, window_ends - time.monotonic())
        resp = await client.request("GET", "/x")
    assert resp.status == 200
    assert len(hits) == 2  # one failure inside the window, one call after it
    assert hits[1] >= window_ends - 0.01


async def test_a_call_sent_inside_a_window_that_fails_after_it_is_retried_free() -> None:
    """The 503 of a call sent during the window may arrive after the window ended."""
    from datetime import timedelta

    hits: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) == 1:
            await asyncio.sleep(0.3)  # answered after the window closed
            return web.Response(status=503)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    window_ends = datetime.now(UTC) + timedelta(seconds=0.15)
    try:
        async with HttpClient() as http:
            client = http.register(
                "imis",
                f"http://127.0.0.1:{port}",
                limiter=VendorLimiter("imis", 2, 100),
                retry=RetryPolicy(max_attempts=1),
            )
            client.blackout = lambda now: max(0.0, (window_ends - now).total_seconds())
            resp = await client.request("GET", "/x")
    finally:
        await runner.cleanup()
    assert resp.status == 200
    assert len(hits) == 2
