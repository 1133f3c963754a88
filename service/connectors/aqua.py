"""AIMS360 Aqua: export a grid view, poll the job, download the file; later runs re-run
the same job. Every export is a full snapshot, diffed by hash in the staging upsert.

Streams are configured views (``[vendors.aqua.streams.<name>] options = {source, view,
format, scope, key, …}``, see :class:`AquaStream`). One run of a stream:

1. **Job.** The stream state keeps ``jobId`` + ``publishLink``. Without them (or when the
   view, format or scope changed) a new export job is created; otherwise the job is
   re-run (the seed's ``POST …/backgroundjob?$filter=jobId eq'{id}'/rerun``, or the
   documented ``…/backgroundjob/{id}/rerun``; ``wire`` picks). A new job's state is
   committed at once (an empty batch), so even a run that fails later re-runs it next
   time. A purged job (404), a refused rerun or a ``Failed`` job → one new export job,
   and the reason is recorded in the run (``sync_run.note``), the state (``last_event``)
   and the log.
2. **Poll** with backoff (``poll_min_s`` … ``poll_max_s``) until ``Completed``; at
   ``poll_deadline_s`` the run fails with ``JobTimeout`` and nothing is written.
3. **Download** the publish link (Public: no token; Private / PeopleInOrganization: the
   bearer) and parse it as it arrives: CSV and JSON from the response stream, Excel from
   a spooled temporary file in openpyxl's read-only mode. Rows go to the engine in
   batches of ``sync.batch_size``; memory holds one batch (plus 8 bytes a row for the
   duplicate count), never the export.

**Snapshots, and why a partial pass is safe.** Rows are upserted by key as they are
parsed; a row whose payload hash is unchanged is not rewritten. Deletes are the engine's
complete-pass deletes (``Batch.marks`` / ``complete``): each batch marks the keys it saw,
and only the last batch, yielded after the *whole* body arrived (the transport saw its
end: no cut connection, no missing final chunk) and parsed, carries ``complete=True``,
when rows the run did not mark are soft-deleted in SQL. A truncated, malformed or
interrupted download raises before that batch, so nothing is deleted. What it did commit
are whole rows only: the CSV parser hands out a record only once the line end after it
arrived, and a row whose field count differs from the header fails the run; each such
row is exactly the vendor's current version. So after a failed pass every previously
staged key is still live, each row is the previous or the current snapshot's version,
and the state still names the job, so the next run re-runs it and converges.
The first run of a stream (no state) has nothing staged to delete and marks nothing.

**Duplicate keys** inside one export: the last one wins (later batches overwrite, and
the upsert keeps a batch's last record), and their number is kept in the state
(``last_export.duplicate_keys``) and logged. Without ``key`` columns the key is a hash of
the whole row, so an edited row is a new record and its old version is soft-deleted.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import openpyxl
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.connectors.aqua_parse import (
    COMPLETED,
    FAILED,
    CsvRows,
    JobInfo,
    JsonRows,
    excel_rows,
    parse_job,
    parse_status,
    row_key,
)
from service.connectors.base import Connector, StreamContext, StreamSpec
from service.connectors.paging import JobFailed, JobStatus, PollPolicy, poll_job
from service.errors import FatalError, ParseError, RequestRejected
from service.models import JSON, Batch, Record

log = structlog.get_logger("service.connectors.aqua")

TOKEN_PATH = "/authentication/v1/authentication/Token"
JOBS_PATH = "/jobsmanagement/v1.0/backgroundjob"
ODATA_JOBS_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"
FORMATS = {"csv": "CSV", "json": "JSON", "excel": "Excel"}
SCOPES = {s.casefold(): s for s in ("Private", "Public", "PeopleInOrganization")}
READ_CHUNK = 256 * 1024
AHEAD = 4  # parsed chunks (of READ_CHUNK bytes each) waiting for the engine at most
# A rerun refused for good (the job is gone or may not run again): make a new job.
RERUN_GONE = {404: "purged", 400: "refused", 403: "refused", 405: "refused", 409: "refused", 410: "purged"}  # fmt: skip


class AquaStream(BaseModel):
    """One configured view: ``[vendors.aqua.streams.<name>] options = {…}``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    view: str = Field(min_length=1)
    format: Literal["csv", "json", "excel"] = "csv"
    scope: Literal["Private", "Public", "PeopleInOrganization"] = "Private"
    # Key column(s) of the view; none: a hash of the whole row is the key.
    key: tuple[str, ...] = ()
    # The wire form of status and rerun calls: "seed" (POST …?$filter=jobId eq'{id}'[/rerun])
    # or "odata" (GET …/odata/…?$filter=jobId eq '{id}', POST …/{id}/rerun).
    wire: Literal["seed", "odata"] = "seed"
    export_path: str = "/reports/v1.0/exportdata"
    poll_min_s: float = Field(default=2.0, gt=0, le=3600)
    poll_max_s: float = Field(default=30.0, gt=0, le=3600)
    poll_deadline_s: float = Field(default=3600.0, gt=0, le=7 * 86400)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> Any:
        return v.strip().casefold() if isinstance(v, str) else v

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, v: Any) -> Any:
        return SCOPES.get(v.strip().casefold(), v) if isinstance(v, str) else v

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("key")
    @classmethod
    def _key_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c.strip() for c in v):
            raise ValueError("key columns must be non-empty column names")
        return v

    @model_validator(mode="after")
    def _poll(self) -> AquaStream:
        if self.poll_min_s > self.poll_max_s:
            raise ValueError("poll_min_s must not exceed poll_max_s")
        return self

    def identity(self) -> JSON:
        """What makes an export job this stream's: a change needs a new job."""
        return {
            "source": self.source,
            "view": self.view,
            "format": self.format,
            "scope": self.scope,
        }


class JobGone(FatalError):
    """The vendor no longer knows the job (purged), or its link is gone."""


@dataclass(slots=True)
class Job:
    job_id: str
    link: str
    created: bool  # made by this run (not a rerun)


class AquaConnector(Connector):
    vendor = "aqua"
    stream_options = AquaStream
    auth_defaults: ClassVar[dict[str, Any]] = {"token_path": TOKEN_PATH}

    @classmethod
    def known_streams(cls) -> list[str]:
        return ["<any configured view>"]

    @classmethod
    def configured_spec(cls, stream: str, options: BaseModel) -> StreamSpec:
        assert isinstance(options, AquaStream)
        key = "|".join(options.key) if options.key else "(row hash)"
        return StreamSpec(stream, key, description=f"{options.source} / {options.view}")

    def options_of(self, stream: str) -> AquaStream:
        configured = self.settings.streams.get(stream)
        opts = self.check_stream(stream, configured.options if configured else {})
        assert isinstance(opts, AquaStream)
        return opts

    # --- the run ----------------------------------------------------------------------------
    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        opts = self.options_of(ctx.stream)
        state: JSON = dict(ctx.state or {})
        first_run = ctx.state is None and not ctx.full
        reusable = state.get("jobId") and state.get("export") == opts.identity()
        event: str | None = None
        job: Job | None = None
        if reusable:
            try:
                job = await self.rerun(opts, str(state["jobId"]), str(state["publishLink"]))
            except JobGone as exc:
                event = f"{exc.args[0]}: created a new export job"
        elif state.get("jobId"):
            event = "stream options changed: created a new export job"
        if job is None:
            job = await self.create(opts)
        state.update(jobId=job.job_id, publishLink=job.link, export=opts.identity())
        if event:
            state["last_event"] = event
            ctx.note(event)
            log.warning("aqua.new_job", stream=ctx.stream, reason=event, job=job.job_id)
        if job.created:
            yield Batch(records=[], state=dict(state))  # keep the new job even if we fail
        try:
            await self.wait(opts, job, ctx)
        except (JobFailed, JobGone) as exc:
            if job.created:
                raise
            event = f"{exc.args[0]}: created a new export job"
            ctx.note(event)
            log.warning("aqua.new_job", stream=ctx.stream, reason=event)
            job = await self.create(opts)
            state.update(jobId=job.job_id, publishLink=job.link, last_event=event)
            yield Batch(records=[], state=dict(state))
            await self.wait(opts, job, ctx)
        state["runs"] = int(state.get("runs", 0)) + 1
        async for batch in self.snapshot(opts, job, ctx, state, marks=not first_run):
            yield batch

    # --- job calls --------------------------------------------------------------------------
    async def create(self, opts: AquaStream) -> Job:
        body = {
            "exportType": "View",
            "exportDataSettings": {"source": opts.source, "viewName": opts.view},
            "exportCriteriaVersion": "v1.0",
            "outputFormat": FORMATS[opts.format],
            "publishLinkAccessScope": opts.scope,
        }
        resp = await self.client.request("POST", opts.export_path, json=body, expect_json=True)
        info = parse_job(resp.json(), what="export job")
        if info.publish_link is None:
            raise ParseError("export job answer has no publishLink", vendor=self.vendor)
        return Job(info.job_id, info.publish_link, created=True)

    async def rerun(self, opts: AquaStream, job_id: str, link: str) -> Job:
        if opts.wire == "seed":
            args: dict[str, Any] = {"params": {"$filter": f"jobId eq'{job_id}'/rerun"}}
            path = JOBS_PATH
        else:
            args, path = {}, f"{JOBS_PATH}/{job_id}/rerun"
        try:
            resp = await self.client.request("POST", path, expect_json=True, **args)
        except RequestRejected as exc:
            why = RERUN_GONE.get(exc.status)
            if why is None:
                raise
            raise JobGone(f"job {job_id} {why} (rerun: HTTP {exc.status})") from exc
        info = parse_job(resp.json(), what="rerun")
        return Job(info.job_id, info.publish_link or link, created=False)

    async def status(self, opts: AquaStream, job_id: str) -> JobInfo:
        query = {
            "$filter": f"jobId eq'{job_id}'" if opts.wire == "seed" else f"jobId eq '{job_id}'"
        }
        method, path = ("POST", JOBS_PATH) if opts.wire == "seed" else ("GET", ODATA_JOBS_PATH)
        try:
            resp = await self.client.request(method, path, params=query, expect_json=True)
        except RequestRejected as exc:
            if exc.status in (404, 410):
                raise JobGone(f"job {job_id} purged (status: HTTP {exc.status})") from exc
            raise
        info = parse_status(resp.json(), job_id)
        if info is None:
            raise JobGone(f"job {job_id} purged (no longer listed)")
        return info

    async def wait(self, opts: AquaStream, job: Job, ctx: StreamContext) -> None:
        """Poll until Completed; ``JobFailed``, ``JobGone`` or ``JobTimeout`` otherwise."""

        async def check() -> JobStatus[JobInfo]:
            info = await self.status(opts, job.job_id)
            return JobStatus(
                info.status,
                done=info.status == COMPLETED,
                failed=info.status == FAILED,
                error=info.text,
                result=info,
            )

        policy = PollPolicy(opts.poll_min_s, opts.poll_max_s, 2.0, opts.poll_deadline_s)
        done = await poll_job(
            check, policy, clock=ctx.clock, sleep=ctx.sleep, what=f"Aqua job {job.job_id}"
        )
        if done.result is not None and done.result.publish_link:
            job.link = done.result.publish_link

    # --- download ---------------------------------------------------------------------------
    async def snapshot(
        self, opts: AquaStream, job: Job, ctx: StreamContext, state: JSON, *, marks: bool
    ) -> AsyncIterator[Batch]:
        """The export as batches; the last one (complete) only after the whole body parsed."""
        keys = KeyHashes()  # duplicates counted in 8 bytes a row
        pending: list[Record] = []
        rows = 0
        async with contextlib.aclosing(read_ahead(self.rows(opts, job), AHEAD)) as parsed:
            async for chunk in parsed:
                for row in chunk:
                    key = row_key(row, opts.key)
                    keys.add(key)
                    pending.append(Record(ctx.stream, key, row))
                rows += len(chunk)
                ctx.advance(len(chunk))
                if len(pending) >= ctx.batch_size:
                    yield Batch(records=pending, marks=() if marks else None)
                    pending = []
        duplicates = keys.repeats()
        del keys
        if duplicates:
            log.warning("aqua.duplicate_keys", stream=ctx.stream, count=duplicates)
        state["last_export"] = {"rows": rows, "duplicate_keys": duplicates}
        yield Batch(
            records=pending,
            state=state,
            marks=() if marks else None,
            complete=marks,
        )

    async def rows(self, opts: AquaStream, job: Job) -> AsyncGenerator[list[JSON], None]:
        """Parsed rows, a chunk at a time, as the download arrives."""
        public = opts.scope == "Public"
        try:
            async with self.client.stream("GET", job.link, auth=not public) as resp:
                if opts.format == "excel":
                    async for chunk in self._excel(resp.iter_chunks(READ_CHUNK), opts):
                        yield chunk
                    return
                parser = CsvRows(opts.key) if opts.format == "csv" else JsonRows(opts.key)
                async for data in resp.iter_chunks(READ_CHUNK):
                    out = parser.feed(data)
                    if out:
                        yield out
                # The body ended cleanly (a cut one raised TransportError while reading).
                yield parser.close()
        except RequestRejected as exc:
            if exc.status == 404:
                raise JobGone(f"job {job.job_id}: publish link answered 404") from exc
            raise

    async def _excel(
        self, chunks: AsyncIterator[bytes], opts: AquaStream
    ) -> AsyncIterator[list[JSON]]:
        """Spool the workbook to a temporary file, then read it row by row in read-only mode
        (a zip must be whole before it can be read; the file, not memory, holds it)."""
        fd, path = tempfile.mkstemp(prefix="aqua-", suffix=".xlsx")
        try:
            with os.fdopen(fd, "wb") as out:
                async for data in chunks:
                    out.write(data)
            book, it = await asyncio.to_thread(_open_sheet, path, opts.key)
            try:
                while batch := await asyncio.to_thread(_take, it, 2000):
                    yield batch
            finally:
                book.close()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


async def read_ahead(
    source: AsyncGenerator[list[JSON], None], depth: int
) -> AsyncGenerator[list[JSON], None]:
    """``source``'s items, fetched and parsed up to ``depth`` items ahead in a task, so
    the download goes on while the engine commits a batch. Closing this closes it all."""
    queue: asyncio.Queue[list[JSON] | BaseException | None] = asyncio.Queue(depth)

    async def produce() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    await queue.put(item)
            await queue.put(None)
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put(exc)

    task = asyncio.ensure_future(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class KeyHashes:
    """The keys of one export as 64-bit hashes, in 256 buckets: 8 bytes a key, and
    counting repeats needs one bucket's set at a time, never a set of every key."""

    BUCKETS = 256

    def __init__(self) -> None:
        self._buckets = [array.array("q") for _ in range(self.BUCKETS)]

    def add(self, key: str) -> None:
        h = hash(key)
        self._buckets[h % self.BUCKETS].append(h)

    def repeats(self) -> int:
        """How many keys repeat an earlier one (a 64-bit collision would count too)."""
        return sum(len(b) - len(set(b)) for b in self._buckets)


def _open_sheet(path: str, key: tuple[str, ...]) -> tuple[Any, Iterator[JSON]]:
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError: a broken file
        raise ParseError(f"unreadable Excel export: {type(exc).__name__}", vendor="aqua") from exc
    sheet = book.worksheets[0]
    return book, excel_rows(sheet.iter_rows(values_only=True), key)


def _take(it: Iterator[JSON], n: int) -> list[JSON]:
    out = []
    for row in it:
        out.append(row)
        if len(out) >= n:
            break
    return out
