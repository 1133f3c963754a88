"""The runtime: owns the database engine, the one HTTP session, and one connector
(with its limiter) per vendor, all cleaned up through a single exit stack.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.connectors import Connector, connector_class
from service.db import check_schema, create_engine
from service.errors import ConfigError
from service.http import HttpClient, HttpMetrics, RetryPolicy, VendorClient, VendorLimiter

Clock = Callable[[], datetime]

# The vendor counts arrivals, and a request granted at the edge of a window may arrive
# late by scheduling jitter; 4% keeps 40 ms of headroom for ≥ 0.96 of the cap.
RATE_SAFETY_MARGIN = 0.04


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    """Lease owner id: host, pid and a random suffix (unique per process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def check_streams(settings: Settings) -> None:
    """Every enabled vendor has a connector, and every configured stream is one it serves."""
    for vendor, vs in settings.vendors.items():
        if not vs.enabled:
            continue
        try:
            cls = connector_class(vendor)
        except KeyError as exc:
            raise ConfigError(exc.args[0], key=f"vendors.{vendor}.enabled") from None
        known = {s.lower(): s for s in cls.known_streams()}
        for stream in vs.streams:
            if stream.lower() not in known:
                raise ConfigError(
                    f"{vendor} has no stream {stream!r} (known: {', '.join(known.values())})",
                    key=f"vendors.{vendor}.streams.{stream}",
                )


class Runtime:
    """One per process. ``async with Runtime(settings) as rt:`` then ``rt.connector(v)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        owner: str | None = None,
        db: AsyncEngine | None = None,
        require_schema: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.owner = owner or default_owner()
        self._given_db = db
        self._require_schema = require_schema
        self._metrics = HttpMetrics(registry) if registry is not None else None
        self._stack = AsyncExitStack()
        self._connectors: dict[str, Connector] = {}
        self._db: AsyncEngine | None = None
        self._http: HttpClient | None = None

    @property
    def db(self) -> AsyncEngine:
        assert self._db is not None, "Runtime not started"
        return self._db

    @property
    def http(self) -> HttpClient:
        assert self._http is not None, "Runtime not started"
        return self._http

    async def __aenter__(self) -> Runtime:
        await self._stack.__aenter__()
        try:
            if self._given_db is not None:
                self._db = self._given_db
            else:
                engine = create_engine(self.settings.database.url, echo=self.settings.database.echo)
                self._stack.push_async_callback(engine.dispose)
                self._db = engine
            check_streams(self.settings)
            if self._require_schema:
                await check_schema(self._db)
            pool = sum(v.max_parallel for v in self.settings.vendors.values() if v.enabled)
            self._http = HttpClient(connector_limit=max(pool, 10), metrics=self._metrics)
            await self._stack.enter_async_context(self._http)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def connector(self, vendor: str) -> Connector:
        """The vendor's connector; created once, so its limiter is shared by every stream."""
        found = self._connectors.get(vendor)
        if found is not None:
            return found
        settings = self.settings.vendor(vendor)
        if not settings.enabled:
            raise ConfigError("vendor is disabled", key=f"vendors.{vendor}.enabled")
        cls = connector_class(vendor)
        limiter = VendorLimiter(
            vendor,
            settings.max_parallel,
            settings.rate_per_s,
            safety_margin=RATE_SAFETY_MARGIN,
        )
        retry = RetryPolicy(
            max_attempts=settings.retry.max_attempts,
            base_s=settings.retry.base_s,
            max_backoff_s=settings.retry.max_backoff_s,
            max_elapsed_s=settings.retry.max_elapsed_s,
        )
        client: VendorClient = self.http.register(
            vendor,
            settings.base_url,
            limiter=limiter,
            auth=None,
            retry=retry,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
        )
        connector = cls(settings, client)
        client.auth = connector.make_auth()
        self._connectors[vendor] = connector
        return connector

    def request_stats(self, vendor: str) -> dict[str, Any]:
        connector = self._connectors.get(vendor)
        return connector.client.stats.snapshot() if connector else {}
