"""Aqua job status and reruns: the ``/jobsmanagement`` routes (see ``sandbox/aqua/sim.py``).

Lists are OData pages of ``ODATA_PAGE_SIZE`` background-job objects (``@odata.nextLink`` to
the next); a caller sees only the live jobs of their own company.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from sandbox.aqua.auth import Token, User
from sandbox.aqua.config import AquaError
from sandbox.aqua.jobs import Job, Phase, create_response, job_record, parse_job_filter
from sandbox.aqua.output import first_row_bytes

ODATA_PAGE_SIZE = 100


class StatusHost(Protocol):
    """What the status and rerun handlers use of an :class:`~sandbox.aqua.sim.AquaSim`."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def jobs(self) -> Mapping[str, Job]: ...

    def caller(self, request: web.Request) -> Token: ...

    def find_job(self, job_id: str, caller: Token) -> Job | None: ...

    def phase(self, job: Job) -> Phase: ...

    def queue(self, job: Job, by: User) -> None: ...


class StatusApi:
    """Job status (the OData list, the seed's POST form, one object) and reruns."""

    def __init__(self, sim: StatusHost) -> None:
        self.sim = sim

    def _record(self, job: Job) -> dict[str, Any]:
        phase = self.sim.phase(job)
        return job_record(
            job,
            phase,
            purge_after_s=float(self.sim.settings["purge_after_s"]),
            size_mb=_size_mb(job),
            can_rerun=bool(self.sim.settings["can_rerun"]),
        )

    def _odata(self, request: web.Request, jobs: list[Job], skip: int) -> web.Response:
        base = f"{request.url.origin()}/{self.sim.name}"
        page = jobs[skip : skip + ODATA_PAGE_SIZE]
        body: dict[str, Any] = {
            "@odata.context": f"{base}/jobsmanagement/odata/v1.0/$metadata#backgroundjob",
            "value": [self._record(j) for j in page],
        }
        if skip + ODATA_PAGE_SIZE < len(jobs):
            body["@odata.nextLink"] = str(
                request.url.update_query({"$skip": str(skip + ODATA_PAGE_SIZE)})
            )
        return web.json_response(body)

    def _filtered(self, request: web.Request, caller: Token) -> tuple[list[Job], bool]:
        text = request.query.get("$filter")
        if text is None:
            ids = list(self.sim.jobs)
            return [j for i in ids if (j := self.sim.find_job(i, caller)) is not None], False
        parsed = parse_job_filter(text)
        if parsed is None:
            raise AquaError(400, f"The query specified in the URI is not valid: $filter={text}")
        job = self.sim.find_job(parsed[0], caller)
        return ([job] if job is not None else []), parsed[1]

    async def list_jobs(self, request: web.Request) -> web.Response:
        caller = self.sim.caller(request)
        jobs, rerun = self._filtered(request, caller)
        if rerun:
            raise AquaError(405, "The requested resource does not support http method 'GET'.")
        try:
            skip = max(0, int(request.query.get("$skip", "0")))
        except ValueError as exc:
            raise AquaError(400, "$skip must be an integer.") from exc
        return self._odata(request, jobs, skip)

    async def legacy_jobs(self, request: web.Request) -> web.Response:
        """The seed's POST form: status with ``$filter``, or a rerun when it ends in /rerun."""
        caller = self.sim.caller(request)
        if "$filter" not in request.query:
            raise AquaError(400, "A $filter of the form jobId eq '{jobId}' is required.")
        jobs, rerun = self._filtered(request, caller)
        if rerun:
            if not jobs:
                raise AquaError(404, "The job was not found.")
            return self._rerun(jobs[0], caller)
        return self._odata(request, jobs, 0)

    async def get_job(self, request: web.Request) -> web.Response:
        caller = self.sim.caller(request)
        job = self.sim.find_job(request.match_info["job_id"], caller)
        if job is None:
            raise AquaError(404, "The job was not found.")
        return web.json_response(self._record(job))

    # --- rerun --------------------------------------------------------------------------------
    async def rerun_by_path(self, request: web.Request) -> web.Response:
        caller = self.sim.caller(request)
        job = self.sim.find_job(request.match_info["job_id"], caller)
        if job is None:
            raise AquaError(404, "The job was not found.")
        return self._rerun(job, caller)

    def _rerun(self, job: Job, caller: Token) -> web.Response:
        if not self.sim.settings["can_rerun"]:
            raise AquaError(
                int(self.sim.settings["rerun_refused_status"]), "This job cannot be re-run."
            )
        self.sim.phase(job)  # publish a finished run first, so "stale" serves it during the rerun
        job.runs += 1
        self.sim.queue(job, caller.user)
        return web.json_response(create_response(job))


def _size_mb(job: Job) -> float:
    """SizeInMB of the published file, estimated from one row (the real value is informative)."""
    data = job.published
    if data is None:
        return 0.0
    return round(len(data) * first_row_bytes(data, job.source.columns) / 1_048_576, 2)
