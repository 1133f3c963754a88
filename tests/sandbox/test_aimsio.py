"""The Aimsio simulator over real HTTP: its contract (vendor-apis.md §1.7), failure modes,
limits, faults, mutation API, determinism and stats."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import aiohttp
import pytest

from sandbox.aimsio.rows import row_errors
from sandbox.aimsio.schema import SPECS, index_from_key, parse_path, resolve_entity
from sandbox.aimsio.sim import AimsioSim, parse_basic
from sandbox.app import SandboxOptions
from sandbox.clock import FakeClock
from sandbox.server import RunningSandbox
from tests.sandbox.conftest import StartSandbox

API = "/rest/api/standard/v1"
T0_MS = 1_767_225_600_000  # FakeClock's default start, in ms
ENTITIES = [name for name in SPECS]
ID_ENTITIES = {"PayrollPeriod", "Invoice", "Timecard"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic("demo", "demo-secret")


class Api:
    """A thin client for one running Aimsio simulator."""

    def __init__(self, sandbox: RunningSandbox, http: aiohttp.ClientSession) -> None:
        self.root = sandbox.url("aimsio")
        self.base = self.root + API
        self.sim: AimsioSim = sandbox.sims["aimsio"]  # type: ignore[assignment]
        self.http = http

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
        if isinstance(body, bytes):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        url = path if path.startswith("http") else self.base + path
        async with self.http.request(method, url, **kwargs) as resp:
            raw = await resp.read()
            try:
                return resp.status, await resp.json(content_type=None) if raw else None
            except ValueError:
                return resp.status, raw

    async def get(self, path: str) -> Any:
        status, body = await self.call("GET", path)
        assert status == 200, body
        return body

    async def post(self, path: str, body: Any) -> Any:
        status, out = await self.call("POST", path, body)
        assert status == 200, out
        return out

    async def control(self, what: str, body: Any = None) -> Any:
        method = "GET" if body is None else "POST"
        async with self.http.request(method, f"{self.root}/_sandbox/{what}", json=body) as resp:
            return resp.status, await resp.json()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock) -> Any:
    """``await start(records=..., limits=False, **aimsio settings)`` → :class:`Api`."""

    async def go(records: int = 30, limits: bool = False, seed: int = 42, **settings: Any) -> Api:
        own = {"limits": {"enabled": limits}, **settings}
        sandbox = await sandbox_factory(
            "aimsio", records=records, seed=seed, clock=clock, vendors={"aimsio": own}
        )
        return Api(sandbox, http)

    return go


def new_user(name: str = "svc@acme-sandbox", **fields: Any) -> dict[str, Any]:
    row = {
        "userName": name,
        "userFirstName": "New",
        "userLastName": "User",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
    }
    return row | fields


def new_employee(code: str = "E-NEW", **fields: Any) -> dict[str, Any]:
    row = {
        "employeeCode": code,
        "employmentType": "DIRECT_HIRE",
        "employeeStatusUname": "active_employee_status",
        "employeeFirstName": "Ada",
        "employeeLastName": "Lovelace",
        "employeeTradeCode": "LAB-FOREMAN",
    }
    return row | fields


def new_job(number: str = "J-NEW", **fields: Any) -> dict[str, Any]:
    row = {
        "jobNumber": number,
        "jobName": "New job",
        "jobStatus": "Unassigned",
        "jobClientCode": "C-000001",
        "jobPriceBookName": "PB-000001",
        "jobStartDate": T0_MS,
    }
    return row | fields


def counters(result: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        result["numberOfEntitiesCreated"],
        result["numberOfEntitiesEdited"],
        result["numberOfEntitiesEditedWithErrors"],
        result["numberOfEntitiesNotImportedDueToErrors"],
        result["numberOfEntitiesImported"],
    )


# --- pure helpers ---------------------------------------------------------------------------
def test_parse_path_and_entity_names() -> None:
    assert parse_path("rest/api/standard/v1/User", True) == ("User", None)
    assert parse_path("REST/API/Standard/V1/joborder/abc/", True) == ("joborder", "abc")
    assert parse_path("REST/api/standard/v1/User", False) is None
    assert parse_path("rest/api/standard/v1/User/a/b", True) is None
    assert parse_path("rest/api/standard/v2/User", True) is None
    assert resolve_entity("nonrecurringbillableitem", True) == "NonRecurringBillableItem"
    assert resolve_entity("company", True) == resolve_entity("Company", False) == "Customer"
    assert resolve_entity("user", False) is None


def test_parse_basic_and_natural_keys() -> None:
    assert parse_basic(AUTH["Authorization"]) == ("demo", "demo-secret")
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic(None) is None
    spec = SPECS["User"]
    assert index_from_key(spec, "user000007@acme-sandbox") == 6
    assert index_from_key(spec, "user00000x@acme-sandbox") is None
    assert index_from_key(spec, 7) is None


def test_row_errors_follow_the_documented_required_fields() -> None:
    assert row_errors("User", new_user()) == []
    assert row_errors("User", new_user(userShortCode="ABCD")) == [
        "userShortCode must be a string of at most 3 characters"
    ]
    missing = row_errors("User", {"userName": "x"})
    assert "userRoleNames or userRoleGuids is required" in missing
    assert len(missing) == 4
    assert row_errors("Employee", new_employee(employmentType=" SUBCONTRACTOR")) == []
    payroll = row_errors("Employee", new_employee(), payroll_required=True)
    assert len(payroll) == 3


# --- 1. auth ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/User"),
        ("GET", "/JobOrder/00000000-0000-0000-0000-000000000000"),
        ("POST", "/User"),
        ("POST", "/InitiatePasswordReset"),
        ("GET", "/NoSuchThing"),
    ],
)
async def test_wrong_credentials_get_401_with_basic_challenge(
    start: Any, method: str, path: str
) -> None:
    api = await start()
    for headers in ({}, basic("demo", "wrong"), basic("nobody", "x"), {"Authorization": "Basic ?"}):
        status, body = await api.call(method, path, {"userList": []}, headers=headers)
        assert status == 401
        assert body["status"] == 401
    async with api.http.get(api.base + path) as resp:
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="aimsio"'


async def test_user_without_api_permission_gets_403(start: Any) -> None:
    api = await start()
    status, body = await api.call("GET", "/User", headers=basic("noapi", "noapi-secret"))
    assert (status, body["status"]) == (403, 403)
    status, _ = await api.call("GET", "/User", headers=basic("noapi", "wrong"))
    assert status == 401


# --- 2. reads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entity", [*ENTITIES, "Company"])
async def test_list_is_a_bare_array_of_stubs_in_ascending_id_order(start: Any, entity: str) -> None:
    api = await start(records=25)
    stubs = await api.get(f"/{entity}")
    assert isinstance(stubs, list)
    assert len(stubs) == 25
    dtype = resolve_entity(entity, True)
    id_key = "id" if dtype in ID_ENTITIES else "guid"
    for stub in stubs:
        assert set(stub) == {"dtype", id_key, "updatedAt"}
        assert stub["dtype"] == dtype
        assert isinstance(stub["updatedAt"], int)
        assert stub["updatedAt"] > 1_700_000_000_000  # epoch milliseconds
    ids = [s[id_key] for s in stubs]
    assert ids == sorted(ids)
    if id_key == "id":
        assert ids == list(range(1, 26))
    else:
        assert all(str(uuid.UUID(i)) == i for i in ids)


@pytest.mark.parametrize("entity", ENTITIES)
async def test_get_one_returns_the_full_object(start: Any, entity: str) -> None:
    api = await start()
    stub = (await api.get(f"/{entity}"))[5]
    ident = stub.get("guid", stub.get("id"))
    full = await api.get(f"/{entity}/{ident}")
    spec = SPECS[entity]
    assert full["dtype"] == entity
    assert full["updatedAt"] == stub["updatedAt"]
    assert full[spec.guid_field or spec.int_field] == ident
    assert full[spec.key_field] == index_key(entity, 5)


def index_key(entity: str, index: int) -> str:
    spec = SPECS[entity]
    return f"{spec.key_prefix}{index + 1:06d}{spec.key_suffix}"


async def test_documented_fields_of_user_employee_and_job(start: Any) -> None:
    api = await start()
    user = await api.get(f"/User/{(await api.get('/User'))[0]['guid']}")
    for name in ("userGuid", "userName", "userFirstName", "userLastName", "userFullName"):
        assert isinstance(user[name], str)
    assert user["userFullName"] == f"{user['userFirstName']} {user['userLastName']}"
    assert isinstance(user["userIsActive"], bool)
    assert len(user["userRoleNames"]) == len(user["userRoleGuids"]) == 1
    assert len(user["userShortCode"]) <= 3
    employee = await api.get(f"/Employee/{(await api.get('/Employee'))[0]['guid']}")
    for name in (
        "employeeGuid", "employeeCode", "employmentType", "employeeStatusUname",
        "employeeFirstName", "employeeLastName", "employeeTradeGuid", "employeeTradeCode",
        "employmentHireDate", "employeePayrollHolidayEligibility", "employeeLinkedUserGuid",
        "employeeLinkedUserName", "employeeCreatedAt", "employeeUpdatedAt", "employeeFormData",
    ):  # fmt: skip
        assert name in employee
    job = await api.get(f"/JobOrder/{(await api.get('/JobOrder'))[2]['guid']}")
    for name in (
        "jobId", "jobGuid", "jobNumber", "jobName", "jobDescription", "jobStatus",
        "jobTypeUname", "jobClientCode", "jobClientGuid", "jobClientName", "jobPriceBookName",
        "jobPriceBookGuid", "jobStartDate", "jobEndDate", "jobCreatedAt", "jobUpdatedAt",
        "jobShowInDispatching", "jobAssigneeEmployeeNumber", "jobAssigneeFullName",
        "jobAssigneeUserName", "jobAddress", "jobLocationCode", "jobLocationName",
        "jobLocationLat", "jobLocationLong", "jobDirection", "jobWBSSchedule",
    ):  # fmt: skip
        assert name in job
    assert job["jobStatus"] in SPECS_ENUM_JOB
    assert job["jobEndDate"] >= job["jobStartDate"]
    assert set(job["jobWBSSchedule"]) >= {"jobScheduleGuid", "jobScheduleConversionRules"}
    # Client name comes from the customer row; NRBs, crew and equipment are embedded.
    client = await api.get(f"/Customer/{job['jobClientGuid']}")
    assert job["jobClientName"] == client["customerName"]
    assert job["jobAssigneeFullName"]
    assert [n["nrbJobGuid"] for n in job["jobNrbList"]] == [job["jobGuid"]]
    assert len(job["jobCrewList"]) == 2
    assert len(job["jobEquipmentList"]) == 1


SPECS_ENUM_JOB = ("Unassigned", "Assigned", "Active", "Finished", "Cancelled", "Deleted")


@pytest.mark.parametrize(
    "path",
    [
        "/User/00000000-0000-0000-0000-000000000001",  # not one of ours
        "/User/not-a-guid",
        "/Invoice/0",
        "/Invoice/31",  # records=30
        "/Invoice/abc",
    ],
)
async def test_unknown_ids_get_404(start: Any, path: str) -> None:
    api = await start()
    status, body = await api.call("GET", path)
    assert status == 404
    assert body["status"] == 404
    assert body["message"]


async def test_guid_of_another_entity_is_404(start: Any) -> None:
    api = await start()
    employee_guid = (await api.get("/Employee"))[0]["guid"]
    status, _ = await api.call("GET", f"/User/{employee_guid}")
    assert status == 404


async def test_paths_match_case_insensitively_by_default(start: Any) -> None:
    api = await start()
    upper = await api.get("/User")
    status, lower = await api.call("GET", api.root + "/rest/API/standard/v1/user")
    assert (status, lower) == (200, upper)
    status, _ = await api.call("GET", "/payrollperiod/1")
    assert status == 200


async def test_case_sensitive_paths_setting(start: Any) -> None:
    api = await start(case_insensitive_paths=False)
    assert (await api.call("GET", "/user"))[0] == 404
    assert (await api.call("GET", "/User"))[0] == 200


async def test_id_entities_setting_switches_listing_to_int_ids(start: Any) -> None:
    api = await start(id_entities=["User"])
    stubs = await api.get("/User")
    assert stubs[0] == {"dtype": "User", "id": 1, "updatedAt": stubs[0]["updatedAt"]}
    assert (await api.get("/User/1"))["userName"] == "user000001@acme-sandbox"


async def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown aimsio setting"):
        AimsioSim(SandboxOptions(vendors={"aimsio": {"no_such_setting": 1}}))


# --- 3. writes --------------------------------------------------------------------------------
async def test_post_user_creates_then_edits_and_bumps_updated_at(
    start: Any, clock: FakeClock
) -> None:
    api = await start()
    result = await api.post("/User", {"userList": [new_user()]})
    assert set(result) == {
        "dtype", "id", "guid", "importConfiguration", "numberOfEntitiesCreated",
        "numberOfEntitiesEdited", "numberOfEntitiesEditedWithErrors",
        "numberOfEntitiesNotImportedDueToErrors", "extra", "notices", "updatedAt",
        "importResultType", "numberOfEntitiesImported",
    }  # fmt: skip
    assert result["dtype"] == "IntegrationImportResult"
    assert (result["id"], result["importConfiguration"], result["extra"]) == (0, None, None)
    assert counters(result) == (1, 0, 0, 0, 1)
    assert result["notices"] == []
    assert result["updatedAt"] == T0_MS
    stubs = await api.get("/User")
    assert len(stubs) == 31
    created = stubs[-1]
    assert created["updatedAt"] == T0_MS
    full = await api.get(f"/User/{created['guid']}")
    assert full["userFullName"] == "New User"
    assert full["userRoleGuids"] == [api.sim.gen.role_guids["Field Worker"]]
    assert full["userAreas"] == []

    clock.advance(60)
    result = await api.post("/User", {"userList": [new_user(userPhone="604-423-1532")]})
    assert counters(result) == (0, 1, 0, 0, 1)
    again = await api.get(f"/User/{created['guid']}")
    assert again["userPhone"] == "604-423-1532"
    assert again["updatedAt"] == T0_MS + 60_000
    assert len(await api.get("/User")) == 31

    # Matching on the guid first allows renaming; the old natural key is then free.
    renamed = new_user("renamed@acme-sandbox", userGuid=created["guid"])
    assert counters(await api.post("/User", {"userList": [renamed]})) == (0, 1, 0, 0, 1)
    assert (await api.get(f"/User/{created['guid']}"))["userName"] == "renamed@acme-sandbox"
    assert counters(await api.post("/User", {"userList": [new_user()]}))[0] == 1


async def test_post_updates_a_generated_row_by_natural_key(start: Any, clock: FakeClock) -> None:
    api = await start()
    stub = (await api.get("/User"))[3]
    clock.advance(5)
    row = new_user("user000004@acme-sandbox", userFirstName="Changed")
    assert counters(await api.post("/User", {"userList": [row]})) == (0, 1, 0, 0, 1)
    full = await api.get(f"/User/{stub['guid']}")
    assert (full["userFirstName"], full["updatedAt"]) == ("Changed", T0_MS + 5000)
    assert full["userFullName"] == "Changed User"
    untouched = (await api.get("/User"))[2]
    assert untouched["updatedAt"] < T0_MS


async def test_invalid_rows_are_not_imported_and_named_in_notices(start: Any) -> None:
    api = await start()
    admin = api.sim.gen.role_guids["Admin"]
    rows = [
        new_user("ok1@acme-sandbox"),
        {"userName": "missing@acme-sandbox"},
        new_user("short@acme-sandbox", userShortCode="ABCD"),
        new_user("role@acme-sandbox", userRoleNames=["Astronaut"]),
        new_user("active@acme-sandbox", userIsActive="yes"),
        new_user("guids@acme-sandbox", userRoleNames=None, userRoleGuids=["nope"]),
        new_user("ok2@acme-sandbox", userRoleNames=None, userRoleGuids=[admin]),
        new_user(userGuid="00000000-0000-0000-0000-000000000001"),
        "not an object",
    ]  # fmt: skip
    result = await api.post("/User", {"userList": rows})
    assert counters(result) == (2, 0, 0, 7, 2)
    keys = {n["entityKey"] for n in result["notices"]}
    assert keys == {
        "missing@acme-sandbox", "short@acme-sandbox", "role@acme-sandbox",
        "active@acme-sandbox", "guids@acme-sandbox", "svc@acme-sandbox", None,
    }  # fmt: skip
    assert all(n["severity"] == "ERROR" and n["message"] for n in result["notices"])
    assert sum(n["entityKey"] == "missing@acme-sandbox" for n in result["notices"]) == 4
    assert len(await api.get("/User")) == 32


async def test_renaming_onto_another_rows_key_is_rejected(start: Any) -> None:
    api = await start()
    guid = (await api.get("/User"))[0]["guid"]
    row = new_user("user000002@acme-sandbox", userGuid=guid)
    result = await api.post("/User", {"userList": [row]})
    assert counters(result) == (0, 0, 0, 1, 0)
    assert "used by another row" in result["notices"][0]["message"]


async def test_employee_rules(start: Any) -> None:
    api = await start()
    operator = api.sim.gen.trade_guids["LAB-OPERATOR"]
    rows = [
        new_employee("E-1", employmentType=" SUBCONTRACTOR"),  # the spec's stray space
        new_employee("E-2", employmentType="CONTRACTOR"),
        new_employee("E-3", employeeTradeCode=None),
        new_employee("E-4", employeeTradeCode="LAB-ASTRONAUT"),
        new_employee("E-5", employeeStatusUname="retired"),
        new_employee("E-6", employeeTradeCode=None, employeeTradeGuid=operator),
        new_employee("E-7", employeeTradeCode={"not": "hashable"}),
    ]  # fmt: skip
    result = await api.post("/Employee", {"employeeList": rows})
    assert counters(result) == (2, 0, 0, 5, 2)
    assert {n["entityKey"] for n in result["notices"]} == {"E-2", "E-3", "E-4", "E-5", "E-7"}
    created = (await api.get("/Employee"))[-2:]
    first = await api.get(f"/Employee/{created[0]['guid']}")
    assert first["employmentType"] == "SUBCONTRACTOR"
    assert first["employeeCreatedAt"] == first["employeeUpdatedAt"] == T0_MS
    second = await api.get(f"/Employee/{created[1]['guid']}")
    assert second["employeeTradeCode"] == "LAB-OPERATOR"


async def test_timecards_module_makes_payroll_fields_required(start: Any) -> None:
    api = await start(timecards_module=True)
    result = await api.post("/Employee", {"employeeList": [new_employee()]})
    assert counters(result) == (0, 0, 0, 1, 0)
    assert len(result["notices"]) == 3
    payroll = {
        "employeePayrollTypeName": "Hourly",
        "employeePayrollUnionName": "Local 488",
        "employeePayrollHolidayEligibility": "PER_UNION",
    }
    result = await api.post("/Employee", {"employeeList": [new_employee(**payroll)]})
    assert counters(result) == (1, 0, 0, 0, 1)


async def test_job_order_rules_and_status_on_create(start: Any, clock: FakeClock) -> None:
    api = await start()
    rows = [
        new_job("J-A", jobStatus="Active"),
        new_job("J-B", jobClientCode="C-999999"),
        new_job("J-C", jobEndDate=T0_MS - 1),
        new_job("J-D", jobPriceBookName="nope"),
        new_job("J-E", jobStatus="Paused"),
        new_job("J-F", jobAssigneeEmployeeNumber="E-NOBODY"),
    ]
    result = await api.post("/JobOrder", {"jobList": rows})
    assert counters(result) == (1, 0, 0, 5, 1)
    warning = [n for n in result["notices"] if n["severity"] == "WARNING"]
    assert [w["entityKey"] for w in warning] == ["J-A"]
    created = (await api.get("/JobOrder"))[-1]
    job = await api.get(f"/JobOrder/{created['guid']}")
    assert (job["jobStatus"], job["jobId"], job["jobCreatedAt"]) == ("Unassigned", 31, T0_MS)
    assert job["jobClientGuid"] == (await api.get("/Customer"))[0]["guid"]
    # An existing job's status may change.
    clock.advance(1)
    result = await api.post("/JobOrder", {"jobList": [new_job("J-A", jobStatus="Active")]})
    assert counters(result) == (0, 1, 0, 0, 1)
    job = await api.get(f"/JobOrder/{created['guid']}")
    assert (job["jobStatus"], job["jobUpdatedAt"]) == ("Active", T0_MS + 1000)


async def test_job_create_status_setting_none_keeps_the_sent_status(start: Any) -> None:
    api = await start(job_create_status=None)
    result = await api.post("/JobOrder", {"jobList": [new_job(jobStatus="Active")]})
    assert result["notices"] == []
    created = (await api.get("/JobOrder"))[-1]
    assert (await api.get(f"/JobOrder/{created['guid']}"))["jobStatus"] == "Active"


async def test_nrbs_posted_separately_show_up_in_their_job(start: Any) -> None:
    api = await start()
    jobs = await api.get("/JobOrder")
    row = {
        "nrbNumber": "NRB-X",
        "nrbJobNumber": "J-000002",
        "nrbItemCode": "ITEM-000001",
        "nrbQuantity": 3,
    }
    moved = row | {"nrbNumber": "NRB-000001"}  # generated for job 1, moved to job 2
    bad_job = row | {"nrbNumber": "NRB-Y", "nrbJobGuid": "x"}
    result = await api.post("/NRB", {"nrbList": [row, moved, bad_job]})
    assert counters(result) == (1, 1, 0, 1, 2)
    job1 = await api.get(f"/JobOrder/{jobs[0]['guid']}")
    job2 = await api.get(f"/JobOrder/{jobs[1]['guid']}")
    assert job1["jobNrbList"] == []
    assert [n["nrbNumber"] for n in job2["jobNrbList"]] == ["NRB-000001", "NRB-000002", "NRB-X"]
    item = (await api.get("/NonRecurringBillableItem"))[0]
    assert job2["jobNrbList"][2]["nrbItemGuid"] == item["guid"]


async def test_renamed_customer_shows_in_job(start: Any) -> None:
    api = await start()
    job = await api.get(f"/JobOrder/{(await api.get('/JobOrder'))[0]['guid']}")
    row = {"customerCode": job["jobClientCode"], "customerName": "Renamed Ltd"}
    assert counters(await api.post("/Company", {"companyList": [row]})) == (0, 1, 0, 0, 1)
    again = await api.get(f"/JobOrder/{job['jobGuid']}")
    assert again["jobClientName"] == "Renamed Ltd"


@pytest.mark.parametrize(
    ("entity", "list_key", "row", "field"),
    [
        ("Equipment", "equipmentList", {"equipmentCode": "EQ-000003", "equipmentName": "Big"},
         "equipmentName"),
        ("Customer", "customerList", {"customerCode": "C-000003", "customerName": "Acme"},
         "customerName"),
        ("PriceBook", "priceBookList", {"priceBookName": "PB-000003", "priceBookCurrency": "USD"},
         "priceBookCurrency"),
    ],
)  # fmt: skip
async def test_master_data_upserts_by_natural_key(
    start: Any, clock: FakeClock, entity: str, list_key: str, row: dict[str, Any], field: str
) -> None:
    api = await start()
    clock.advance(2)
    fresh = {k: (f"NEW-{v}" if k == SPECS[entity].key_field else v) for k, v in row.items()}
    result = await api.post(f"/{entity}", {list_key: [row, fresh, {field: row[field]}]})
    assert counters(result) == (1, 1, 0, 1, 2)
    stubs = await api.get(f"/{entity}")
    assert len(stubs) == 31
    assert stubs[2]["updatedAt"] == stubs[-1]["updatedAt"] == T0_MS + 2000
    assert (await api.get(f"/{entity}/{stubs[2]['guid']}"))[field] == row[field]


@pytest.mark.parametrize(
    ("entity", "status_field", "status"),
    [("Invoice", "invoiceStatus", "Paid"), ("Timecard", "timecardStatus", "Approved")],
)
async def test_invoice_and_timecard_posts_only_change_status(
    start: Any, clock: FakeClock, entity: str, status_field: str, status: str
) -> None:
    api = await start()
    clock.advance(3)
    spec = SPECS[entity]
    list_key = spec.list_keys[0]
    rows = [
        {spec.int_field: 2, status_field: status},
        {spec.key_field: index_key(entity, 3), status_field: status, "x": 1},
        {spec.key_field: "NEW-1", status_field: status},  # would create
        {spec.int_field: 999, status_field: status},
        {spec.int_field: 5, status_field: "Bogus"},
    ]
    result = await api.post(f"/{entity}", {list_key: rows})
    assert counters(result) == (0, 2, 1, 3, 2)
    assert [n["severity"] for n in result["notices"]].count("WARNING") == 1
    assert "NEW-1" in {n["entityKey"] for n in result["notices"]}
    stubs = await api.get(f"/{entity}")
    assert len(stubs) == 30
    for ident in (2, 4):
        full = await api.get(f"/{entity}/{ident}")
        assert (full[status_field], full["updatedAt"]) == (status, T0_MS + 3000)
        assert "x" not in full
    assert stubs[4]["updatedAt"] < T0_MS


@pytest.mark.parametrize("entity", ["NonRecurringBillableItem", "PayrollPeriod"])
async def test_read_only_entities_refuse_posts(start: Any, entity: str) -> None:
    api = await start()
    status, body = await api.call("POST", f"/{entity}", {"x": []})
    assert (status, body["status"]) == (405, 405)
    status, _ = await api.call("DELETE", "/User")
    assert status == 405


async def test_initiate_password_reset(start: Any) -> None:
    api = await start()
    result = await api.post("/InitiatePasswordReset", {"userName": "user000003@acme-sandbox"})
    assert counters(result) == (0, 1, 0, 0, 1)
    assert api.sim.password_resets == ["user000003@acme-sandbox"]
    result = await api.post("/initiatepasswordreset", {"userName": "ghost@acme-sandbox"})
    assert counters(result) == (0, 0, 0, 1, 0)
    assert result["notices"][0]["entityKey"] == "ghost@acme-sandbox"
    assert counters(await api.post("/InitiatePasswordReset", {}))[3] == 1
    assert (await api.call("GET", "/InitiatePasswordReset"))[0] == 405


@pytest.mark.parametrize(
    "body",
    [b'{"userList": [', b"\xff\xfe", b"[1, 2]", b'{"employeeList": []}', b'{"userList": {}}'],
)
async def test_bad_bodies_get_400(start: Any, body: bytes) -> None:
    api = await start()
    status, out = await api.call("POST", "/User", body)
    assert (status, out["status"]) == (400, 400)
    assert len(await api.get("/User")) == 30


async def test_empty_list_imports_nothing(start: Any) -> None:
    api = await start()
    assert counters(await api.post("/User", {"userList": []})) == (0, 0, 0, 0, 0)


async def test_result_guids_are_deterministic_and_distinct(start: Any) -> None:
    api = await start()
    first = await api.post("/User", {"userList": []})
    second = await api.post("/User", {"userList": []})
    assert first["guid"] != second["guid"]
    other = await start()
    assert (await other.post("/User", {"userList": []}))["guid"] == first["guid"]


# --- 5. faults --------------------------------------------------------------------------------
async def test_reject_keys_fault_rejects_chosen_rows(start: Any) -> None:
    api = await start()
    chosen = ["a@acme-sandbox", "c@acme-sandbox", "e@acme-sandbox"]
    status, _ = await api.control("faults", {"extra": {"reject_keys": chosen}})
    assert status == 200
    rows = [new_user(f"{c}@acme-sandbox") for c in "abcdef"]
    result = await api.post("/User", {"userList": rows})
    assert counters(result) == (3, 0, 0, 3, 3)
    assert [n["entityKey"] for n in result["notices"]] == chosen
    _, stats = await api.control("stats")
    assert stats["errors_injected"] == 3


async def test_reject_rate_fault(start: Any) -> None:
    api = await start()
    await api.control("faults", {"reject_rate": 1.0})
    rows = [new_user(f"{c}@acme-sandbox") for c in "abcd"]
    result = await api.post("/User", {"userList": rows})
    assert counters(result) == (0, 0, 0, 4, 0)
    await api.control("faults", {"reject_rate": 0.5, "seed": 7})
    result = await api.post("/User", {"userList": rows})
    assert 0 < result["numberOfEntitiesCreated"] < 4
    assert result["numberOfEntitiesCreated"] + result["numberOfEntitiesNotImportedDueToErrors"] == 4


async def test_unknown_vendor_fault_is_refused(start: Any) -> None:
    api = await start()
    status, _ = await api.control("faults", {"extra": {"reject_everything": True}})
    assert status == 400


async def test_injected_errors_and_latency(start: Any) -> None:
    api = await start()
    await api.control("faults", {"error_rate": 1.0, "error_status": 503})
    status, body = await api.call("GET", "/User")
    assert (status, body["status"]) == (503, 503)
    await api.control("faults", {"error_rate": 0.0, "latency_ms": 150})
    started = time.perf_counter()
    await api.get("/User")
    assert time.perf_counter() - started >= 0.14


async def test_faults_from_options(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    own = {"limits": {"enabled": False}, "faults": {"reject_keys": ["x@acme-sandbox"]}}
    api = Api(await sandbox_factory("aimsio", records=10, vendors={"aimsio": own}), http)
    result = await api.post("/User", {"userList": [new_user("x@acme-sandbox")]})
    assert counters(result) == (0, 0, 0, 1, 0)


# --- 4. limits --------------------------------------------------------------------------------
async def test_default_limits_are_the_documented_ones(start: Any) -> None:
    api = await start(limits=True)
    _, faults = await api.control("faults")
    assert faults["limits"] | {} == {
        "enabled": True, "mode": "queue", "max_parallel": 10, "rate_per_s": 10,
        "queue_timeout_s": 5.0, "timeout_status": 504, "per_client": False,
    }  # fmt: skip
    _, stats = await api.control("stats")
    assert stats["caps"] == {"max_parallel": 10, "rate_per_s": 10}


async def test_twenty_parallel_requests_run_ten_at_a_time(start: Any) -> None:
    api = await start(limits=True)
    # Lift the rate cap so only the parallel cap shapes the waves.
    await api.control("faults", {"latency_ms": 300, "limits": {"rate_per_s": 1000}})
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        for _ in range(400):  # bounded: at most ~4 s
            peak = max(peak, api.sim.limiter.running)
            if done.is_set():
                return
            await asyncio.sleep(0.01)

    async def one() -> tuple[int, float]:
        status, _ = await api.call("GET", "/User")
        return status, time.perf_counter() - started

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(20)))
    done.set()
    await sampler
    assert [s for s, _ in results] == [200] * 20
    times = sorted(t for _, t in results)
    assert times[10] - times[9] >= 0.15  # two waves, ~300 ms apart
    assert times[-1] >= 0.55
    assert peak == api.sim.peak_running == 10
    _, stats = await api.control("stats")
    assert stats["peak_in_flight"] == 20  # counted on arrival, before the queue
    # A compliant client would not have sent requests 11..20: each broke both caps.
    assert stats["violation_count"] == 20
    assert sum(v.startswith("parallel") for v in stats["violations"]) == 10
    assert "429" not in stats["by_status"]


async def test_rate_cap_queues_requests_instead_of_429(start: Any) -> None:
    api = await start(limits=True)

    async def one() -> tuple[int, float]:
        status, _ = await api.call("GET", "/Invoice/1")
        return status, time.perf_counter() - started

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(13)))
    assert [s for s, _ in results] == [200] * 13
    times = sorted(t for _, t in results)
    assert times[9] < 0.6
    assert times[10] >= 0.9  # the 11th waited for a slot in the next second


async def test_overload_times_out_with_empty_504(start: Any) -> None:
    api = await start(limits=True)
    await api.control("faults", {"latency_ms": 500, "limits": {"queue_timeout_s": 0.2}})

    async def one() -> tuple[int, bytes]:
        async with api.http.get(api.base + "/User", headers=AUTH) as resp:
            return resp.status, await resp.read()

    results = await asyncio.gather(*(one() for _ in range(13)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 10 + [504] * 3
    assert all(body == b"" for s, body in results if s == 504)
    _, stats = await api.control("stats")
    assert stats["timeouts"] == 3
    assert stats["by_status"] == {"200": 10, "504": 3}


async def test_timeout_status_is_configurable(start: Any) -> None:
    api = await start(limits=True)
    limits = {"queue_timeout_s": 0.05, "max_parallel": 1, "timeout_status": 503}
    await api.control("faults", {"latency_ms": 200, "limits": limits})
    statuses = await asyncio.gather(*(api.call("GET", "/User") for _ in range(2)))
    assert sorted(s for s, _ in statuses) == [200, 503]


# --- mutation API, clock, incremental reads ----------------------------------------------------
async def test_mutation_by_fractions_is_visible_to_an_incremental_reader(
    start: Any, clock: FakeClock
) -> None:
    api = await start(records=40)
    before = {s["guid"]: s["updatedAt"] for s in await api.get("/User")}
    watermark = max(before.values())
    clock.advance(3600)
    status, touched = await api.control(
        "mutate", {"entity": "User", "change": 0.1, "delete": 0.05, "add": 3, "seed": 1}
    )
    assert status == 200
    assert (len(touched["changed"]), len(touched["deleted"]), len(touched["added"])) == (4, 2, 3)
    assert touched["now_ms"] == T0_MS + 3_600_000
    after = {s["guid"]: s["updatedAt"] for s in await api.get("/User")}
    assert set(after) == (set(before) - set(touched["deleted"])) | set(touched["added"])
    newer = {g for g, t in after.items() if t > watermark}
    assert newer == set(touched["changed"]) | set(touched["added"])
    assert all(after[g] == T0_MS + 3_600_000 for g in newer)
    assert list(after)[-3:] == touched["added"]  # new ids sort last
    for guid in touched["deleted"]:
        assert (await api.call("GET", f"/User/{guid}"))[0] == 404
    changed = await api.get(f"/User/{touched['changed'][0]}")
    assert changed["userPhone"].startswith("changed-")
    # Same seed, same body → the same rows are touched.
    other = await start(records=40)
    _, again = await other.control(
        "mutate", {"entity": "User", "change": 0.1, "delete": 0.05, "add": 3, "seed": 1}
    )
    assert again == touched


async def test_mutation_of_enum_fields_keeps_valid_values(start: Any) -> None:
    api = await start()
    _, touched = await api.control("mutate", {"entity": "Invoice", "change": 0.5, "add": 1})
    assert touched["added"] == [31]
    for ident in touched["changed"][:3]:
        full = await api.get(f"/Invoice/{ident}")
        assert full["invoiceStatus"] in SPECS_ENUM_INVOICE


SPECS_ENUM_INVOICE = ("Draft", "Approved", "Sent", "Paid", "Void")


async def test_explicit_mutation(start: Any, clock: FakeClock) -> None:
    api = await start()
    clock.advance(10)
    stubs = await api.get("/JobOrder")
    body = {
        "entity": "joborder",
        "update": [
            {"id": stubs[0]["guid"], "jobName": "Renamed"},
            {"id": "J-000002", "jobStatus": "Finished", "updatedAt": 123},
        ],
        "delete_ids": [stubs[2]["guid"]],
    }
    status, touched = await api.control("mutate", body)
    assert status == 200
    assert touched["changed"] == [stubs[0]["guid"], stubs[1]["guid"]]
    assert touched["deleted"] == [stubs[2]["guid"]]
    after = await api.get("/JobOrder")
    assert [s["updatedAt"] for s in after[:2]] == [T0_MS + 10_000, 123]
    assert len(after) == 29
    assert (await api.get(f"/JobOrder/{stubs[0]['guid']}"))["jobName"] == "Renamed"
    _, touched = await api.control("mutate", {"entity": "Timecard", "delete_ids": [1, 2]})
    assert touched["deleted"] == [1, 2]
    assert [s["id"] for s in await api.get("/Timecard")][:2] == [3, 4]


@pytest.mark.parametrize(
    "body",
    [
        {"entity": "Spaceship", "change": 0.1},
        {"entity": "User", "delete_ids": ["00000000-0000-0000-0000-000000000001"]},
        {"entity": "User", "update": ["x"]},
        {"entity": "Invoice", "delete_ids": [999]},
    ],
)
async def test_bad_mutations_get_400(start: Any, body: dict[str, Any]) -> None:
    api = await start()
    status, out = await api.control("mutate", body)
    assert status == 400
    assert out["error"]


async def test_reset_restores_generated_data(start: Any) -> None:
    api = await start()
    pristine = await api.get("/User")
    await api.control("mutate", {"entity": "User", "change": 0.5, "delete": 0.2, "add": 5})
    await api.post("/User", {"userList": [new_user()]})
    assert await api.get("/User") != pristine
    status, _ = await api.control("reset", {"data": True})
    assert status == 200
    assert await api.get("/User") == pristine


# --- determinism, size, stats -----------------------------------------------------------------
async def test_same_seed_gives_the_same_data(start: Any) -> None:
    one, two, other = await start(seed=7), await start(seed=7), await start(seed=8)
    for entity in ("User", "JobOrder", "Timecard"):
        stubs = await one.get(f"/{entity}")
        assert stubs == await two.get(f"/{entity}")
        assert stubs != await other.get(f"/{entity}")
        ident = stubs[4].get("guid", stubs[4].get("id"))
        assert await one.get(f"/{entity}/{ident}") == await two.get(f"/{entity}/{ident}")


async def test_listing_5000_stubs_is_fast(start: Any) -> None:
    api = await start(records=5000)
    for entity in ("User", "JobOrder", "Invoice"):
        started = time.perf_counter()
        stubs = await api.get(f"/{entity}")
        assert time.perf_counter() - started < 0.5
        assert len(stubs) == 5000


async def test_large_datasets_start_fast_and_stay_lazy(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    started = time.perf_counter()
    sandbox = await sandbox_factory(
        "aimsio", records=1_000_000, vendors={"aimsio": {"limits": {"enabled": False}}}
    )
    assert time.perf_counter() - started < 1.0
    api = Api(sandbox, http)
    last = api.sim.gen.guid("User", 999_999)
    assert (await api.get(f"/User/{last}"))["userName"] == "user1000000@acme-sandbox"
    assert (await api.get("/Invoice/1000000"))["invoiceId"] == 1_000_000


async def test_stats_count_requests_and_statuses(start: Any) -> None:
    api = await start()
    await api.get("/User")
    await api.call("GET", "/User/nope")
    await api.call("GET", "/User", headers={})
    status, stats = await api.control("stats")
    assert status == 200
    assert stats["vendor"] == "aimsio"
    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 1, "401": 1, "404": 1}
    assert stats["in_flight"] == 0
    await api.control("reset", {})
    _, stats = await api.control("stats")
    assert stats["requests"] == 0
