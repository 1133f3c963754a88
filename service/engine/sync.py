"""The pull engine: one run of one stream, checkpointed per batch.

Each batch's rows and the stream's new state are committed in one transaction, and that
transaction first renews the stream's lease, so a runner that lost its lease can never
commit. A crash anywhere leaves the state at or behind the data; re-running converges.
A run also holds its vendor's lease (shared by every run of this process), so no other
process drives the vendor at the same time and this process's limiter is the vendor's
true global limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from service.connectors import StreamContext
from service.db import (
    finish_run,
    load_state,
    renew_lease,
    save_state,
    soft_delete_keys,
    soft_delete_missing,
    staged_cursors,
    start_run,
    upsert_records,
)
from service.engine.runtime import Runtime
from service.errors import ConfigError, StagingError, SyncError, VendorError
from service.http import request_scope
from service.models import JSON, Batch, RunResult, UpsertCounts

log = structlog.get_logger("service.engine.sync")

ERROR_MAX_CHARS = 500
ProgressFn = Callable[[UpsertCounts], None]


class LeaseLost(StagingError):
    """Our lease expired and another runner took the stream over."""


def lease_name(vendor: str, stream: str) -> str:
    return f"stream:{vendor}:{stream}"


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SyncError) else str(exc)
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


def resolve_stream(rt: Runtime, vendor: str, stream: str) -> str:
    """The configured, enabled stream's canonical name, or a ConfigError listing the known ones."""
    settings = rt.settings.vendor(vendor)
    for name, s in settings.streams.items():
        if name.lower() == stream.lower():
            if not s.enabled:
                raise ConfigError("stream is disabled", key=f"vendors.{vendor}.streams.{name}")
            return name
    known = ", ".join(settings.streams) or "none"
    raise ConfigError(f"unknown stream {stream!r} (configured: {known})", key=f"vendors.{vendor}")


async def commit_batch(
    rt: Runtime,
    vendor: str,
    stream: str,
    batch: Batch,
    *,
    run_id: int,
    lease: str,
    prior_state: JSON | None = None,
) -> UpsertCounts:
    """Write one batch's rows, deletions and new state in a single transaction.

    A state equal to ``prior_state`` is not rewritten, so a run that finds nothing new
    writes nothing at all.
    """
    now = rt.clock()
    async with rt.db.begin() as conn:
        ttl_s = rt.settings.sync.lease_ttl_s
        if not await renew_lease(conn, lease, rt.owner, ttl_s=ttl_s, now=now):
            raise LeaseLost(f"lease {lease} was lost; refusing to commit")
        counts = await upsert_records(conn, vendor, stream, batch.records, run_id=run_id, now=now)
        counts.unchanged += batch.unchanged
        if batch.deleted_keys:
            counts.deleted += await soft_delete_keys(
                conn, vendor, stream, batch.deleted_keys, now=now
            )
        if batch.seen_keys is not None:
            counts.deleted += await soft_delete_missing(
                conn, vendor, stream, batch.seen_keys, run_id=run_id, now=now
            )
        if batch.state != prior_state:
            await save_state(conn, vendor, stream, batch.state, now=now)
    return counts


async def run_stream(
    rt: Runtime,
    vendor: str,
    stream: str,
    trigger: str,
    *,
    full: bool = False,
    since: datetime | None = None,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run one stream once: lease, run row, batches with checkpoints, counts, release.

    Raises ``LeaseHeld`` when another runner holds the stream. Any other failure marks the
    run failed (every batch committed before it stays) and is re-raised.
    """
    stream = resolve_stream(rt, vendor, stream)
    connector = rt.connector(vendor)
    name = lease_name(vendor, stream)
    started = time.monotonic()
    totals = UpsertCounts()
    with request_scope() as tally:
        async with rt.vendor_lease(vendor), rt.lease(name):
            async with rt.db.begin() as conn:
                run_id = await start_run(conn, vendor, stream, trigger, now=rt.clock())
                state = await load_state(conn, vendor, stream)
            bound = log.bind(vendor=vendor, stream=stream, run_id=run_id, trigger=trigger)

            async def cursors() -> dict[str, str | None]:
                async with rt.db.connect() as conn:
                    return await staged_cursors(conn, vendor, stream)

            ctx = StreamContext(
                vendor=vendor,
                stream=stream,
                state=None if full else state,
                batch_size=rt.settings.sync.batch_size,
                full=full,
                since=since,
                staged_cursors=cursors,
                options=dict(rt.settings.vendor(vendor).streams[stream].options),
            )
            status, error = "succeeded", None
            try:
                saved = state
                async for batch in connector.pull(ctx):
                    counts = await commit_batch(
                        rt, vendor, stream, batch, run_id=run_id, lease=name, prior_state=saved
                    )
                    saved = batch.state
                    totals.add(counts)
                    if progress is not None:
                        progress(totals)
            except BaseException as exc:
                if isinstance(exc, VendorError) and exc.stream is None:
                    exc.stream = stream  # the HTTP layer knows the vendor, not the stream
                status, error = "failed", short_error(exc)
                if isinstance(exc, asyncio.CancelledError):
                    status, error = "cancelled", "cancelled (shutdown or interrupt)"
                raise
            finally:
                requests = tally.requests
                duration_s = time.monotonic() - started

                async def finish() -> None:
                    async with rt.db.begin() as conn:
                        await finish_run(
                            conn,
                            run_id,
                            status=status,
                            counts=totals,
                            requests=requests,
                            error=error,
                            now=rt.clock(),
                        )

                await asyncio.shield(finish())
                event = bound.info if status == "succeeded" else bound.error
                event(
                    "run finished",
                    status=status,
                    inserted=totals.inserted,
                    updated=totals.updated,
                    unchanged=totals.unchanged,
                    deleted=totals.deleted,
                    requests=requests,
                    duration_s=round(duration_s, 3),
                    error=error,
                )
    return RunResult(
        run_id=run_id,
        vendor=vendor,
        stream=stream,
        status=status,
        counts=totals,
        requests=requests,
        duration_s=duration_s,
        error=error,
    )
