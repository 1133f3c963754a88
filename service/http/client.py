"""HttpClient: the process's one aiohttp session and the vendors registered on it.

Each vendor gets a ``VendorClient`` (see ``service.http.vendor_client``) carrying its
limiter, auth, retry policy and stats.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self

import aiohttp
import structlog
from yarl import URL

from service.errors import ConfigError
from service.http.auth import Auth, utcnow
from service.http.limiter import Grant, VendorLimiter
from service.http.metrics import HttpMetrics
from service.http.retry import RetryPolicy
from service.http.vendor_client import VendorClient

__all__ = ["HttpClient", "VendorClient"]

log = structlog.get_logger("service.http")

DEFAULT_CONNECTOR_LIMIT = 100
Sleep = Callable[[float], Awaitable[Any]]


def tls_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` takes for one vendor: True (system CAs, verified), a context
    trusting ``ca_file`` (verified), or False (no certificate check at all)."""
    if not verify:
        return False
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(f"cannot load CA certificates from {ca_file}: {reason}") from None


def _sent_trace() -> aiohttp.TraceConfig:
    """Tell each request's limiter grant when its headers are really on the wire."""

    async def headers_sent(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        grant = ctx.trace_request_ctx
        if isinstance(grant, Grant):
            grant.sent()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)
    return trace


class HttpClient:
    """Owns (or borrows) the process's one ``aiohttp.ClientSession``.

    Register vendors before ``start()`` so the connector's pool is sized to the sum of
    their parallelism; a borrowed ``session`` is used as given and never closed.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        connector_limit: int | None = None,
        metrics: HttpMetrics | None = None,
        user_agent: str = "vendorsync",
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._connector_limit = connector_limit
        self.metrics = metrics
        self.user_agent = user_agent
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.rng = rng or random.Random()
        self._vendors: dict[str, VendorClient] = {}
        self._stack = AsyncExitStack()

    # lifecycle -----------------------------------------------------------------------
    def pool_size(self) -> int:
        """Connections needed: the sum of every distinct registered limiter's parallelism."""
        limiters = {id(v.limiter): v.limiter for v in self._vendors.values()}
        return sum(lim.max_parallel for lim in limiters.values()) or DEFAULT_CONNECTOR_LIMIT

    async def start(self) -> None:
        if self._session is not None:
            return
        limit = self._connector_limit or self.pool_size()
        self._connector_limit = limit
        connector = aiohttp.TCPConnector(limit=limit)
        session = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(total=None),  # per request, see VendorClient
                trace_configs=[_sent_trace()],
            )
        )
        # aiohttp >= 3.10 silently re-sends an idempotent request once after a
        # disconnect/reset, inside our one limiter slot: the server would count two
        # arrivals for one rate token. Our retry loop does this under the limiter.
        # No public switch exists; the attribute is in ClientSession.ATTRS.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        self._session = session

    async def aclose(self) -> None:
        await self._stack.aclose()
        if self._owns_session:
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def traces_sends(self) -> bool:
        """Whether grants learn when their request really left (our session's trace)."""
        return self._owns_session

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient is not started; use `async with` or start()")
        return self._session

    # vendors ---------------------------------------------------------------------------
    def register(
        self,
        vendor: str,
        base_url: str,
        *,
        limiter: VendorLimiter,
        auth: Auth | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        default_headers: Mapping[str, str] | None = None,
        vendor_timeout_s: float | None = None,
        tls: ssl.SSLContext | bool = True,
    ) -> VendorClient:
        """Add a vendor; its limiter must be the one shared by all its streams.

        ``tls`` is the vendor's certificate policy (see ``tls_context``); the session is
        shared, so it applies per request.

        ``vendor_timeout_s`` (default ``timeout_s``): how long after sending the vendor
        may keep working on a request we abandoned, holding one of its parallel slots.
        """
        if vendor in self._vendors:
            raise ConfigError(f"vendor {vendor!r} is already registered", key=vendor)
        try:
            base = URL(base_url)
        except ValueError as exc:
            raise ConfigError(f"invalid base_url {base_url!r}", key=vendor) from exc
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError(f"base_url must be http(s)://host/…, got {base_url!r}", key=vendor)
        client = VendorClient(
            self,
            vendor,
            base,
            limiter=limiter,
            auth=auth,
            retry=retry or RetryPolicy(),
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            default_headers=dict(default_headers or {}),
            vendor_timeout_s=vendor_timeout_s,
            tls=tls,
        )
        self._vendors[vendor] = client
        if self.metrics is not None:
            self.metrics.watch_limiter(vendor, limiter)
        if self._connector_limit is not None and self.pool_size() > self._connector_limit:
            log.warning(
                "http.pool_smaller_than_parallelism",
                vendor=vendor,
                pool=self._connector_limit,
                wanted=self.pool_size(),
            )
        return client

    def vendor(self, name: str) -> VendorClient:
        return self._vendors[name]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-vendor request stats merged with limiter counters."""
        return {
            name: {**vc.stats.snapshot(), "limiter": vc.limiter.snapshot()}
            for name, vc in self._vendors.items()
        }
