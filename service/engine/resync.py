"""On-demand runs (``vendorsync resync``): the same engine function the daemon calls."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from service.config import Settings
from service.engine.runtime import Runtime
from service.engine.sync import ProgressFn, execute_stream, resolve_stream, short_error
from service.errors import LeaseHeld
from service.models import RunResult, UpsertCounts


async def resync_streams(
    settings: Settings,
    vendor: str,
    stream: str | None,
    *,
    full: bool = False,
    since: datetime | None = None,
    progress: ProgressFn | None = None,
) -> list[RunResult]:
    """Run the vendor's enabled streams (or one) concurrently under the vendor's one limiter.

    A single named stream that is held by another runner raises ``LeaseHeld``; with several
    streams, each failure is reported in its own result and the others still run.
    """
    async with Runtime(settings) as rt:
        if stream is not None:
            names = [resolve_stream(rt, vendor, stream)]
        else:
            names = rt.settings.vendor(vendor).enabled_streams()
        rt.connector(vendor)  # fail fast on a disabled vendor or missing connector

        async def one(name: str) -> RunResult:
            started = time.monotonic()
            try:
                return await execute_stream(
                    rt, vendor, name, "manual", full=full, since=since, progress=progress
                )
            except LeaseHeld:
                if len(names) == 1:
                    raise
                return _failed(vendor, name, started, "lease held by another runner")
            except Exception as exc:
                return _failed(vendor, name, started, short_error(exc))

        return list(await asyncio.gather(*(one(n) for n in names)))


def _failed(vendor: str, stream: str, started: float, error: str) -> RunResult:
    return RunResult(
        run_id=0,
        vendor=vendor,
        stream=stream,
        status="failed",
        counts=UpsertCounts(),
        duration_s=time.monotonic() - started,
        error=error,
    )
