"""AIMS360 Aqua simulator: token, export job, job status, rerun, publish-link download.

Routes (under ``/aqua``):
- ``POST /authentication/v1/authentication/Token`` (form: grant_type=password, client_id,
  client_secret, username, password) → ``{"access_token","token_type":"bearer","expires_in"}``.
- ``POST /reports/v1.0/exportdata`` and ``POST /reports/v1.0/reports/exportdata`` → a job.
- ``GET /jobsmanagement/odata/v1.0/backgroundjob[?$filter=jobId eq '{id}']`` (``value[]``),
  the seed's ``POST /jobsmanagement/v1.0/backgroundjob?$filter=jobId eq'{id}'`` (same
  ``value[]`` shape) and ``GET /jobsmanagement/v1.0/backgroundjob/{id}`` (one object).
  A filter naming an unknown or purged job gives an empty ``value`` (OData semantics);
  the single-object form gives 404.
- ``POST /jobsmanagement/v1.0/backgroundjob/{id}/rerun`` and the seed's malformed
  ``POST /jobsmanagement/v1.0/backgroundjob?$filter=jobId eq'{id}'/rerun``.
- ``GET /reports/v1.0/publishlink/{docId}[/{anonToken}]``: the export file.

Every path but Public publish links needs ``Authorization: Bearer``. Jobs are visible to
every user of the creator's company. A job reads its data when it is (re)queued and
publishes it when it completes; a rerun reads the data again, so mutations show up.

Settings (``SandboxOptions.vendors["aqua"]``), [ASSUMPTION] items of docs/vendor-apis.md §2:
- ``token_lifetime_s`` (86399): ``expires_in`` of a token; tokens die on the clock. [ASSUMPTION]
- ``unauthorized_message`` ("Authorization has been denied for this request."): the 401
  ``{"message"}`` body. [ASSUMPTION]
- ``case_insensitive_keys`` (True): export request JSON keys bind case-insensitively. [ASSUMPTION]
- ``access_denied_status`` (403): a download by the wrong user/company; no token → 401. [ASSUMPTION]
- ``json_row_shape`` ("objects"): JSON rows keyed by column caption; "arrays" = header
  array then value arrays. [ASSUMPTION]
- ``rerun_refused_status`` (409): rerun when canReRun is not "Yes". [ASSUMPTION]
- ``link_before_complete`` ("404"): what the link serves before the run completes (or
  after it failed): "404", or "stale" (the previous run's data; 404 if none). [ASSUMPTION]
- ``retry_after_s`` (1): Retry-After on a 429; 429s only when ``limits`` are set. [ASSUMPTION]
Simulator knobs: ``queued_s`` (2), ``run_s`` (8): time spent Queued, then Inprogress;
``purge_after_s`` (30 days); ``can_rerun`` (True → canReRun "Yes"); ``excel_max_rows``
(20000: a larger Excel export ends Failed; openpyxl's write-only mode keeps memory flat
but takes ~0.2-0.4 ms a row, so big exports belong in CSV or JSON);
``csv_chunk_rows`` (2000); ``users`` / ``clients`` (see ``DEFAULT_USERS``, ``DEFAULT_CLIENTS``).
Errors are ``{"message": …}`` (ASP.NET Web API); token errors are OAuth 2 ``{"error",
"error_description"}`` with 400.

Vendor faults (``POST /_sandbox/faults {"extra": {…}}``; true, or a fraction of jobs):
``job_never_finishes`` and ``job_fails`` (decided when a job is (re)queued),
``truncate_csv`` (a download is cut short mid-row; the shared ``truncate_rate`` does the
same to every download format), ``token_expire_now`` (one shot: every issued token dies).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.app import SandboxOptions, VendorSim
from sandbox.aqua_auth import DEFAULT_CLIENTS, DEFAULT_USERS, Accounts, Token, User
from sandbox.aqua_data import (
    SOURCES,
    AquaDataset,
    Source,
    find_source,
    new_dataset,
    view_rows,
)
from sandbox.aqua_jobs import (
    COMPLETED,
    FORMATS,
    SCOPES,
    Job,
    Phase,
    create_response,
    job_id_suffix,
    job_phase,
    job_record,
    lower_keys,
    parse_job_filter,
    pick,
)
from sandbox.aqua_mutate import mutate_source
from sandbox.aqua_output import (
    content_headers,
    csv_chunks,
    file_chunks,
    first_row_bytes,
    json_chunks,
    send_chunks,
    write_xlsx,
)
from sandbox.limits import LimitConfig

DEMO_CREDENTIALS: dict[str, str] = {
    "client_id": "aqua-demo-client",
    "client_secret": "aqua-demo-secret",
    "username": "demo@aims360.test",
    "password": "demo-secret",
}
EXAMPLE_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"

DEFAULTS: dict[str, Any] = {
    "token_lifetime_s": 86399,
    "unauthorized_message": "Authorization has been denied for this request.",
    "case_insensitive_keys": True,
    "access_denied_status": 403,
    "json_row_shape": "objects",
    "rerun_refused_status": 409,
    "link_before_complete": "404",
    "retry_after_s": 1,
    "queued_s": 2.0,
    "run_s": 8.0,
    "purge_after_s": 30 * 86400.0,
    "can_rerun": True,
    "excel_max_rows": 20_000,
    "csv_chunk_rows": 2000,
    "users": DEFAULT_USERS,
    "clients": DEFAULT_CLIENTS,
}
PUBLISH_LINK_PATH = "/reports/v1.0/publishlink"
JOBS_PATH = "/jobsmanagement/v1.0/backgroundjob"
ODATA_JOBS_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"
ODATA_PAGE_SIZE = 100


class AquaError(Exception):
    """Raised by handlers; turned into the vendor's error body in one place."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AquaSim(VendorSim):
    name = "aqua"
    # Aqua documents no rate or concurrency limit; 429 only when a test configures one.
    default_limits = LimitConfig(enabled=False, mode="reject")
    extra_faults = frozenset(
        {"job_never_finishes", "job_fails", "truncate_csv", "token_expire_now"}
    )

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        unknown = set(self.settings) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown aqua setting(s): {sorted(unknown)}")
        self.settings = {**DEFAULTS, **self.settings}
        s = self.settings
        for key, allowed in (
            ("link_before_complete", ("404", "stale")),
            ("json_row_shape", ("objects", "arrays")),
        ):
            if s[key] not in allowed:
                raise ValueError(f"aqua setting {key} must be one of {allowed}, not {s[key]!r}")
        lifetime_s = int(s["token_lifetime_s"])
        self.accounts = Accounts(s["users"], s["clients"], lifetime_s, self.clock)
        self.reset_data()

    def reset_data(self) -> None:
        """Fresh generated data and no jobs; issued tokens stay valid."""
        size, seed = self.options.records, self.options.seed
        self.data: dict[str, AquaDataset] = {
            s.name: new_dataset(s, size, seed) for s in SOURCES.values()
        }
        self.jobs: dict[str, Job] = {}
        self.doc_jobs: dict[str, str] = {}  # publish-link document id → job id
        self._ids = random.Random(f"{seed}:aqua:ids")

    # --- VendorSim hooks ----------------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        for path in (
            "/authentication/v1/authentication/Token",
            "/authentication/v1/authentication/token",
        ):
            r.add_post(path, self._guard(self.token))
        r.add_post("/reports/v1.0/exportdata", self._guard(self.export))
        r.add_post("/reports/v1.0/reports/exportdata", self._guard(self.export))
        r.add_get(ODATA_JOBS_PATH, self._guard(self.list_jobs))
        r.add_get(JOBS_PATH, self._guard(self.list_jobs))
        r.add_post(JOBS_PATH, self._guard(self.legacy_jobs))
        r.add_get(JOBS_PATH + "/{job_id}", self._guard(self.get_job))
        r.add_post(JOBS_PATH + "/{job_id}/rerun", self._guard(self.rerun_by_path))
        r.add_get(PUBLISH_LINK_PATH + "/{doc_id}", self._guard(self.download))
        r.add_get(PUBLISH_LINK_PATH + "/{doc_id}/{anon}", self._guard(self.download))

    def error_response(self, status: int, message: str) -> web.Response:
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if status == 429:
            headers["Retry-After"] = str(self.settings.get("retry_after_s", 1))
        return web.json_response({"message": message}, status=status, headers=headers)

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except AquaError as exc:
                return self.error_response(exc.status, exc.message)

        return guarded

    # --- auth ---------------------------------------------------------------------------------
    def _expire_tokens_if_asked(self) -> None:
        if self.faults.extra.pop("token_expire_now", False):
            self.accounts.expire_all()

    async def token(self, request: web.Request) -> web.Response:
        self._expire_tokens_if_asked()
        status, body = self.accounts.issue(await request.post())
        return web.json_response(body, status=status)

    def _caller(self, request: web.Request) -> Token:
        """The token's owner, or a 401 in the vendor's shape."""
        self._expire_tokens_if_asked()
        token = self.accounts.verify(request.headers.get("Authorization", ""))
        if token is None:
            raise AquaError(401, self.settings["unauthorized_message"])
        return token

    # --- export -------------------------------------------------------------------------------
    async def export(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        try:
            body = await request.json()
        except ValueError as exc:
            raise AquaError(400, "The request is invalid: body is not JSON.") from exc
        if not isinstance(body, dict):
            raise AquaError(400, "The request is invalid: expected a JSON object.")
        source, view, fmt, scope = self._parse_export(body)
        now = self.clock.now()
        job_id = f"{self._uuid()}-{job_id_suffix(now)}"
        doc_id = self._uuid().replace("-", "")
        anon = self._uuid().replace("-", "") if scope == "Public" else ""
        base = f"{request.url.origin()}/{self.name}"
        link = f"{base}{PUBLISH_LINK_PATH}/{doc_id}" + (f"/{anon}" if anon else "")
        job = Job(
            job_id=job_id,
            source=source,
            view=view,
            output_format=fmt,
            scope=scope,
            doc_id=doc_id,
            anon_token=anon,
            publish_link=link,
            request_url=f"{base}/documentmanagement/v1.0/aimsdocument/{self._uuid()}",
            created_by=caller.user,
            client_id=caller.client_id,
            created_at_s=now,
            started_at_s=now,
        )
        self._queue(job, caller.user)
        self.jobs[job_id] = job
        self.doc_jobs[doc_id] = job_id
        return web.json_response(create_response(job))

    def _parse_export(self, raw: dict[str, Any]) -> tuple[Source, str, str, str]:
        body = lower_keys(raw) if self.settings["case_insensitive_keys"] else raw
        k = str.lower if self.settings["case_insensitive_keys"] else str
        export_type = body.get(k("exportType"))
        if not isinstance(export_type, str) or export_type.casefold() != "view":
            raise AquaError(
                400, f"exportType {export_type!r} is not supported. Valid values: View."
            )
        settings = body.get(k("exportDataSettings"))
        if not isinstance(settings, dict):
            raise AquaError(400, "exportDataSettings is required.")
        source = find_source(str(settings.get(k("source"), "")))
        if source is None:
            raise AquaError(400, f"Invalid source {settings.get(k('source'))!r}.")
        view = source.view(str(settings.get(k("viewName"), "")))
        if view is None:
            raise AquaError(
                400, f"Invalid viewName {settings.get(k('viewName'))!r} for source {source.name}."
            )
        fmt = pick(FORMATS, body.get(k("outputFormat")))
        if fmt is None:
            raise AquaError(400, "outputFormat must be JSON, CSV or Excel.")
        scope = pick({s.casefold(): s for s in SCOPES}, body.get(k("publishLinkAccessScope")))
        if scope is None:
            raise AquaError(
                400, "publishLinkAccessScope must be Public, Private or PeopleInOrganization."
            )
        return source, view, fmt, scope

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _queue(self, job: Job, by: User) -> None:
        """(Re)queue ``job``: read the data now, decide this run's faults."""
        data = self.data[job.source.name].frozen_copy()
        job.pending = data
        job.started_at_s = self.clock.now()
        job.modified_by = by.username
        extra = self.faults.extra
        job.never_finishes = self.faults.roll(_rate(extra.get("job_never_finishes")))
        job.fails = self.faults.roll(_rate(extra.get("job_fails")))
        self.stats.errors_injected += int(job.never_finishes) + int(job.fails)
        job.fail_text = "Export failed: Timeout expired." if job.fails else ""
        limit = int(self.settings["excel_max_rows"])
        if job.output_format == "Excel" and len(data) > limit:
            job.fails = True
            job.fail_text = f"Excel export is limited to {limit} rows; use CSV or JSON."

    # --- job status ---------------------------------------------------------------------------
    def _phase(self, job: Job) -> Phase:
        s = self.settings
        phase = job_phase(
            self.clock.now() - job.started_at_s,
            float(s["queued_s"]),
            float(s["run_s"]),
            never_finishes=job.never_finishes,
            fails=job.fails,
        )
        if phase.status == COMPLETED and job.pending is not None:
            job.published, job.pending = job.pending, None
        return phase

    def _live_job(self, job_id: str) -> Job | None:
        """The job, unless unknown or purged (purged jobs are forgotten here)."""
        job = self.jobs.get(job_id)
        if job is not None and self.clock.now() >= job.started_at_s + float(
            self.settings["purge_after_s"]
        ):
            del self.jobs[job_id]
            self.doc_jobs.pop(job.doc_id, None)
            return None
        return job

    def _find_job(self, job_id: str, caller: Token) -> Job | None:
        """A live job of the caller's company (other companies' jobs do not exist for them)."""
        job = self._live_job(job_id)
        return job if job is not None and job.created_by.company == caller.user.company else None

    def _record(self, job: Job) -> dict[str, Any]:
        phase = self._phase(job)
        return job_record(
            job,
            phase,
            purge_after_s=float(self.settings["purge_after_s"]),
            size_mb=_size_mb(job),
            can_rerun=bool(self.settings["can_rerun"]),
        )

    def _odata(self, request: web.Request, jobs: list[Job], skip: int) -> web.Response:
        base = f"{request.url.origin()}/{self.name}"
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
            ids = list(self.jobs)
            return [j for i in ids if (j := self._find_job(i, caller)) is not None], False
        parsed = parse_job_filter(text)
        if parsed is None:
            raise AquaError(400, f"The query specified in the URI is not valid: $filter={text}")
        job = self._find_job(parsed[0], caller)
        return ([job] if job is not None else []), parsed[1]

    async def list_jobs(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
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
        caller = self._caller(request)
        if "$filter" not in request.query:
            raise AquaError(400, "A $filter of the form jobId eq '{jobId}' is required.")
        jobs, rerun = self._filtered(request, caller)
        if rerun:
            if not jobs:
                raise AquaError(404, "The job was not found.")
            return self._rerun(jobs[0], caller)
        return self._odata(request, jobs, 0)

    async def get_job(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        job = self._find_job(request.match_info["job_id"], caller)
        if job is None:
            raise AquaError(404, "The job was not found.")
        return web.json_response(self._record(job))

    # --- rerun --------------------------------------------------------------------------------
    async def rerun_by_path(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        job = self._find_job(request.match_info["job_id"], caller)
        if job is None:
            raise AquaError(404, "The job was not found.")
        return self._rerun(job, caller)

    def _rerun(self, job: Job, caller: Token) -> web.Response:
        if not self.settings["can_rerun"]:
            raise AquaError(
                int(self.settings["rerun_refused_status"]), "This job cannot be re-run."
            )
        self._phase(job)  # publish a finished run first, so "stale" serves it during the rerun
        job.runs += 1
        self._queue(job, caller.user)
        return web.json_response(create_response(job))

    # --- download -----------------------------------------------------------------------------
    async def download(self, request: web.Request) -> web.StreamResponse:
        doc_id, anon = request.match_info["doc_id"], request.match_info.get("anon")
        job = self._live_job(self.doc_jobs.get(doc_id, ""))
        if job is None or (anon is not None and job.scope != "Public"):
            raise AquaError(404, "The requested document was not found.")
        if job.scope == "Public":
            allowed = anon == job.anon_token  # the link itself is the credential
        else:
            caller = self._caller(request).user
            owner = job.created_by
            allowed = (
                caller.username == owner.username
                if job.scope == "Private"
                else caller.company == owner.company
            )
        if not allowed:
            raise AquaError(int(self.settings["access_denied_status"]), "Access Denied")
        data = self._servable(job)
        if data is None:
            raise AquaError(404, "The document is not available until the job has completed.")
        return await self._send(request, job, data)

    def _servable(self, job: Job) -> AquaDataset | None:
        if self._phase(job).status == COMPLETED:
            return job.published
        return job.published if self.settings["link_before_complete"] == "stale" else None

    async def _send(self, request: web.Request, job: Job, data: AquaDataset) -> web.StreamResponse:
        columns = job.source.columns
        rows = view_rows(data, job.source, job.view)
        extra = self.faults.extra
        cut = self.faults.roll(self.faults.truncate_rate) or (
            job.output_format == "CSV" and self.faults.roll(_rate(extra.get("truncate_csv")))
        )
        chunk_rows = int(self.settings["csv_chunk_rows"])
        cut_at = None
        if cut:
            self.stats.errors_injected += 1
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
            chunks = json_chunks(rows, columns, chunk_rows, str(self.settings["json_row_shape"]))
        await resp.prepare(request)
        return await send_chunks(request, resp, chunks, cut_at_bytes=cut_at)

    # --- mutation API -------------------------------------------------------------------------
    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        """See :func:`sandbox.aqua_mutate.mutate_source`; the next (re)run sees the edits."""
        return mutate_source(self.data, body, self.clock.now)


def _rate(value: object) -> float:
    """A fault switch: true/false, or the fraction of jobs/downloads it hits."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 1.0 if value else 0.0


def _size_mb(job: Job) -> float:
    """SizeInMB of the published file, estimated from one row (the real value is informative)."""
    data = job.published
    if data is None:
        return 0.0
    return round(len(data) * first_row_bytes(data, job.source.columns) / 1_048_576, 2)


SIM = AquaSim
