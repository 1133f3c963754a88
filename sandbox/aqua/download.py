"""Aqua publish-link downloads: ``GET /reports/v1.0/publishlink/{docId}[/{anonToken}]``.

Who may fetch a job's file depends on its scope (Public: the link itself; Private: its
creator; PeopleInOrganization: the creator's company). What a link serves before its run
completes follows ``link_before_complete``; the file is streamed in chunks and may be cut
short by the truncation faults. See ``sandbox/aqua/sim.py`` for the settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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


class DownloadApi:
    """Serves a job's export file at its publish link."""

    def __init__(self, sim: DownloadHost) -> None:
        self.sim = sim

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
        if job.output_format == "CSV":
            chunks = csv_chunks(rows, columns, chunk_rows)
        else:
            chunks = json_chunks(rows, columns, chunk_rows, str(settings["json_row_shape"]))
            if faults.roll(fault_rate(faults.extra.get("malformed_json"))):
                self.sim.stats.errors_injected += 1
                chunks = malformed(chunks)
        await resp.prepare(request)
        return await send_chunks(request, resp, chunks, cut_at_bytes=cut_at)
