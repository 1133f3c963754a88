"""Aqua publish-link downloads: ``GET /reports/v1.0/publishlink/{docId}[/{anonToken}]``.

Who may fetch a job's file depends on its scope (Public: the link itself; Private: its
creator; PeopleInOrganization: the creator's company). What a link serves before its run
completes follows ``link_before_complete``; the file is streamed in chunks and may be cut
short by the truncation faults. See ``sandbox/aqua/sim.py`` for the settings.

Rendered CSV and JSON files are kept (a few, on disk) by what they hold: the dataset's
rows, the view, the format. A real Aqua renders an export once per job run and then
serves a stored file; rendering it again on every download would make the simulator, not
the client, the slowest part of a benchmark. Bytes are identical either way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from sandbox.aqua.auth import Token
from sandbox.aqua.config import AquaError, fault_rate
from sandbox.aqua.data import AquaDataset, view_rows
from sandbox.aqua.jobs import COMPLETED, Job, Phase
from sandbox.aqua.output import (
    content_headers,
    csv_chunks,
    file_chunks,
    first_row_bytes,
    json_chunks,
    malformed,
    send_chunks,
    write_xlsx,
)
from sandbox.faults import Faults
from sandbox.stats import VendorStats


class DownloadHost(Protocol):
    """What the downloads use of their simulator (an :class:`~sandbox.aqua.sim.AquaSim`)."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def stats(self) -> VendorStats: ...

    @property
    def doc_jobs(self) -> Mapping[str, str]: ...

    def caller(self, request: web.Request) -> Token: ...

    def live_job(self, job_id: str) -> Job | None: ...

    def phase(self, job: Job) -> Phase: ...


CACHED_FILES = 4


class RenderedFiles:
    """The last few rendered export files, on disk, by what they hold."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="vendorsync-aqua-sim-"))
        self._files: OrderedDict[tuple[Any, ...], Path] = OrderedDict()
        self._seq = 0
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)

    def get(self, key: tuple[Any, ...]) -> Path | None:
        path = self._files.get(key)
        if path is not None:
            self._files.move_to_end(key)
        return path

    def tee(self, key: tuple[Any, ...], chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks``, written to a file as they pass; kept once the last one has."""
        self._seq += 1
        path = self._dir / f"{self._seq}.part"
        try:
            with path.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    yield chunk
        except BaseException:  # cut short (a fault, a client gone): not a whole file
            path.unlink(missing_ok=True)
            raise
        done = path.with_suffix(".out")
        os.replace(path, done)
        self._files[key] = done
        while len(self._files) > CACHED_FILES:
            _, old = self._files.popitem(last=False)
            old.unlink(missing_ok=True)  # a reader still streaming it keeps its handle

    def close(self) -> None:
        self._cleanup()


class DownloadApi:
    """Serves a job's export file at its publish link."""

    def __init__(self, sim: DownloadHost) -> None:
        self.sim = sim
        self.rendered = RenderedFiles()

    async def download(self, request: web.Request) -> web.StreamResponse:
        doc_id, anon = request.match_info["doc_id"], request.match_info.get("anon")
        job = self.sim.live_job(self.sim.doc_jobs.get(doc_id, ""))
        if job is None or (anon is not None and job.scope != "Public"):
            raise AquaError(404, "The requested document was not found.")
        if job.scope == "Public":
            allowed = anon == job.anon_token  # the link itself is the credential
        else:
            caller = self.sim.caller(request).user
            owner = job.created_by
            allowed = (
                caller.username == owner.username
                if job.scope == "Private"
                else caller.company == owner.company
            )
        if not allowed:
            raise AquaError(int(self.sim.settings["access_denied_status"]), "Access Denied")
        data = self._servable(job)
        if data is None:
            raise AquaError(404, "The document is not available until the job has completed.")
        return await self._send(request, job, data)

    def _servable(self, job: Job) -> AquaDataset | None:
        if self.sim.phase(job).status == COMPLETED:
            return job.published
        return job.published if self.sim.settings["link_before_complete"] == "stale" else None

    async def _send(self, request: web.Request, job: Job, data: AquaDataset) -> web.StreamResponse:
        columns = job.source.columns
        rows = view_rows(data, job.source, job.view)
        faults, settings = self.sim.faults, self.sim.settings
        cut = faults.roll(faults.truncate_rate) or (
            job.output_format == "CSV" and faults.roll(fault_rate(faults.extra.get("truncate_csv")))
        )
        chunk_rows = int(settings["csv_chunk_rows"])
        cut_at = None
        if cut:
            self.sim.stats.errors_injected += 1
            cut_at = max(1, len(data) * first_row_bytes(data, columns) // 2)
        resp = web.StreamResponse(headers=content_headers(job.output_format, job.document_name))
        if job.output_format == "Excel":
            title = job.view.replace("/", "-")
            with await asyncio.to_thread(write_xlsx, rows, columns, title) as fh:
                await resp.prepare(request)
                return await send_chunks(request, resp, file_chunks(fh), cut_at_bytes=cut_at)
        shape = str(settings["json_row_shape"])
        key = (data.fingerprint(), job.source.name, job.view, job.output_format, shape)
        cached = self.rendered.get(key)
        if cached is not None:
            fh = cached.open("rb")
            chunks: Iterator[bytes] = file_chunks(fh)
        elif job.output_format == "CSV":
            chunks = self.rendered.tee(key, csv_chunks(rows, columns, chunk_rows))
        else:
            chunks = self.rendered.tee(key, json_chunks(rows, columns, chunk_rows, shape))
        if job.output_format == "JSON" and faults.roll(
            fault_rate(faults.extra.get("malformed_json"))
        ):
            self.sim.stats.errors_injected += 1
            chunks = malformed(chunks)
        try:
            await resp.prepare(request)
            return await send_chunks(request, resp, chunks, cut_at_bytes=cut_at)
        finally:
            if cached is not None:
                fh.close()
