"""Aqua background jobs: lifecycle maths, ``$filter`` parsing and the job's JSON shapes.

Everything here is pure (no I/O, no clock reads): the simulator passes times in.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from sandbox.aqua.auth import User
from sandbox.aqua.data import AquaDataset, Source, iso_ms

QUEUED, INPROGRESS, COMPLETED, FAILED = "Queued", "Inprogress", "Completed", "Failed"
SCOPES = ("Public", "Private", "PeopleInOrganization")
FORMATS = {"json": "JSON", "csv": "CSV", "excel": "Excel"}
EXTENSIONS = {"JSON": ".json", "CSV": ".csv", "Excel": ".xlsx"}


class Phase(NamedTuple):
    status: str
    percent: int
    ended_after_s: float | None  # when the run ended (Completed or Failed), from its start


def job_phase(
    elapsed_s: float, queued_s: float, run_s: float, *, never_finishes: bool, fails: bool
) -> Phase:
    """Where a job stands ``elapsed_s`` after it was (re)queued.

    Queued for ``queued_s``, then Inprogress for ``run_s`` with percentCompleted rising,
    then Completed. A failing job stops halfway through its run; one that never finishes
    creeps towards 99 % and stays Inprogress.
    """
    if elapsed_s < queued_s:
        return Phase(QUEUED, 0, None)
    ran_s = elapsed_s - queued_s
    fail_at_s = run_s / 2
    if fails and ran_s >= fail_at_s:
        return Phase(FAILED, 50, queued_s + fail_at_s)
    if never_finishes:
        # Rises but never reaches 100: half the remaining distance every run_s.
        done = 1 - 0.5 ** (ran_s / run_s) if run_s > 0 else 0.5
        return Phase(INPROGRESS, min(99, int(done * 100)), None)
    if ran_s < run_s:
        return Phase(INPROGRESS, min(99, int(100 * ran_s / run_s)), None)
    return Phase(COMPLETED, 100, queued_s + run_s)


_FILTER = re.compile(r"^\s*jobid\s+eq\s*'([^']+)'\s*(/rerun)?\s*$", re.IGNORECASE)


def parse_job_filter(text: str) -> tuple[str, bool] | None:
    """``jobId eq '{id}'`` (also the seed's ``jobId eq'{id}'`` and ``…'/rerun``) → (id, rerun)."""
    m = _FILTER.match(text)
    return (m.group(1), m.group(2) is not None) if m else None


def job_id_suffix(epoch_s: float) -> str:
    """The ``-yyyyMMddHHmmssfff`` suffix of a job id."""
    ms = round(epoch_s * 1000)
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}"


def lower_keys(value: Any) -> Any:
    """JSON object keys folded to lower case, recursively (.NET binds keys case-insensitively)."""
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


def pick(options: dict[str, str], value: object) -> str | None:
    """The canonical spelling of ``value`` among ``options`` (keys are case-folded)."""
    return options.get(value.casefold()) if isinstance(value, str) else None


@dataclass
class Job:
    job_id: str
    source: Source
    view: str
    output_format: str  # JSON | CSV | Excel
    scope: str  # Public | Private | PeopleInOrganization
    doc_id: str
    anon_token: str
    publish_link: str
    request_url: str
    created_by: User
    client_id: str
    created_at_s: float
    started_at_s: float
    never_finishes: bool = False
    fails: bool = False
    fail_text: str = ""
    # The data a run reads: a frozen copy taken at (re)queue, published when the run completes.
    pending: AquaDataset | None = None
    published: AquaDataset | None = None  # what the publish link serves
    runs: int = 1
    modified_by: str = ""

    @property
    def document_name(self) -> str:
        return f"{self.view.replace('/', '-')}{EXTENSIONS[self.output_format]}"

    def description(self) -> str:
        return f"Export {self.source.name} view '{self.view}' as {self.output_format}"


def status_text(job: Job, phase: Phase) -> str:
    if phase.status == QUEUED:
        return "Job is queued."
    if phase.status == INPROGRESS:
        return f"Exporting {job.source.name} view '{job.view}': {phase.percent}% done."
    if phase.status == FAILED:
        return job.fail_text or f"Export of view '{job.view}' failed."
    return f"Export of view '{job.view}' completed."


def create_response(job: Job) -> dict[str, Any]:
    """The create and rerun response: the scope is echoed in upper case, as the docs show."""
    return {
        "jobId": job.job_id,
        "jobStatus": QUEUED,
        "publishLink": job.publish_link,
        "publishLinkAccessScope": job.scope.upper(),
    }


def job_record(
    job: Job, phase: Phase, *, purge_after_s: float, size_mb: float, can_rerun: bool
) -> dict[str, Any]:
    """One background-job object as the OData and legacy status endpoints return it."""
    ended = job.started_at_s + phase.ended_after_s if phase.ended_after_s is not None else None
    purge_at = job.started_at_s + purge_after_s
    response = None
    if phase.status == COMPLETED:
        # A string holding JSON, exactly as the real API does it.
        response = json.dumps(
            [
                {
                    "documentName": job.document_name,
                    "DownloadLink": job.publish_link,
                    "SizeInMB": size_mb,
                    "Type": EXTENSIONS[job.output_format],
                    "DocumentID": job.doc_id,
                    "ExpiryDate": iso_ms(purge_at),
                    "Version": f"{job.runs}.0",
                }
            ]
        )
    modified = ended if ended is not None else job.started_at_s
    etag = hashlib.sha1(f"{job.job_id}:{job.runs}:{phase}".encode()).hexdigest()[:16]
    return {
        "@odata.etag": f'W/"{etag}"',
        "jobID": job.job_id,
        "categoryName": "Reports",
        "subCategoryName": "Export Data",
        "jobDescription": job.description(),
        "clientRequestId": None,
        "jobStatus": phase.status,
        "jobStatusText": status_text(job, phase),
        "percentCompleted": phase.percent,
        "responseType": "Publishlink",
        "publishLink": job.publish_link,
        "publishLinkAccessScope": job.scope,
        "response": response,
        "requestURL": job.request_url,
        "startDate": iso_ms(job.started_at_s),
        "completedDate": iso_ms(ended) if ended is not None else None,
        "purgeDateTime": iso_ms(purge_at),
        "clientID": job.client_id,
        "DatabaseName": f"AZ{job.created_by.company}Data1",
        "accountCode": job.created_by.company,
        "canReRun": "Yes" if can_rerun else "No",
        "createdBy": job.created_by.username,
        "createdDate": iso_ms(job.created_at_s),
        "modifiedBy": job.modified_by or job.created_by.username,
        "modifiedDate": iso_ms(modified),
    }
