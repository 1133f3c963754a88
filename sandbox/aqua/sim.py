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
Status and rerun handlers live in ``sandbox.aqua.status``, downloads in
``sandbox.aqua.download``; the setting defaults below are ``sandbox.aqua.config.DEFAULTS``.

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
Tenants (companies): a user's local part plus a suffix (``demo-7@aims360.test``, ``demo-secret``)
logs in to company tenant ``demo-7`` (``DEMO01-7``) through its own client ``aqua-demo-client-7``
(``aqua-demo-secret``): its own data, jobs, documents and counters. The bearer token names the
tenant on later calls (a Public link: the tenant holding the document), so one company's jobs
and files do not exist for another's token.
Errors are ``{"message": …}`` (ASP.NET Web API); token errors are OAuth 2 ``{"error",
"error_description"}`` with 400.

Vendor faults (``POST /_sandbox/faults {"extra": {…}}``; true, or a fraction of jobs):
``job_never_finishes`` and ``job_fails`` (decided when a job is (re)queued),
``truncate_csv`` (a download is cut short mid-row; the shared ``truncate_rate`` does the
same to every download format), ``malformed_json`` (a JSON download holds text that is
not JSON between two rows half-way through), ``token_expire_now`` (one shot: every issued token dies).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.app import SandboxOptions, VendorSim, suffixed_email
from sandbox.aqua.auth import Accounts, Token, User
from sandbox.aqua.config import AquaError, fault_rate, resolve_settings
from sandbox.aqua.data import SOURCES, AquaDataset, Source, find_source, new_dataset
from sandbox.aqua.download import DownloadApi
from sandbox.aqua.jobs import (
    COMPLETED,
    FORMATS,
    SCOPES,
    Job,
    Phase,
    create_response,
    job_id_suffix,
    job_phase,
    lower_keys,
    pick,
)
from sandbox.aqua.mutate import mutate_source
from sandbox.aqua.status import StatusApi
from sandbox.limits import LimitConfig

DEMO_CREDENTIALS: dict[str, str] = {
    "client_id": "aqua-demo-client",
    "client_secret": "aqua-demo-secret",
    "username": "demo@aims360.test",
    "password": "demo-secret",
}
EXAMPLE_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"
PUBLISH_LINK_PATH = "/reports/v1.0/publishlink"
JOBS_PATH = "/jobsmanagement/v1.0/backgroundjob"
ODATA_JOBS_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"
TOKEN_PATH = "/authentication/v1/authentication/token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AquaSim(VendorSim):
    name = "aqua"
    # Aqua documents no rate or concurrency limit; 429 only when a test configures one.
    default_limits = LimitConfig(enabled=False, mode="reject")
    extra_faults = frozenset(
        {"job_never_finishes", "job_fails", "truncate_csv", "malformed_json", "token_expire_now"}
    )

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        self.settings = s = resolve_settings(self.settings)
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
        for path in (TOKEN_PATH.replace("/token", "/Token"), TOKEN_PATH):
            r.add_post(path, self._guard(self.token))
        r.add_post("/reports/v1.0/exportdata", self._guard(self.export))
        r.add_post("/reports/v1.0/reports/exportdata", self._guard(self.export))
        status, files = StatusApi(self), DownloadApi(self)
        self.files = files
        r.add_get(ODATA_JOBS_PATH, self._guard(status.list_jobs))
        r.add_get(JOBS_PATH, self._guard(status.list_jobs))
        r.add_post(JOBS_PATH, self._guard(status.legacy_jobs))
        r.add_get(JOBS_PATH + "/{job_id}", self._guard(status.get_job))
        r.add_post(JOBS_PATH + "/{job_id}/rerun", self._guard(status.rerun_by_path))
        r.add_get(PUBLISH_LINK_PATH + "/{doc_id}", self._guard(files.download))
        r.add_get(PUBLISH_LINK_PATH + "/{doc_id}/{anon}", self._guard(files.download))

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

    # --- tenants: one company each -------------------------------------------------------------
    async def tenant_of(self, request: web.Request) -> str | None:
        """The suffixed user of the token form; later the company that issued the bearer
        token, or (a Public link carries no token) the one holding the document."""
        if request.method == "POST" and request.path.casefold() == f"/{self.name}{TOKEN_PATH}":
            username = (await request.post()).get("username")
            if not isinstance(username, str):
                return None
            named = suffixed_email(username, self.accounts.users)
            return None if named is None else named[1]
        authorization = request.headers.get("Authorization", "")
        tenants = [(n, s) for n, s in self.tenants().items() if isinstance(s, AquaSim)]
        if authorization:
            if self.accounts.verify(authorization) is not None:
                return None
            for name, sim in tenants:
                if sim.accounts.verify(authorization) is not None:
                    return name
        doc_id = request.match_info.get("doc_id")
        if doc_id is not None and doc_id not in self.doc_jobs:
            for name, sim in tenants:
                if doc_id in sim.doc_jobs:
                    return name
        return None

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        """Tenant ``demo-7``: user ``demo-7@…`` of company ``DEMO01-7``, whose API client is
        ``aqua-demo-client-7`` (the base secrets); the base clients exist there too, of
        their own company."""
        base, suffix = tenant.rpartition("-")[0], tenant.rpartition("-")[2]
        users, clients = [], list(self.settings["clients"])
        for user in self.settings["users"]:
            local, _, domain = user["username"].casefold().rpartition("@")
            if local != base:
                continue
            company = f"{user['company']}-{suffix}"
            users.append({**user, "username": f"{tenant}@{domain}", "company": company})
            clients += [
                {**c, "client_id": f"{c['client_id']}-{suffix}", "company": company}
                for c in self.settings["clients"]
                if c["company"] == user["company"]
            ]
        return {"users": users, "clients": clients}

    # --- auth ---------------------------------------------------------------------------------
    def _expire_tokens_if_asked(self) -> None:
        if self.faults.extra.pop("token_expire_now", False):
            self.accounts.expire_all()

    async def token(self, request: web.Request) -> web.Response:
        self._expire_tokens_if_asked()
        status, body = self.accounts.issue(await request.post())
        return web.json_response(body, status=status)

    def caller(self, request: web.Request) -> Token:
        """The token's owner, or a 401 in the vendor's shape."""
        self._expire_tokens_if_asked()
        token = self.accounts.verify(request.headers.get("Authorization", ""))
        if token is None:
            raise AquaError(401, self.settings["unauthorized_message"])
        return token

    # --- export -------------------------------------------------------------------------------
    async def export(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
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
        self.queue(job, caller.user)
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

    def queue(self, job: Job, by: User) -> None:
        """(Re)queue ``job``: read the data now, decide this run's faults."""
        data = self.data[job.source.name].frozen_copy()
        job.pending = data
        job.started_at_s = self.clock.now()
        job.modified_by = by.username
        extra = self.faults.extra
        job.never_finishes = self.faults.roll(fault_rate(extra.get("job_never_finishes")))
        job.fails = self.faults.roll(fault_rate(extra.get("job_fails")))
        self.stats.errors_injected += int(job.never_finishes) + int(job.fails)
        job.fail_text = "Export failed: Timeout expired." if job.fails else ""
        limit = int(self.settings["excel_max_rows"])
        if job.output_format == "Excel" and len(data) > limit:
            job.fails = True
            job.fail_text = f"Excel export is limited to {limit} rows; use CSV or JSON."

    # --- job state (read by the status and download handlers too) -----------------------------
    def phase(self, job: Job) -> Phase:
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

    def live_job(self, job_id: str) -> Job | None:
        """The job, unless unknown or purged (purged jobs are forgotten here)."""
        job = self.jobs.get(job_id)
        if job is not None and self.clock.now() >= job.started_at_s + float(
            self.settings["purge_after_s"]
        ):
            del self.jobs[job_id]
            self.doc_jobs.pop(job.doc_id, None)
            return None
        return job

    def find_job(self, job_id: str, caller: Token) -> Job | None:
        """A live job of the caller's company (other companies' jobs do not exist for them)."""
        job = self.live_job(job_id)
        return job if job is not None and job.created_by.company == caller.user.company else None

    # --- mutation API -------------------------------------------------------------------------
    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        """See :func:`sandbox.aqua.mutate.mutate_source`; the next (re)run sees the edits."""
        return mutate_source(self.data, body, self.clock.now)


SIM = AquaSim
