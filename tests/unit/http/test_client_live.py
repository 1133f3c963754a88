"""The HTTP layer over real sockets: a tiny aiohttp.web server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from service.errors import TransportError
from service.http import HttpClient, RetryPolicy, VendorClient, VendorLimiter
from tests.unit.http.test_limiter import max_in_window

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05, max_elapsed_s=5)


@dataclass
class Server:
    url: str
    hits: dict[str, int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(url="")

    def count(request: web.Request) -> int:
        state.arrivals.append(time.monotonic())
        n = state.hits.get(request.path, 0) + 1
        state.hits[request.path] = n
        return n

    async def slow(request: web.Request) -> web.Response:
        count(request)
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            await asyncio.sleep(float(request.query.get("sleep", "0.02")))
        finally:
            state.in_flight -= 1
        return web.json_response({"ok": True})

    async def truncated_once(request: web.Request) -> web.StreamResponse:
        if count(request) == 1:
            resp = web.StreamResponse(headers={"Content-Length": "1000"})
            await resp.prepare(request)
            await resp.write(b'{"rows": [' + b"1," * 20)
            assert request.transport is not None
            request.transport.close()  # promised 1000 bytes, sent ~50
            return resp
        return web.json_response({"rows": [1, 2, 3]})

    async def reset_once(request: web.Request) -> web.StreamResponse:
        if count(request) == 1:
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # RST, no response at all
            raise asyncio.CancelledError
        return web.json_response({"ok": True})

    async def stream_breaks(request: web.Request) -> web.StreamResponse:
        count(request)
        resp = web.StreamResponse(headers={"Content-Length": str(1 << 20)})
        await resp.prepare(request)
        await resp.write(b"x" * 200_000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    async def big(request: web.Request) -> web.StreamResponse:
        count(request)
        resp = web.StreamResponse()
        resp.content_length = 8 * (1 << 20)
        await resp.prepare(request)
        chunk = b"y" * (1 << 16)
        for _ in range(128):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/truncated", truncated_once)
    app.router.add_get("/reset", reset_once)
    app.router.add_get("/stream-breaks", stream_breaks)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def vendor(
    http: HttpClient, server: Server, max_parallel: int, rate_per_s: float, **kw: object
) -> VendorClient:
    limiter = VendorLimiter("live", max_parallel, rate_per_s)
    kw.setdefault("retry", FAST_RETRY)
    return http.register("live", server.url, limiter=limiter, **kw)  # type: ignore[arg-type]


async def test_limiter_holds_under_30_concurrent_callers(server: Server) -> None:
    http = HttpClient()
    vc = await vendor(http, server, max_parallel=4, rate_per_s=500)
    async with http:
        results = await asyncio.wait_for(
            asyncio.gather(*(vc.request("GET", "slow") for _ in range(30))), 10
        )
    assert all(r.json() == {"ok": True} for r in results)
    assert server.hits["/slow"] == 30
    assert server.peak_in_flight <= 4  # measured by the server
    assert vc.stats.peak_in_flight <= 4
    assert vc.limiter.slots_granted == 30


async def test_rate_cap_holds_as_the_server_counts(server: Server) -> None:
    http = HttpClient()
    vc = await vendor(http, server, max_parallel=30, rate_per_s=20)
    async with http:
        await asyncio.wait_for(
            asyncio.gather(*(vc.request("GET", "slow", params={"sleep": "0"}) for _ in range(30))),
            10,
        )
    assert max_in_window(server.arrivals, 1.0) <= 20
    assert vc.stats.peak_per_s <= 20


async def test_truncated_body_is_retried(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=2, rate_per_s=100)
        resp = await asyncio.wait_for(vc.request("GET", "truncated"), 5)
    assert resp.json() == {"rows": [1, 2, 3]}
    assert server.hits["/truncated"] == 2
    assert vc.stats.retries == 1
    assert vc.stats.errors["ClientPayloadError"] == 1


async def test_connection_reset_is_retried(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=2, rate_per_s=100)
        resp = await asyncio.wait_for(vc.request("GET", "reset"), 5)
    assert resp.json() == {"ok": True}
    assert server.hits["/reset"] == 2
    assert vc.stats.retries == 1
    assert sum(vc.stats.errors.values()) == 1
    # One limiter slot per arrival: aiohttp's own silent re-send is switched off.
    assert vc.limiter.slots_granted == 2


async def test_stream_retried_when_reset_before_first_byte(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=1, rate_per_s=100)
        async with vc.stream("GET", "reset") as resp:
            body = await resp.read()
    assert body == b'{"ok": true}'
    assert server.hits["/reset"] == 2
    assert vc.stats.retries == 1


async def test_read_timeout_gives_up_after_bounded_attempts(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=2, rate_per_s=100, timeout_s=0.1)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            await vc.request("GET", "slow", params={"sleep": "0.5"})
    assert time.monotonic() - t0 < 1.5
    assert server.hits["/slow"] == FAST_RETRY.max_attempts


async def test_stream_break_after_handing_out_bytes_is_not_retried(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=1, rate_per_s=100)
        received = 0

        async def drain() -> None:
            nonlocal received
            async with vc.stream("GET", "stream-breaks") as resp:
                async for chunk in resp.iter_chunks(1 << 14):
                    received += len(chunk)

        with pytest.raises(TransportError):
            await drain()
        assert vc.limiter.in_flight == 0
    assert 0 < received < 1 << 20
    assert server.hits["/stream-breaks"] == 1


async def test_stream_reads_large_body_in_bounded_chunks(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, max_parallel=1, rate_per_s=100)
        total = biggest = 0
        async with vc.stream("GET", "big", chunk_size=1 << 15) as resp:
            async for chunk in resp.iter_chunks(1 << 15):
                total += len(chunk)
                biggest = max(biggest, len(chunk))
    assert total == 8 * (1 << 20)
    assert biggest <= 1 << 15


# Abandoned requests: the server keeps working after we hang up (aiohttp's default), so
# its own in-flight count shows whether we sent more than our cap.


async def test_timed_out_request_keeps_its_slot_until_the_vendor_is_done(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(
            http, server, 1, 1000, timeout_s=0.1, vendor_timeout_s=1.0, retry=RetryPolicy(1)
        )
        with pytest.raises(TransportError, match="timed out"):
            await vc.request("GET", "slow", params={"sleep": "0.3"})
        assert (vc.limiter.held, vc.stats.abandoned) == (1, 1)
        await asyncio.wait_for(vc.request("GET", "slow", params={"sleep": "0"}), 5)
        await vc.limiter.aclose()
    assert server.hits["/slow"] == 2
    assert server.peak_in_flight == 1  # the second waited for the first to end there


async def test_cancelled_request_keeps_its_slot(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, 1, 1000, vendor_timeout_s=30)
        task = asyncio.create_task(vc.request("GET", "slow", params={"sleep": "0.3"}))
        while server.in_flight == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (vc.limiter.in_flight, vc.limiter.held) == (0, 1)
        await vc.limiter.aclose()
        assert vc.limiter.held == 0


async def test_request_the_vendor_ended_frees_its_slot_at_once(server: Server) -> None:
    async with HttpClient() as http:
        # One slot held for a minute would stall the retry past the test's timeout.
        vc = await vendor(http, server, 1, 1000, vendor_timeout_s=60)
        resp = await asyncio.wait_for(vc.request("GET", "reset"), 5)
        resp2 = await asyncio.wait_for(vc.request("GET", "truncated"), 5)
    assert resp.json() == {"ok": True}
    assert resp2.json() == {"rows": [1, 2, 3]}
    assert vc.stats.retries == 2
    assert (vc.limiter.held, vc.limiter.abandoned, vc.stats.abandoned) == (0, 0, 0)


async def test_stream_left_before_its_end_keeps_its_slot(server: Server) -> None:
    async with HttpClient() as http:
        vc = await vendor(http, server, 2, 1000, vendor_timeout_s=30)
        total = 0
        async with vc.stream("GET", "big") as resp:
            async for chunk in resp.iter_chunks(1 << 15):
                total += len(chunk)
        assert total == 8 * (1 << 20)
        assert vc.limiter.held == 0  # read to the end: nothing left running
        async with vc.stream("GET", "big") as resp:
            await resp.content.read(1 << 15)  # and stop here
        assert vc.limiter.held == 1
        await vc.limiter.aclose()
