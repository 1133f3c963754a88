"""The AIMS360 Aqua simulator over real HTTP: docs/vendor-apis.md §2.8, items 1-6."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openpyxl
import pytest
from yarl import URL

from sandbox.aqua.data import SOURCES
from sandbox.aqua.jobs import job_phase, parse_job_filter
from sandbox.aqua.sim import DEMO_CREDENTIALS, EXAMPLE_PATH, SIM
from sandbox.clock import FakeClock
from sandbox.server import RunningSandbox

StartSandbox = Callable[..., Awaitable[RunningSandbox]]

# sandbox/app.py build_app stores root["sims"] under a str key, which aiohttp 3.14 warns
# about and pytest turns into an error; the fix belongs there (use a web.AppKey).
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

TOKEN_PATH = "/authentication/v1/authentication/Token"
EXPORT_PATH = "/reports/v1.0/exportdata"
ODATA_PATH = "/jobsmanagement/odata/v1.0/backgroundjob"
JOBS_PATH = "/jobsmanagement/v1.0/backgroundjob"
DENIED = {"message": "Authorization has been denied for this request."}
COLLEAGUE = ("colleague@aims360.test", "colleague-secret", "aqua-demo-client", "aqua-demo-secret")
OTHER = ("other@othercompany.test", "other-secret", "aqua-other-client", "aqua-other-secret")
DONE_S = 10.0  # default queued_s (2) + run_s (8)
CHUNK_ROWS = 2000  # rows per write in the streaming test; 10**9 (one write) makes it fail


class Aqua:
    """A thin test client: raw requests, no vendorsync code."""

    def __init__(self, http: aiohttp.ClientSession, sandbox: RunningSandbox, clock: FakeClock):
        self.http = http
        self.sandbox = sandbox
        self.base = sandbox.url("aqua")
        self.clock = clock
        self.sim: Any = sandbox.sims["aqua"]

    async def token(
        self,
        username: str = DEMO_CREDENTIALS["username"],
        password: str = DEMO_CREDENTIALS["password"],
        client_id: str = DEMO_CREDENTIALS["client_id"],
        client_secret: str = DEMO_CREDENTIALS["client_secret"],
    ) -> str:
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": client_secret,
            "username": username,
            "password": password,
        }
        async with self.http.post(self.base + TOKEN_PATH, data=form) as r:
            assert r.status == 200, await r.text()
            return str((await r.json())["access_token"])

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = path if path.startswith("http") else self.base + path
        async with self.http.request(method, url, headers=headers, **kw) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def export(
        self,
        token: str,
        source: str = "Orders",
        view: str = "All orders",
        fmt: str = "CSV",
        scope: str = "Private",
        path: str = EXPORT_PATH,
    ) -> dict[str, Any]:
        body = {
            "exportType": "View",
            "exportDataSettings": {"source": source, "viewName": view},
            "exportCriteriaVersion": "v1.0",
            "outputFormat": fmt,
            "publishLinkAccessScope": scope,
        }
        status, job = await self.call("POST", path, token, json=body)
        assert status == 200, job
        return dict(job)

    async def status(self, token: str, job_id: str) -> dict[str, Any]:
        status, body = await self.call(
            "GET", ODATA_PATH, token, params={"$filter": f"jobId eq '{job_id}'"}
        )
        assert status == 200, body
        assert len(body["value"]) == 1, body
        return dict(body["value"][0])

    async def download(self, link: str, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(link, headers=headers) as r:
            return r.status, await r.read()

    async def rows(self, link: str, token: str | None = None) -> list[dict[str, str]]:
        status, body = await self.download(link, token)
        assert status == 200, body[:200]
        return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))

    async def faults(self, **body: Any) -> None:
        status, answer = await self.call("POST", "/_sandbox/faults", json=body)
        assert status == 200, answer


@pytest.fixture
def start(sandbox_factory: StartSandbox, http: aiohttp.ClientSession) -> Any:
    async def go(records: int = 30, seed: int = 42, **settings: Any) -> Aqua:
        clock = FakeClock()
        sandbox = await sandbox_factory(
            "aqua", records=records, seed=seed, clock=clock, vendors={"aqua": settings}
        )
        return Aqua(http, sandbox, clock)

    return go


# --- pure parts ---------------------------------------------------------------------------
def test_job_phase_moves_through_the_documented_states() -> None:
    phase = lambda t, **kw: job_phase(t, 2, 8, never_finishes=False, fails=False, **kw)  # noqa: E731
    assert phase(0).status == "Queued"
    assert (phase(3).status, phase(3).percent) == ("Inprogress", 12)
    assert phase(9).percent > phase(3).percent
    assert phase(10) == ("Completed", 100, 10)
    failed = job_phase(100, 2, 8, never_finishes=False, fails=True)
    assert failed.status == "Failed"
    assert failed.ended_after_s == 6
    stuck = [job_phase(t, 2, 8, never_finishes=True, fails=False) for t in (5, 50, 10_000)]
    assert [p.status for p in stuck] == ["Inprogress"] * 3
    assert stuck[0].percent < stuck[1].percent <= stuck[2].percent == 99


def test_parse_job_filter_takes_the_documented_spellings() -> None:
    assert parse_job_filter("jobId eq 'abc-1'") == ("abc-1", False)
    assert parse_job_filter("jobId eq'abc-1'") == ("abc-1", False)
    assert parse_job_filter("JOBID eq 'abc-1'") == ("abc-1", False)
    assert parse_job_filter("jobId eq'abc-1'/rerun") == ("abc-1", True)
    assert parse_job_filter("status eq 'Queued'") is None
    assert parse_job_filter("jobId eq abc") is None


def test_module_names_the_readme_needs() -> None:
    assert SIM.name == "aqua"
    assert set(DEMO_CREDENTIALS) == {"client_id", "client_secret", "username", "password"}
    assert EXAMPLE_PATH.startswith("/")


# --- 1. token endpoint and bearer validation -------------------------------------------------
async def test_token_endpoint_issues_bearer_tokens(start: Any) -> None:
    aqua = await start(token_lifetime_s=600)
    form = {"grant_type": "password", **DEMO_CREDENTIALS}
    status, body = await aqua.call("POST", TOKEN_PATH, data=form)
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 600
    assert body["access_token"]
    # The docs also write the path in lower case.
    status, _ = await aqua.call("POST", TOKEN_PATH.lower(), data=form)
    assert status == 200


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "nobody"}, "invalid_client"),
        ({"password": "wrong"}, "invalid_grant"),
        ({"username": "nobody@aims360.test"}, "invalid_grant"),
        # A user may only log in through a client of their own company.
        ({"username": OTHER[0], "password": OTHER[1]}, "invalid_grant"),
    ],
)
async def test_token_endpoint_rejects_bad_credentials(
    start: Any, change: dict[str, str], error: str
) -> None:
    aqua = await start()
    form = {"grant_type": "password", **DEMO_CREDENTIALS, **change}
    status, body = await aqua.call("POST", TOKEN_PATH, data=form)
    assert status == 400
    assert body["error"] == error


async def test_every_api_path_needs_a_bearer(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    job = await aqua.export(token)
    calls = [
        ("POST", EXPORT_PATH),
        ("POST", "/reports/v1.0/reports/exportdata"),
        ("GET", ODATA_PATH),
        ("POST", f"{JOBS_PATH}?$filter=jobId eq'{job['jobId']}'"),
        ("GET", f"{JOBS_PATH}/{job['jobId']}"),
        ("POST", f"{JOBS_PATH}/{job['jobId']}/rerun"),
        ("GET", job["publishLink"]),
    ]
    for method, path in calls:
        for bad in (None, "not-a-token"):
            status, body = await aqua.call(method, path, bad)
            assert (status, body) == (401, DENIED), (method, path)


async def test_tokens_expire_on_the_clock(start: Any) -> None:
    aqua = await start(token_lifetime_s=60)
    token = await aqua.token()
    assert (await aqua.call("GET", ODATA_PATH, token))[0] == 200
    aqua.clock.advance(61)
    assert await aqua.call("GET", ODATA_PATH, token) == (401, DENIED)
    assert (await aqua.call("GET", ODATA_PATH, await aqua.token()))[0] == 200


# --- 2. export create and the job lifecycle ------------------------------------------------
async def test_export_response_has_the_documented_shape(start: Any) -> None:
    aqua = await start()
    aqua.clock.set(1_767_225_600.123)  # 2026-01-01T00:00:00.123Z
    token = await aqua.token()
    for path, scope in ((EXPORT_PATH, "Public"), ("/reports/v1.0/reports/exportdata", "Private")):
        job = await aqua.export(token, scope=scope, path=path)
        assert set(job) == {"jobId", "jobStatus", "publishLink", "publishLinkAccessScope"}
        guid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        assert re.fullmatch(f"{guid}-20260101000000123", job["jobId"])
        assert job["jobStatus"] == "Queued"
        assert job["publishLinkAccessScope"] == scope.upper()
        prefix = f"{aqua.base}/reports/v1.0/publishlink/"
        assert job["publishLink"].startswith(prefix)
        segments = job["publishLink"][len(prefix) :].split("/")
        assert len(segments) == (2 if scope == "Public" else 1)


async def test_export_keys_and_values_are_case_insensitive(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    body = {
        "EXPORTTYPE": "view",
        "ExportDataSettings": {"Source": "orders", "VIEWNAME": "open orders"},
        "outputformat": "csv",
        "PublishLinkAccessScope": "peopleinorganization",
    }
    status, job = await aqua.call("POST", EXPORT_PATH, token, json=body)
    assert status == 200, job
    assert job["publishLinkAccessScope"] == "PEOPLEINORGANIZATION"
    record = await aqua.status(token, job["jobId"])
    assert record["jobDescription"] == "Export Orders view 'Open Orders' as CSV"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"exportDataSettings": {"source": "Nope", "viewName": "All orders"}}, "source"),
        ({"exportDataSettings": {"source": "Orders", "viewName": "All Styles"}}, "viewName"),
        ({"exportDataSettings": None}, "exportDataSettings"),
        ({"exportType": "Report"}, "exportType"),
        ({"outputFormat": "pdf"}, "outputFormat"),
        ({"publishLinkAccessScope": "Everyone"}, "publishLinkAccessScope"),
    ],
)
async def test_export_validation_errors_are_400(
    start: Any, change: dict[str, Any], fragment: str
) -> None:
    aqua = await start()
    token = await aqua.token()
    body = {
        "exportType": "View",
        "exportDataSettings": {"source": "Orders", "viewName": "All orders"},
        "outputFormat": "CSV",
        "publishLinkAccessScope": "Private",
        **change,
    }
    status, answer = await aqua.call("POST", EXPORT_PATH, token, json=body)
    assert status == 400
    assert fragment in answer["message"]
    status, answer = await aqua.call("POST", EXPORT_PATH, token, data="not json")
    assert status == 400
    assert "message" in answer


async def test_job_goes_queued_inprogress_completed_on_the_clock(start: Any) -> None:
    aqua = await start(queued_s=5, run_s=20)
    token = await aqua.token()
    job = await aqua.export(token)
    seen = []
    for step_s in (0, 6, 10, 10):
        aqua.clock.advance(step_s)
        record = await aqua.status(token, job["jobId"])
        seen.append((record["jobStatus"], record["percentCompleted"]))
        if record["jobStatus"] != "Completed":
            assert record["response"] is None
            assert record["completedDate"] is None
    assert seen[0] == ("Queued", 0)
    assert seen[1][0] == seen[2][0] == "Inprogress"
    assert 0 <= seen[1][1] < seen[2][1] < 100
    assert seen[3] == ("Completed", 100)
    assert record["completedDate"] == "2026-01-01T00:00:25.000Z"
    assert record["jobStatusText"].endswith("completed.")
    documents = json.loads(record["response"])  # a string holding JSON
    assert documents[0]["DownloadLink"] == job["publishLink"]
    assert documents[0]["Type"] == ".csv"
    assert documents[0]["SizeInMB"] >= 0


async def test_job_fails_fault_ends_failed_with_a_text(start: Any) -> None:
    aqua = await start()
    await aqua.faults(extra={"job_fails": True})
    token = await aqua.token()
    job = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    record = await aqua.status(token, job["jobId"])
    assert record["jobStatus"] == "Failed"
    assert "failed" in record["jobStatusText"].lower()
    assert (await aqua.download(job["publishLink"], token))[0] == 404


async def test_job_never_finishes_fault(start: Any) -> None:
    aqua = await start()
    await aqua.faults(extra={"job_never_finishes": True})
    token = await aqua.token()
    job = await aqua.export(token)
    percents = []
    for _ in range(3):
        aqua.clock.advance(3600)
        record = await aqua.status(token, job["jobId"])
        assert record["jobStatus"] == "Inprogress"
        percents.append(record["percentCompleted"])
    assert percents == sorted(percents)
    assert percents[-1] < 100
    assert (await aqua.download(job["publishLink"], token))[0] == 404


# --- 3. the status endpoint's three forms --------------------------------------------------
async def test_status_odata_and_legacy_forms_agree(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    job = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    status, odata = await aqua.call(
        "GET", ODATA_PATH, token, params={"$filter": f"jobId eq '{job['jobId']}'"}
    )
    assert status == 200
    assert odata["@odata.context"].endswith("/jobsmanagement/odata/v1.0/$metadata#backgroundjob")
    record = odata["value"][0]
    for key in (
        "@odata.etag", "jobID", "categoryName", "subCategoryName", "jobDescription",
        "clientRequestId", "jobStatus", "jobStatusText", "percentCompleted", "responseType",
        "publishLink", "publishLinkAccessScope", "response", "requestURL", "startDate",
        "completedDate", "purgeDateTime", "clientID", "DatabaseName", "accountCode",
        "canReRun", "createdBy", "createdDate", "modifiedBy", "modifiedDate",
    ):  # fmt: skip
        assert key in record, key
    assert record["jobID"] == job["jobId"]
    assert record["canReRun"] == "Yes"
    assert record["publishLinkAccessScope"] == "Private"
    assert record["createdBy"] == DEMO_CREDENTIALS["username"]
    assert record["clientID"] == DEMO_CREDENTIALS["client_id"]
    assert record["purgeDateTime"] == "2026-01-31T00:00:00.000Z"  # 30 days after the run
    # The seed's POST form (note: no space after eq) answers the same value[] wrapper.
    legacy_url = URL(aqua.base + JOBS_PATH).with_query({"$filter": f"jobId eq'{job['jobId']}'"})
    status, legacy = await aqua.call("POST", str(legacy_url), token)
    assert status == 200
    assert legacy["value"] == [record]
    # The third-party client's GET form answers one object.
    status, single = await aqua.call("GET", f"{JOBS_PATH}/{job['jobId']}", token)
    assert status == 200
    assert single == record


async def test_status_of_unknown_jobs_and_bad_filters(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    unknown = "00000000-0000-4000-8000-000000000000-20260101000000000"
    status, body = await aqua.call(
        "GET", ODATA_PATH, token, params={"$filter": f"jobId eq '{unknown}'"}
    )
    assert (status, body["value"]) == (200, [])
    assert (await aqua.call("GET", f"{JOBS_PATH}/{unknown}", token))[0] == 404
    status, body = await aqua.call("GET", ODATA_PATH, token, params={"$filter": "x eq 1"})
    assert status == 400
    assert "$filter" in body["message"]
    assert (await aqua.call("POST", JOBS_PATH, token))[0] == 400


async def test_jobs_are_visible_to_their_company_only(start: Any) -> None:
    aqua = await start()
    demo, colleague, other = (
        await aqua.token(),
        await aqua.token(*COLLEAGUE),
        await aqua.token(*OTHER),
    )
    job = await aqua.export(demo)
    await aqua.export(other)
    assert (await aqua.status(colleague, job["jobId"]))["jobID"] == job["jobId"]
    assert (await aqua.call("GET", f"{JOBS_PATH}/{job['jobId']}", other))[0] == 404
    status, listing = await aqua.call("GET", ODATA_PATH, demo)
    assert status == 200
    assert [r["jobID"] for r in listing["value"]] == [job["jobId"]]


async def test_job_listing_pages_with_next_link(start: Any) -> None:
    aqua = await start(records=10)
    token = await aqua.token()
    ids = [(await aqua.export(token))["jobId"] for _ in range(105)]
    status, first = await aqua.call("GET", ODATA_PATH, token)
    assert status == 200
    assert len(first["value"]) == 100
    status, second = await aqua.call("GET", first["@odata.nextLink"], token)
    assert "@odata.nextLink" not in second
    assert [r["jobID"] for r in first["value"] + second["value"]] == ids


# --- 4. rerun ---------------------------------------------------------------------------------
async def test_rerun_keeps_job_and_link_and_reads_current_data(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    job = await aqua.export(token, source="Customers", view="All Customers")
    aqua.clock.advance(DONE_S)
    before = {r["Customer Code"]: r for r in await aqua.rows(job["publishLink"], token)}
    status, changed = await aqua.call(
        "POST",
        "/_sandbox/mutate",
        json={"entity": "Customers", "change": 0.1, "delete": 0.1, "add": 2, "seed": 7},
    )
    assert status == 200
    # Until a rerun, the published file does not move.
    assert {r["Customer Code"] for r in await aqua.rows(job["publishLink"], token)} == set(before)
    for path in (
        f"{JOBS_PATH}/{job['jobId']}/rerun",
        str(URL(aqua.base + JOBS_PATH).with_query({"$filter": f"jobId eq'{job['jobId']}'/rerun"})),
    ):
        status, rerun = await aqua.call("POST", path, token)
        assert status == 200, rerun
        assert rerun == {**job, "jobStatus": "Queued"}
        assert (await aqua.status(token, job["jobId"]))["jobStatus"] == "Queued"
        aqua.clock.advance(DONE_S)
    after = {r["Customer Code"]: r for r in await aqua.rows(job["publishLink"], token)}
    assert set(after) == (set(before) - set(changed["deleted"])) | set(changed["added"])
    for key in changed["changed"]:
        assert after[key] != before[key]
        assert after[key]["Last Modified"].startswith("2026-01-01T00:00:10")


async def test_link_during_rerun_is_404_or_the_stale_snapshot(start: Any) -> None:
    for mode, expect in (("404", 404), ("stale", 200)):
        aqua = await start(link_before_complete=mode)
        token = await aqua.token()
        job = await aqua.export(token)
        assert (await aqua.download(job["publishLink"], token))[0] == 404  # nothing yet
        aqua.clock.advance(DONE_S)
        first = await aqua.download(job["publishLink"], token)
        await aqua.call("POST", "/_sandbox/mutate", json={"entity": "Orders", "delete": 0.5})
        await aqua.call("POST", f"{JOBS_PATH}/{job['jobId']}/rerun", token)
        during = await aqua.download(job["publishLink"], token)
        assert during[0] == expect
        if mode == "stale":
            assert during == first
        aqua.clock.advance(DONE_S)
        after = await aqua.download(job["publishLink"], token)
        assert after[0] == 200
        assert len(after[1]) < len(first[1])


async def test_rerun_refused_when_cannot_rerun(start: Any) -> None:
    aqua = await start(can_rerun=False)
    token = await aqua.token()
    job = await aqua.export(token)
    assert (await aqua.status(token, job["jobId"]))["canReRun"] == "No"
    status, body = await aqua.call("POST", f"{JOBS_PATH}/{job['jobId']}/rerun", token)
    assert status == 409
    assert "re-run" in body["message"]


async def test_rerun_of_unknown_or_purged_job_is_404(start: Any) -> None:
    aqua = await start(purge_after_s=3600)
    token = await aqua.token()
    unknown = "00000000-0000-4000-8000-000000000000-20260101000000000"
    assert (await aqua.call("POST", f"{JOBS_PATH}/{unknown}/rerun", token))[0] == 404
    seed_form = URL(aqua.base + JOBS_PATH).with_query({"$filter": f"jobId eq'{unknown}'/rerun"})
    assert (await aqua.call("POST", str(seed_form), token))[0] == 404
    job = await aqua.export(token)
    aqua.clock.advance(3600)
    assert (await aqua.call("POST", f"{JOBS_PATH}/{job['jobId']}/rerun", token))[0] == 404


# --- 5. download: scopes and formats ----------------------------------------------------------
async def test_download_scopes(start: Any) -> None:
    aqua = await start()
    demo, colleague, other = (
        await aqua.token(),
        await aqua.token(*COLLEAGUE),
        await aqua.token(*OTHER),
    )
    jobs = {
        s: await aqua.export(demo, scope=s) for s in ("Public", "Private", "PeopleInOrganization")
    }
    aqua.clock.advance(DONE_S)
    denied = (403, b'{"message": "Access Denied"}')
    public = jobs["Public"]["publishLink"]
    assert (await aqua.download(public))[0] == 200
    assert (await aqua.download(public, other))[0] == 200  # anyone holding the link
    assert await aqua.download(public.rsplit("/", 1)[0] + "/" + "0" * 32) == denied
    private = jobs["Private"]["publishLink"]
    assert (await aqua.download(private))[0] == 401
    assert (await aqua.download(private, demo))[0] == 200
    assert await aqua.download(private, colleague) == denied
    assert await aqua.download(private, other) == denied
    org = jobs["PeopleInOrganization"]["publishLink"]
    assert (await aqua.download(org))[0] == 401
    assert (await aqua.download(org, demo))[0] == 200
    assert (await aqua.download(org, colleague))[0] == 200
    assert await aqua.download(org, other) == denied
    assert (await aqua.download(private + "/" + "0" * 32, demo))[0] == 404


async def test_purged_job_and_link_are_404(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    job = await aqua.export(token, scope="Public")
    aqua.clock.advance(DONE_S)
    record = await aqua.status(token, job["jobId"])
    assert (await aqua.download(job["publishLink"]))[0] == 200
    aqua.clock.advance(30 * 86400 - DONE_S)  # exactly purgeDateTime
    assert record["purgeDateTime"] == "2026-01-31T00:00:00.000Z"
    assert (await aqua.download(job["publishLink"]))[0] == 404
    token = await aqua.token()  # the first one has expired by now
    assert (await aqua.call("GET", f"{JOBS_PATH}/{job['jobId']}", token))[0] == 404


async def test_csv_is_utf8_with_a_header_and_matches_json(start: Any) -> None:
    aqua = await start(records=40)
    token = await aqua.token()
    as_csv = await aqua.export(token, view="Open Orders", fmt="CSV")
    as_json = await aqua.export(token, view="Open Orders", fmt="JSON")
    aqua.clock.advance(DONE_S)
    async with aqua.http.get(
        as_csv["publishLink"], headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "attachment" in r.headers["Content-Disposition"]
        raw = await r.read()
    text = raw.decode("utf-8")
    assert text.splitlines()[0].split(",") == list(SOURCES["Orders"].columns)
    csv_rows = list(csv.DictReader(io.StringIO(text)))
    status, json_rows = await aqua.call("GET", as_json["publishLink"], token)
    assert status == 200
    assert csv_rows == [{k: str(v) for k, v in row.items()} for row in json_rows]
    assert csv_rows
    assert all(r["Status"] == "Open" for r in csv_rows)
    assert any(not r["Customer Name"].isascii() for r in csv_rows)  # real UTF-8 went through
    assert any('"' in r["Customer Name"] or "," in r["Customer Name"] for r in csv_rows)


@pytest.mark.parametrize(
    ("source", "view", "key"),
    [
        ("Orders", "All orders", "Order No"),
        ("Orders", "Open/Hold Orders", "Order No"),
        ("Invoices", "All Invoices", "Invoice No"),
        ("Invoices", "Balance Owing", "Invoice No"),
        ("Customers", "Active Customers", "Customer Code"),
        ("Customers", "All Customers", "Customer Code"),
        ("Styles", "Active Styles", "Style"),
        ("Styles", "All Styles", "Style"),
    ],
)
async def test_every_view_exports_keyed_rows(start: Any, source: str, view: str, key: str) -> None:
    aqua = await start(records=25)
    token = await aqua.token()
    job = await aqua.export(token, source=source, view=view)
    aqua.clock.advance(DONE_S)
    rows = await aqua.rows(job["publishLink"], token)
    keys = [r[key] for r in rows]
    assert keys
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)
    assert all(r["Last Modified"].endswith("Z") for r in rows)
    if view.startswith("All"):
        assert len(rows) == 25
    else:
        assert 0 < len(rows) < 25


async def test_json_rows_can_be_arrays(start: Any) -> None:
    aqua = await start(records=5, json_row_shape="arrays")
    token = await aqua.token()
    job = await aqua.export(token, source="Styles", view="All Styles", fmt="JSON")
    aqua.clock.advance(DONE_S)
    status, body = await aqua.call("GET", job["publishLink"], token)
    assert status == 200
    assert body[0] == list(SOURCES["Styles"].columns)
    assert len(body) == 6


async def test_excel_export_and_its_row_limit(start: Any) -> None:
    aqua = await start(records=30, excel_max_rows=100)
    token = await aqua.token()
    job = await aqua.export(token, source="Styles", view="All Styles", fmt="Excel")
    aqua.clock.advance(DONE_S)
    status, body = await aqua.download(job["publishLink"], token)
    assert status == 200
    sheet = openpyxl.load_workbook(io.BytesIO(body), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == SOURCES["Styles"].columns
    assert len(rows) == 31
    assert (await aqua.status(token, job["jobId"]))["response"].count(".xlsx") == 2
    await aqua.call("POST", "/_sandbox/mutate", json={"entity": "Styles", "add": 80})
    big = await aqua.export(token, source="Styles", view="All Styles", fmt="Excel")
    aqua.clock.advance(DONE_S)
    record = await aqua.status(token, big["jobId"])
    assert record["jobStatus"] == "Failed"
    assert "limited to 100 rows" in record["jobStatusText"]


async def test_large_csv_export_streams(start: Any) -> None:
    """200,000 rows over HTTP while the process's resident memory stays flat.

    A body built in memory would hold the whole file (35 MB of bytes, more as str) while it
    is sent; streamed, RSS grows by little more than one chunk.
    """
    records = 200_000
    aqua = await start(records=records, queued_s=0, run_s=0, csv_chunk_rows=CHUNK_ROWS)
    token = await aqua.token()
    job = await aqua.export(token)
    baseline = peak = _rss_bytes()
    lines = size = 0
    async with aqua.http.get(job["publishLink"], headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        assert "Content-Length" not in r.headers  # chunked: the size was never known up front
        async for chunk in r.content.iter_chunked(256 * 1024):
            lines += chunk.count(b"\n")
            size += len(chunk)
            peak = max(peak, _rss_bytes())
    assert lines == records + 1
    assert size > 30_000_000
    assert peak - baseline < size / 5, (peak - baseline, size)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- 6. faults ------------------------------------------------------------------------------
async def test_truncated_csv_fault_cuts_the_body(
    start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    aqua = await start(records=200, csv_chunk_rows=50)
    token = await aqua.token()
    job = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    full = await aqua.download(job["publishLink"], token)
    await aqua.faults(extra={"truncate_csv": True})
    with caplog.at_level(logging.ERROR), pytest.raises(aiohttp.ClientPayloadError):
        await aqua.download(job["publishLink"], token)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await aqua.faults(extra={"truncate_csv": False})
    assert await aqua.download(job["publishLink"], token) == full
    _, stats = await aqua.call("GET", "/_sandbox/stats")
    assert stats["errors_injected"] == 1


async def test_a_rendered_file_is_served_again_until_the_data_changes(start: Any) -> None:
    """A second download of the same export (another job too) is the stored file, byte
    for byte; a cut download is never stored; a change in the data renders anew."""
    aqua = await start(records=200, csv_chunk_rows=50)
    token = await aqua.token()
    first = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    await aqua.faults(extra={"truncate_csv": True})
    with pytest.raises(aiohttp.ClientPayloadError):
        await aqua.download(first["publishLink"], token)
    rendered = aqua.sim.files.rendered
    assert rendered._files == {}  # the cut file was not kept
    await aqua.faults(extra={"truncate_csv": False})
    body = await aqua.download(first["publishLink"], token)
    assert len(rendered._files) == 1
    second = await aqua.export(token)  # another job, the same rows
    aqua.clock.advance(DONE_S)
    assert await aqua.download(second["publishLink"], token) == body
    assert len(rendered._files) == 1
    status, _ = await aqua.call(
        "POST", "/_sandbox/mutate", json={"entity": "Orders", "delete": 0.5}
    )
    assert status == 200
    third = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    changed = await aqua.download(third["publishLink"], token)
    assert changed != body
    assert len(rendered._files) == 2
    assert await aqua.download(first["publishLink"], token) == body  # its snapshot still


async def test_shared_truncate_rate_cuts_json_downloads_too(start: Any) -> None:
    aqua = await start(records=5)
    token = await aqua.token()
    job = await aqua.export(token, fmt="JSON")
    aqua.clock.advance(DONE_S)
    await aqua.faults(truncate_rate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await aqua.download(job["publishLink"], token)


async def test_token_expire_now_kills_every_token_once(start: Any) -> None:
    aqua = await start()
    first, second = await aqua.token(), await aqua.token(*COLLEAGUE)
    await aqua.faults(extra={"token_expire_now": True})
    assert await aqua.call("GET", ODATA_PATH, first) == (401, DENIED)
    assert await aqua.call("GET", ODATA_PATH, second) == (401, DENIED)
    fresh = await aqua.token()
    assert (await aqua.call("GET", ODATA_PATH, fresh))[0] == 200  # one shot, not a standing rule
    assert (await aqua.call("GET", ODATA_PATH, fresh))[0] == 200


async def test_unknown_vendor_fault_is_rejected(start: Any) -> None:
    aqua = await start()
    status, body = await aqua.call("POST", "/_sandbox/faults", json={"extra": {"nope": 1}})
    assert status == 400
    assert "nope" in body["error"]


async def test_configured_rate_cap_answers_429_with_retry_after(start: Any) -> None:
    aqua = await start(retry_after_s=3)
    await aqua.faults(limits={"enabled": True, "rate_per_s": 2})
    token = await aqua.token()  # the first of the two allowed this second
    assert (await aqua.call("GET", ODATA_PATH, token))[0] == 200
    async with aqua.http.get(
        aqua.base + ODATA_PATH, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "3"
        assert "message" in await r.json()
    _, stats = await aqua.call("GET", "/_sandbox/stats")
    assert stats["rate_limited"] == 1


# --- mutation API, determinism, stats, settings ---------------------------------------------
async def test_mutation_by_key(start: Any) -> None:
    aqua = await start(records=10)
    token = await aqua.token()
    body = {
        "entity": "orders",
        "update": [{"id": "SO100001", "Status": "Hold"}, {"Order No": "SO100002", "PO No": "X"}],
        "delete_ids": ["SO100003"],
    }
    status, result = await aqua.call("POST", "/_sandbox/mutate", json=body)
    assert status == 200
    assert result["updated"] == ["SO100001", "SO100002"]
    assert result["deleted"] == ["SO100003"]
    assert result["count"] == 9
    assert result["key"] == "Order No"
    job = await aqua.export(token)
    aqua.clock.advance(DONE_S)
    rows = {r["Order No"]: r for r in await aqua.rows(job["publishLink"], token)}
    assert rows["SO100001"]["Status"] == "Hold"
    assert rows["SO100002"]["PO No"] == "X"
    assert rows["SO100001"]["Last Modified"] == "2026-01-01T00:00:00.000Z"
    assert "SO100003" not in rows


@pytest.mark.parametrize(
    "body",
    [
        {"entity": "Widgets", "change": 0.1},
        {"entity": "Orders", "update": [{"id": "SO999999", "Status": "Hold"}]},
        {"entity": "Orders", "update": [{"id": "SO100001", "Colour": "red"}]},
        {"entity": "Orders", "delete_ids": ["nope"]},
    ],
)
async def test_mutation_errors_are_400_and_change_nothing(start: Any, body: dict[str, Any]) -> None:
    aqua = await start(records=10)
    before = [aqua.sim.data["Orders"].get(i) for i in range(10)]
    status, answer = await aqua.call("POST", "/_sandbox/mutate", json=body)
    assert status == 400
    assert "error" in answer
    assert [aqua.sim.data["Orders"].get(i) for i in range(10)] == before


async def test_reset_data_restores_the_generated_rows(start: Any) -> None:
    aqua = await start(records=10)
    token = await aqua.token()
    await aqua.call("POST", "/_sandbox/mutate", json={"entity": "Styles", "delete": 0.5})
    assert (await aqua.call("POST", "/_sandbox/reset", json={"data": True}))[0] == 200
    job = await aqua.export(token, source="Styles", view="All Styles")  # the token survived
    aqua.clock.advance(DONE_S)
    assert len(await aqua.rows(job["publishLink"], token)) == 10


async def test_same_seed_same_data(start: Any) -> None:
    bodies = []
    for seed in (7, 7, 8):
        aqua = await start(records=20, seed=seed)
        token = await aqua.token()
        job = await aqua.export(token, source="Invoices", view="All Invoices")
        aqua.clock.advance(DONE_S)
        bodies.append(await aqua.download(job["publishLink"], token))
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


async def test_stats_count_requests_by_status(start: Any) -> None:
    aqua = await start()
    token = await aqua.token()
    await aqua.call("GET", ODATA_PATH, token)
    await aqua.call("GET", ODATA_PATH)
    status, stats = await aqua.call("GET", "/_sandbox/stats")
    assert status == 200
    assert stats["vendor"] == "aqua"
    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 2, "401": 1}
    assert stats["violation_count"] == 0


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"no_such_setting": 1}, "unknown aqua setting"),
        ({"link_before_complete": "old"}, "link_before_complete"),
        ({"json_row_shape": "rows"}, "json_row_shape"),
    ],
)
async def test_bad_settings_are_errors(start: Any, settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        await start(**settings)
