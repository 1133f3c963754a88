"""The pull engine: one run of one stream, checkpointed per batch.

Each batch's rows and the stream's new state are committed in one transaction, and that
transaction first renews the run's leases (stream and vendor), so a runner that lost a
lease can never commit. A crash anywhere leaves the state at or behind the data;
re-running converges. A run also holds its vendor's lease (shared by every run of this
process), so no other process drives the vendor at the same time and this process's
limiter is the vendor's true global limit; a run whose lease is lost stops at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from service.connectors import Connector, StreamContext
from service.db import (
    abandon_stale_runs,
    fetch_live,
    finish_run,
    last_full_run_at,
    load_state,
    mark_seen,
    renew_lease,
    save_state,
    soft_delete_keys,
    soft_delete_missing,
    soft_delete_unseen,
    staged_cursors,
    start_run,
    translate_db_errors,
    upsert_records,
)
from service.engine.lease import guard
from service.engine.runtime import Runtime
from service.errors import ConfigError, LeaseLost, SyncError, VendorError
from service.http import RequestTally, request_scope
from service.models import JSON, Batch, RunProgress, RunResult, UpsertCounts, unstorable_reason

log = structlog.get_logger("service.engine.sync")

ERROR_MAX_CHARS = 500
NOTE_CHARS = 1000
INVALID_KEYS_SHOWN = 5
ProgressFn = Callable[[RunProgress], None]

__all__ = ["LeaseLost", "commit_batch", "execute_stream", "run_stream"]


def lease_name(vendor: str, stream: str) -> str:
    return f"stream:{vendor}:{stream}"


def vendor_lease_name(vendor: str) -> str:
    return f"vendor:{vendor}"


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


def full_every_s(rt: Runtime, vendor: str, stream: str) -> float | None:
    """The stream's periodic full re-read interval: config, else the connector's default."""
    configured = rt.settings.vendor(vendor).streams[stream]
    if configured.full_every is not None:
        return configured.full_every_s()
    try:
        return rt.connector(vendor).spec(stream).full_every_s
    except KeyError:
        return None


def full_due(last_full: datetime | None, every_s: float | None, now: datetime) -> bool:
    """Whether a periodic full re-read is due (never when ``every_s`` is None)."""
    if every_s is None:
        return False
    return last_full is None or now - last_full >= timedelta(seconds=every_s)


@dataclass(slots=True)
class Refused:
    """Records refused one by one during a run (the rest of the stream went on)."""

    keys: list[str] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)

    def note(self) -> str | None:
        if not self.keys:
            return None
        shown = ", ".join(self.keys[:INVALID_KEYS_SHOWN])
        more = f" and {len(self.keys) - INVALID_KEYS_SHOWN} more" if len(self.keys) > 5 else ""
        return f"{len(self.keys)} invalid record(s) not staged ({shown}{more}): " + "; ".join(
            sorted(self.reasons)
        )


async def commit_batch(
    rt: Runtime,
    vendor: str,
    stream: str,
    batch: Batch,
    *,
    run_id: int,
    leases: tuple[str, ...],
    prior_state: JSON | None = None,
    refused: Refused | None = None,
) -> UpsertCounts:
    """Write one batch's rows, deletions and new state in a single transaction.

    The transaction first renews ``leases``; a lease no longer ours raises ``LeaseLost``
    and nothing is written. Records the database cannot hold are refused one by one and
    counted as invalid. A state equal to ``prior_state`` is not rewritten, so a run that
    finds nothing new writes nothing at all.
    """
    now = rt.clock()
    records = []
    refused_keys: list[str] = []
    for record in batch.records:
        why = unstorable_reason(record.key, record.cursor, record.payload)
        if why is None:
            records.append(record)
            continue
        refused_keys.append(record.key)
        log.warning("invalid record", vendor=vendor, stream=stream, key=repr(record.key), why=why)
        if refused is not None:
            refused.keys.append(repr(record.key).strip("'"))
            refused.reasons.add(why)
    with translate_db_errors("saving a batch"):
        async with rt.db.begin() as conn:
            ttl_s = rt.settings.sync.lease_ttl_s
            for name in leases:
                if not await renew_lease(conn, name, rt.owner, ttl_s=ttl_s, now=now):
                    raise LeaseLost(f"lease {name} was lost; refusing to commit")
            # A complete pass marks what it saw: the upsert marks its own rows as it goes.
            marking = batch.marks is not None
            counts = await upsert_records(
                conn,
                vendor,
                stream,
                records,
                run_id=run_id,
                now=now,
                seen_run_id=run_id if marking else None,
            )
            counts.unchanged += batch.unchanged
            counts.invalid += len(refused_keys)
            if batch.deleted_keys:
                counts.deleted += await soft_delete_keys(
                    conn, vendor, stream, batch.deleted_keys, now=now
                )
            if batch.seen_keys is not None:
                counts.deleted += await soft_delete_missing(
                    conn, vendor, stream, batch.seen_keys, run_id=run_id, now=now
                )
            if marking and (batch.marks or refused_keys):
                # Seen but not written: an invalid version keeps its staged row alive.
                seen = set(batch.marks or ()) | set(refused_keys)
                await mark_seen(conn, vendor, stream, seen, run_id=run_id)
            if batch.complete:
                counts.deleted += await soft_delete_unseen(
                    conn, vendor, stream, run_id=run_id, now=now
                )
            if batch.state is not None and batch.state != prior_state:
                await save_state(conn, vendor, stream, batch.state, now=now)
    return counts


async def _pull(
    rt: Runtime,
    connector: Connector,
    ctx: StreamContext,
    *,
    run_id: int,
    leases: tuple[str, ...],
    state: JSON | None,
    totals: UpsertCounts,
    refused: Refused,
    progress: ProgressFn | None,
    tally: RequestTally,
) -> None:
    saved = state
    seen = RunProgress(ctx.vendor, ctx.stream, totals)

    def report() -> None:
        if progress is not None:
            seen.requests = tally.requests
            progress(seen)

    def expect(n: int) -> None:
        seen.expected = n
        report()

    def advance(n: int) -> None:
        seen.fetched += n
        report()

    ctx.expect, ctx.advance = expect, advance
    # The connector builds the next batch (its pages keep coming) while this one commits:
    # a one-batch queue between them. A batch that moves the checkpoint is a barrier: the
    # connector resumes only once it is committed (e.g. an export job recorded before the
    # run goes on to wait for it), as if nothing ran ahead.
    queue: asyncio.Queue[tuple[Batch, asyncio.Event] | BaseException | None] = asyncio.Queue(1)
    batches = connector.pull(ctx)

    async def produce() -> None:
        previous: asyncio.Event | None = None
        try:
            async for batch in batches:
                committed = asyncio.Event()
                await queue.put((batch, committed))
                if batch.state is not None:
                    await committed.wait()
                elif previous is not None:
                    await previous.wait()  # one batch ahead of the commits, no more
                previous = committed
        except Exception as exc:  # handed over: raised once the batches before it commit
            await queue.put(exc)
            return
        await queue.put(None)

    producer = asyncio.create_task(produce(), name=f"pull {ctx.vendor}/{ctx.stream}")

    async def next_item() -> tuple[Batch, asyncio.Event] | BaseException | None:
        """The next hand-over; if the producer ended without one (a cancellation that
        was not ours, from inside the connector), its ending, never a wait forever."""
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait([getter, producer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            got = getter.done()
            if not got:
                getter.cancel()
        if got:
            return getter.result()
        if not queue.empty():
            return queue.get_nowait()
        if producer.cancelled():
            raise asyncio.CancelledError
        return producer.exception() or None

    try:
        while (item := await next_item()) is not None:
            if isinstance(item, BaseException):
                raise item
            batch, committed = item
            counts = await commit_batch(
                rt,
                ctx.vendor,
                ctx.stream,
                batch,
                run_id=run_id,
                leases=leases,
                prior_state=saved,
                refused=refused,
            )
            committed.set()
            if batch.state is not None:
                saved = batch.state
            totals.add(counts)
            report()
    finally:
        # A failure or cancellation here stops the connector at once and closes its
        # generator (its finally blocks run now, not at garbage collection), so none of
        # its tasks outlives the run.
        if not producer.done():
            producer.cancel()
        await asyncio.wait([producer])
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


async def execute_stream(
    rt: Runtime,
    vendor: str,
    stream: str,
    trigger: str,
    *,
    full: bool = False,
    since: datetime | None = None,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run one stream once and report it: a failed run is a result (status ``failed``,
    every committed batch counted), not an exception.

    Raises before the run starts (``LeaseHeld``, ``ConfigError``, a database that cannot
    record the run) and re-raises cancellation after recording the run ``cancelled``.
    A scheduled run becomes a full re-read when the stream's ``full_every`` is due.
    """
    stream = resolve_stream(rt, vendor, stream)
    connector = rt.connector(vendor)
    name = lease_name(vendor, stream)
    started = time.monotonic()
    totals = UpsertCounts()
    refused = Refused()
    with request_scope() as tally:
        async with rt.vendor_lease(vendor) as vlease, rt.lease(name) as slease:
            with translate_db_errors("starting a run"):
                async with rt.db.begin() as conn:
                    now = rt.clock()
                    if trigger == "schedule" and not full and since is None:
                        last_full = await last_full_run_at(conn, vendor, stream)
                        full = full_due(last_full, full_every_s(rt, vendor, stream), now)
                    state = await load_state(conn, vendor, stream)
                    await abandon_stale_runs(conn, vendor, stream, now=now)
                    run_id = await start_run(
                        conn,
                        vendor,
                        stream,
                        trigger,
                        now=now,
                        owner=rt.owner,
                        full=full or (state is None and since is None),
                    )
            bound = log.bind(vendor=vendor, stream=stream, run_id=run_id, trigger=trigger)
            if full:
                bound.info("full re-read")

            async def cursors() -> dict[str, str | None]:
                with translate_db_errors("reading staged cursors"):
                    async with rt.db.connect() as conn:
                        return await staged_cursors(conn, vendor, stream)

            async def rows(of_vendor: str, of_stream: str) -> dict[str, JSON]:
                with translate_db_errors("reading staged rows"):
                    async with rt.db.connect() as conn:
                        return await fetch_live(conn, of_vendor, of_stream)

            notes: list[str] = []
            ctx = StreamContext(
                vendor=vendor,
                stream=stream,
                state=None if full else state,
                batch_size=rt.settings.sync.batch_size,
                full=full,
                since=since,
                staged_cursors=cursors,
                staged_rows=rows,
                options=dict(rt.settings.vendor(vendor).streams[stream].options),
                now=rt.clock,
                note=notes.append,
            )
            status, error, failure = "succeeded", None, None
            try:
                await guard(
                    _pull(
                        rt,
                        connector,
                        ctx,
                        run_id=run_id,
                        leases=(name, vlease.name),
                        state=state,
                        totals=totals,
                        refused=refused,
                        progress=progress,
                        tally=tally,
                    ),
                    [vlease, slease],
                )
            except asyncio.CancelledError:
                status, error = "cancelled", "cancelled (shutdown or interrupt)"
                raise
            except Exception as exc:
                if isinstance(exc, VendorError) and exc.stream is None:
                    exc.stream = stream  # the HTTP layer knows the vendor, not the stream
                status, error, failure = "failed", short_error(exc), exc
            finally:
                requests = tally.requests
                duration_s = time.monotonic() - started
                note = refused.note()
                if note is not None:
                    error = note if error is None else f"{error}; {note}"
                run_note = "; ".join(dict.fromkeys(notes))[:NOTE_CHARS] or None
                await asyncio.shield(
                    _finish(rt, run_id, status, totals, requests, error, run_note, bound.error)
                )
                event = bound.info if status == "succeeded" else bound.error
                event(
                    "run finished",
                    status=status,
                    full=full,
                    inserted=totals.inserted,
                    updated=totals.updated,
                    unchanged=totals.unchanged,
                    deleted=totals.deleted,
                    invalid=totals.invalid,
                    requests=requests,
                    duration_s=round(duration_s, 3),
                    error=error,
                    note=run_note,
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
        full=full,
        note=run_note,
        exception=failure,
    )


async def _finish(
    rt: Runtime,
    run_id: int,
    status: str,
    totals: UpsertCounts,
    requests: int,
    error: str | None,
    note: str | None,
    report: Callable[..., object],
) -> None:
    """Record the run's outcome; a database that refuses leaves the row ``running``, which
    ``status`` shows as abandoned once this process's lease is gone."""
    try:
        with translate_db_errors("recording the run's result"):
            async with rt.db.begin() as conn:
                await finish_run(
                    conn,
                    run_id,
                    status=status,
                    counts=totals,
                    requests=requests,
                    error=error,
                    now=rt.clock(),
                    note=note,
                )
    except SyncError as exc:
        report("run result not recorded", error=str(exc))


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
    """``execute_stream``, raising the run's failure (every batch committed before it stays)."""
    result = await execute_stream(
        rt, vendor, stream, trigger, full=full, since=since, progress=progress
    )
    if result.exception is not None:
        raise result.exception
    return result
