"""The AIMMS PRO simulator over real HTTP on 127.0.0.1, time driven by a FakeClock."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sandbox.aimms.hooks import hook_call_url
from sandbox.aimms.model import DEMO_USER_ID, effective_authorization
from sandbox.aimms.schedule import iso, parse_duration_s, parse_schedule_for
from sandbox.app import SandboxOptions
from sandbox.clock import FakeClock
from sandbox.server import RunningSandbox
from tests.sandbox.conftest import StartSandbox

# The committed sandbox/app.py build_app sets root["sims"] with a str key, which aiohttp warns
# about (an error under filterwarnings); harmless once build_app uses a web.AppKey or drops it.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

ALL = "demo-apikey-all-scopes"
TASKS_ONLY = "demo-apikey-tasks-only"
EXPIRED = "demo-apikey-expired"
V1 = "/pro-api/v1"
TASKS = "/pro-api/v2/tasks"
T0 = FakeClock().now()


@dataclass
class Api:
    """A thin caller: apikey header, JSON decoded when the answer is JSON."""

    http: aiohttp.ClientSession
    sandbox: RunningSandbox
    clock: FakeClock

    @property
    def base(self) -> str:
        return self.sandbox.url("aimms")

    async def call(
        self, method: str, path: str, *, key: str | None = ALL, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["apikey"] = key
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as r:
            raw = await r.read()
            body: Any = json.loads(raw) if r.content_type == "application/json" and raw else raw
            return r.status, body, r.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.call("GET", path, **kwargs)
        return status, body

    async def create(self, path: str, data: Any = b"", *, expect: int = 200, **kwargs: Any) -> str:
        if not isinstance(data, bytes | str | io.BytesIO):
            data = json.dumps(data)
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        status, body, _ = await self.call("POST", TASKS + path, data=data, **kwargs)
        assert status == expect, body
        return str(body.get("id")) if status == 200 else ""

    async def task(self, task_id: str, query: str = "") -> dict[str, Any]:
        status, body = await self.get(f"{TASKS}/{task_id}{query}")
        assert status == 200, body
        return dict(body)

    async def state(self, task_id: str) -> str:
        return str((await self.task(task_id))["state"])

    async def control(self, method: str, name: str, body: Any = None) -> tuple[int, Any]:
        status, out, _ = await self.call(method, f"/_sandbox/{name}", key=None, json=body)
        return status, out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def start(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> Any:
    async def go(records: int = 30, seed: int = 42, **settings: Any) -> Api:
        vendors = {"aimms": settings} if settings else {}
        sandbox = await sandbox_factory(
            "aimms", records=records, seed=seed, clock=clock, vendors=vendors
        )
        return Api(http, sandbox, clock)

    return go


@pytest.fixture
async def api(start: Any) -> Api:
    api: Api = await start()
    return api


@dataclass
class Receiver:
    url: str
    calls: list[dict[str, str]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    delay_s: float = 0.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(url="")

    async def hook(request: web.Request) -> web.Response:
        rec.methods.append(request.method)
        rec.calls.append(dict(request.query))
        if rec.delay_s:
            await asyncio.sleep(rec.delay_s)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/hook", hook)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


# --- contract 1: API keys, scopes, expiry ----------------------------------------------------


async def test_missing_unknown_and_expired_keys_get_401(api: Api) -> None:
    for key in (None, "no-such-key", EXPIRED):
        status, body = await api.get(f"{V1}/applications", key=key)
        assert (status, body) == (401, {"message": "invalid or expired api key"})
    status, _ = await api.get(TASKS, key=None)
    assert status == 401


async def test_key_expiry_follows_the_clock(api: Api) -> None:
    assert (await api.get(TASKS))[0] == 200
    api.clock.advance(365 * 86_400 - 1)
    assert (await api.get(TASKS))[0] == 200
    api.clock.advance(1)
    assert (await api.get(TASKS))[0] == 401


async def test_apikey_header_name_is_case_insensitive(api: Api) -> None:
    for name in ("APIKEY", "apiKey", "ApiKey"):
        status, _ = await api.get(f"{V1}/applications", key=None, headers={name: ALL})
        assert status == 200


async def test_each_listing_checks_its_scope(api: Api) -> None:
    paths = [
        f"{V1}/applications",
        f"{V1}/aimms-versions",
        f"{V1}/authentication/environments",
        f"{V1}/authentication/groups",
        f"{V1}/authentication/users",
        f"{V1}/apikeys",
    ]
    for path in paths:
        status, body = await api.get(path, key=TASKS_ONLY)
        assert status == 403, path
        assert "scope" in body["message"]
        assert (await api.get(path))[0] == 200
    assert (await api.get(TASKS, key=TASKS_ONLY))[0] == 200


async def test_configured_key_without_tasks_scope_is_refused_tasks(start: Any) -> None:
    keys = [
        {
            "key": "k-auth",
            "name": "auth",
            "scopes": ["Authentication"],
            "expires_in_s": 3600,
            "user": DEMO_USER_ID,
        }
    ]
    api = await start(api_keys=keys)
    assert (await api.get(f"{V1}/authentication/users", key="k-auth"))[0] == 200
    assert (await api.get(TASKS, key="k-auth"))[0] == 403
    assert (await api.get(TASKS, key=ALL))[0] == 401  # only the configured keys exist


async def test_app_permissions_gate_create_and_read(api: Api) -> None:
    # FinanceReports grants the demo user Read only; Confidential grants it nothing.
    status, body, _ = await api.call("POST", f"{TASKS}/FinanceReports/echo")
    assert status == 403
    assert "Execute" in body["message"]
    assert (await api.call("POST", f"{TASKS}/Confidential/1.0/echo"))[0] == 403
    task_id = await api.create("/SupplyPlanner/1.1/echo", b"x")
    revoke: dict[str, list[Any]] = {"authorizations": []}
    status, _, _ = await api.call("PATCH", f"{V1}/applications/SupplyPlanner/1.1", json=revoke)
    assert status == 200
    assert (await api.get(f"{TASKS}/{task_id}"))[0] == 403
    assert (await api.get(TASKS))[1] == []  # the task is no longer visible


# --- v1 listings and application changes ------------------------------------------------------


async def test_v1_listings_have_documented_shapes_and_sizes(api: Api) -> None:
    status, apps = await api.get(f"{V1}/applications")
    assert status == 200
    assert len(apps) == 6
    for key in (
        "projectName",
        "projectVersion",
        "description",
        "isLatest",
        "projectCategory",
        "aimmsVersionId",
        "attributes",
        "authorizations",
    ):
        assert key in apps[0]
    latest = {(a["projectName"], a["projectVersion"]) for a in apps if a["isLatest"]}
    assert ("SupplyPlanner", "1.1") in latest
    assert not any(name == "Prototype" for name, _ in latest)
    users = (await api.get(f"{V1}/authentication/users"))[1]
    assert len(users) == 30
    assert len({u["id"] for u in users}) == 30
    assert set(users[0]) == {"id", "name", "email", "environment", "groups", "isAdmin", "isActive"}
    assert len((await api.get(f"{V1}/authentication/groups"))[1]) == 5
    assert [e["name"] for e in (await api.get(f"{V1}/authentication/environments"))[1]] == [
        "ROOT",
        "Planning",
        "Finance",
    ]
    status, raw, _ = await api.call("GET", f"{V1}/apikeys")
    assert status == 200
    assert {k["name"] for k in raw} == {"demo (all scopes)", "demo (tasks only)", "demo (expired)"}
    assert ALL not in json.dumps(raw)  # secrets are never listed
    versions = (await api.get(f"{V1}/aimms-versions"))[1]["versions"]
    assert all("id" in v for v in versions)


async def test_users_scale_with_records(start: Any) -> None:
    api = await start(records=1000)
    assert len((await api.get(f"{V1}/authentication/users"))[1]) == 1000
    assert len((await api.get(f"{V1}/authentication/groups"))[1]) == 20
    assert len((await api.get(f"{V1}/applications"))[1]) == 6  # apps stay a handful


async def test_patch_application_moves_the_latest_tag_and_validates(api: Api) -> None:
    path = f"{V1}/applications/SupplyPlanner/1.0"
    status, app, _ = await api.call(
        "PATCH", path, json={"isLatest": True, "description": "old one", "attributes": {"a": "b"}}
    )
    assert status == 200
    assert (app["isLatest"], app["description"], app["attributes"]) == (True, "old one", {"a": "b"})
    apps = (await api.get(f"{V1}/applications"))[1]
    tags = {a["projectVersion"]: a["isLatest"] for a in apps if a["projectName"] == "SupplyPlanner"}
    assert tags == {"1.0": True, "1.1": False}
    task_id = await api.create("/SupplyPlanner/echo")
    assert (await api.task(task_id))["appVersion"] == "1.0"
    bad = [
        {"isLatest": False},
        {"description": 5},
        {"authorizations": [{"authorization": 9, "deny": False, "entity": 1}]},
        {"authorizations": [{"authorization": 4, "deny": "no", "entity": 1}]},
        {"attributes": {"isWebUI": True}},
    ]
    for body in bad:
        status, out, _ = await api.call("PATCH", path, json=body)
        assert status == 400, body
        assert out["message"]
    assert (await api.call("PATCH", path, data=b"not json"))[0] == 400
    assert (await api.call("PATCH", f"{V1}/applications/Nope/1.0", json={}))[0] == 404


async def test_delete_application(api: Api) -> None:
    status, _, _ = await api.call("DELETE", f"{V1}/applications/DemandForecast/2.0")
    assert status == 204
    names = {a["projectName"] for a in (await api.get(f"{V1}/applications"))[1]}
    assert "DemandForecast" not in names
    assert (await api.call("DELETE", f"{V1}/applications/DemandForecast/2.0"))[0] == 404
    await api.create("/DemandForecast/echo", expect=404)


# --- contract 2: creating tasks and the queue -------------------------------------------------


async def test_create_task_validates_app_version_and_service(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.0/echo")
    assert (await api.task(task_id))["appVersion"] == "1.0"
    latest_id = await api.create("/SupplyPlanner/echo")
    assert (await api.task(latest_id))["appVersion"] == "1.1"
    cases = [
        ("/Prototype/echo", 404, "App Prototype with latest tag doesn't exist"),
        ("/Nope/echo", 404, "App Nope with latest tag doesn't exist"),
        ("/SupplyPlanner/9.9/echo", 404, "App SupplyPlanner version 9.9 doesn't exist"),
        ("/SupplyPlanner/1.1/no_such_service", 403, "Service no_such_service not found"),
        ("/DemandForecast/export_users", 403, "Service export_users not found"),
    ]
    for path, status, message in cases:
        got, body, _ = await api.call("POST", TASKS + path)
        assert (got, body) == (status, {"message": message}), path
    assert await api.create("/Prototype/0.1/echo")  # an explicit version needs no tag


async def test_task_moves_through_states_on_the_clock(api: Api) -> None:
    task_id = await api.create(
        "/SupplyPlanner/1.1/echo", b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}
    )
    seen = []
    for step_s in (0, 0.5, 0.5, 1.9, 0.1, 1.9, 0.1):
        api.clock.advance(step_s)
        seen.append(await api.state(task_id))
    assert seen == ["assigned", "assigned", "running", "running", "solving", "solving", "completed"]
    task = await api.task(task_id)
    assert task["returnCode"] == 1
    assert task["runTime"] == 5.0
    assert task["createdAt"] == iso(T0)
    assert list(task) == [
        "id",
        "appName",
        "appVersion",
        "serviceName",
        "state",
        "createdAt",
        "queueTime",
        "runTime",
        "returnCode",
        "errorMessage",
        "scheduleFor",
        "scheduleInterval",
        "groupIndex",
    ]
    status, body, headers = await api.call("GET", f"{TASKS}/{task_id}/response")
    assert (status, body, headers["Content-Type"]) == (200, b"a,b\n1,2\n", "text/csv")


async def test_response_is_409_until_finished(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/echo", b"x")
    status, body = await api.get(f"{TASKS}/{task_id}/response")
    assert status == 409
    assert "assigned" in body["message"]
    api.clock.advance(5)
    assert (await api.get(f"{TASKS}/{task_id}/response")) == (200, b"x")


async def test_response_unfinished_status_is_a_setting(start: Any) -> None:
    api = await start(response_unfinished_status=404)
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    assert (await api.get(f"{TASKS}/{task_id}/response"))[0] == 404


async def test_fifo_queue_with_parallelism_one(start: Any) -> None:
    api = await start(task_parallelism=1)
    ids = [await api.create("/SupplyPlanner/1.1/echo", str(i)) for i in range(3)]
    assert [await api.state(i) for i in ids] == ["assigned", "queued", "queued"]
    api.clock.advance(4.999)
    assert [await api.state(i) for i in ids] == ["solving", "queued", "queued"]
    api.clock.advance(0.001)
    assert [await api.state(i) for i in ids] == ["completed", "assigned", "queued"]
    api.clock.advance(10)  # one read after a long gap replays the whole queue
    tasks = [await api.task(i) for i in ids]
    assert [t["state"] for t in tasks] == ["completed"] * 3
    assert [t["queueTime"] for t in tasks] == [0.0, 5.0, 10.0]
    current = (await api.get(f"{TASKS}/stats/current"))[1]
    assert current == {
        "queued": 0,
        "assigned": 0,
        "running": 0,
        "solving": 0,
        "parallelism": 1,
        "available": 1,
    }


async def test_parallelism_zero_never_starts_anything(start: Any) -> None:
    api = await start(task_parallelism=0)
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(30 * 86_400)
    task = await api.task(task_id)
    assert (task["state"], task["queueTime"]) == ("queued", 30 * 86_400.0)


async def test_task_listing_and_filters(api: Api) -> None:
    a = await api.create("/SupplyPlanner/1.0/echo")
    b = await api.create("/SupplyPlanner/1.1/echo")
    c = await api.create("/DemandForecast/2.0/echo")
    all_ids = [t["id"] for t in (await api.get(TASKS))[1]]
    assert all_ids == [a, b, c]
    by_name = (await api.get(f"{TASKS}?appName=SupplyPlanner"))[1]
    assert [t["id"] for t in by_name] == [a, b]
    by_both = (await api.get(f"{TASKS}?appName=SupplyPlanner&appVersion=1.1"))[1]
    assert [t["id"] for t in by_both] == [b]
    assert [t["id"] for t in (await api.get(f"{TASKS}?appVersion=2.0"))[1]] == [c]


async def test_unknown_task_ids_are_404(api: Api) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, suffix in [
        ("GET", ""),
        ("GET", "/response"),
        ("GET", "/logs"),
        ("PUT", ""),
        ("DELETE", ""),
    ]:
        status, body, _ = await api.call(
            method, f"{TASKS}/{missing}{suffix}", json={"setstatus": "interrupt-solve"}
        )
        assert status == 404, (method, suffix)
        assert body["message"] == f"Task {missing} not found"
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    assert (await api.get(f"{TASKS}/{task_id}?groupIndex=3"))[0] == 404
    assert (await api.get(f"{TASKS}/{task_id}?groupIndex=x"))[0] == 400


# --- contract 3: interrupt and delete -------------------------------------------------------


async def test_interrupt_solve_completes_early(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/solve", {"values": [1, 2, 3.5]})
    api.clock.advance(3.5)  # solving since t=3
    status, body, _ = await api.call(
        "PUT", f"{TASKS}/{task_id}", json={"setstatus": "interrupt-solve"}
    )
    assert status == 200
    assert (body["state"], body["setstatus"], body["runTime"]) == (
        "completed",
        "interrupt-processed",
        3.5,
    )
    assert (await api.get(f"{TASKS}/{task_id}/response"))[1] == {
        "status": "interrupted",
        "objective": 6.5,
    }


async def test_interrupt_solve_before_the_solve_ends_it_when_it_starts(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/solve", {"values": [2]})
    api.clock.advance(1.5)  # running
    status, body, _ = await api.call(
        "PUT", f"{TASKS}/{task_id}", json={"setstatus": "interrupt-solve"}
    )
    assert (status, body["state"], body["setstatus"]) == (200, "running", "interrupt-solve")
    api.clock.advance(1.5)  # t=3: the solve starts and is cut at once
    task = await api.task(task_id)
    assert (task["state"], task["runTime"]) == ("completed", 3.0)
    status, body, _ = await api.call(
        "PUT", f"{TASKS}/{task_id}", json={"setstatus": "interrupt-solve"}
    )
    assert (status, body["setstatus"]) == (200, "interrupt-processed")


async def test_interrupt_execution_and_other_values_are_405_on_pro(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    for body in ({"setstatus": "interrupt-execution"}, {"setstatus": "stop"}, {}, [1]):
        status, out, _ = await api.call("PUT", f"{TASKS}/{task_id}", json=body)
        assert status == 405, body
        assert "interrupt-solve" in out["message"]
    assert (await api.call("PUT", f"{TASKS}/{task_id}", data=b"{nope"))[0] == 400
    assert await api.state(task_id) == "assigned"


async def test_interrupt_execution_switch_behaves_as_local_dex(start: Any) -> None:
    api = await start(allow_interrupt_execution=True)
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(2)
    status, body, _ = await api.call(
        "PUT", f"{TASKS}/{task_id}", json={"setstatus": "interrupt-execution"}
    )
    assert (status, body["state"], body["errorMessage"]) == (
        200,
        "failed",
        "Task execution interrupted",
    )
    assert body["returnCode"] == -1


async def test_delete_only_queued_or_completed(start: Any) -> None:
    api = await start(task_parallelism=1)
    running = await api.create("/SupplyPlanner/1.1/echo")
    queued = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(1)
    status, body, _ = await api.call("DELETE", f"{TASKS}/{running}")
    assert (status, body) == (405, {"message": "Task in state running cannot be deleted"})
    status, body, _ = await api.call("DELETE", f"{TASKS}/{queued}")
    assert (status, body["state"]) == (200, "queued")
    assert (await api.get(f"{TASKS}/{queued}"))[0] == 404
    api.clock.advance(4)
    assert (await api.call("DELETE", f"{TASKS}/{running}"))[0] == 200
    assert (await api.get(TASKS))[1] == []
    failed = await api.create("/SupplyPlanner/1.1/fail")
    api.clock.advance(3)
    assert await api.state(failed) == "failed"
    assert (await api.call("DELETE", f"{TASKS}/{failed}"))[0] == 405


async def test_delete_refused_status_is_a_setting(start: Any) -> None:
    api = await start(delete_refused_status=409)
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    assert (await api.call("DELETE", f"{TASKS}/{task_id}"))[0] == 409


# --- the model's services ---------------------------------------------------------------------


async def test_export_users_returns_the_directory(api: Api) -> None:
    users = (await api.get(f"{V1}/authentication/users"))[1]
    whole = await api.create("/SupplyPlanner/1.1/export_users")
    page = await api.create("/SupplyPlanner/1.1/export_users", {"offset": 10, "limit": 5})
    api.clock.advance(5)
    status, body, headers = await api.call("GET", f"{TASKS}/{whole}/response")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert body == users
    assert (await api.get(f"{TASKS}/{page}/response"))[1] == users[10:15]


async def test_import_users_pushes_master_data(api: Api) -> None:
    users = (await api.get(f"{V1}/authentication/users"))[1]
    payload = [
        {"id": users[0]["id"], "email": "new@example.com"},
        {"name": "Nieuw Lid", "email": "nieuw@example.com"},
        {"id": 1, "name": "ghost"},
        {"name": "No Email"},
        "junk",
    ]
    task_id = await api.create("/SupplyPlanner/1.1/import_users", payload)
    assert (await api.get(f"{V1}/authentication/users"))[1] == users  # applied on completion
    api.clock.advance(5)
    result = (await api.get(f"{TASKS}/{task_id}/response"))[1]
    assert result["updated"] == [users[0]["id"]]
    assert len(result["inserted"]) == 1
    assert [r["index"] for r in result["rejected"]] == [2, 3, 4]
    after = {u["id"]: u for u in (await api.get(f"{V1}/authentication/users"))[1]}
    assert after[users[0]["id"]]["email"] == "new@example.com"
    assert after[result["inserted"][0]]["name"] == "Nieuw Lid"
    assert len(after) == 31


async def test_failing_service_and_unreadable_bodies(start: Any) -> None:
    api = await start(task_parallelism=3)
    fail = await api.create("/SupplyPlanner/1.1/fail")
    bad_solve = await api.create("/SupplyPlanner/1.1/solve", b"not json")
    bad_import = await api.create("/SupplyPlanner/1.1/import_users", {"not": "a list"})
    api.clock.advance(2.999)
    assert await api.state(fail) == "running"
    api.clock.advance(0.001)  # failures end the running phase
    for task_id in (fail, bad_solve, bad_import):
        task = await api.task(task_id)
        assert (task["state"], task["returnCode"]) == ("failed", -1)
        assert task["errorMessage"]
    assert (await api.get(f"{TASKS}/{fail}/response")) == (200, b"")
    logs = (await api.get(f"{TASKS}/{fail}/logs"))[1].decode()
    assert "failed" in logs
    assert "error: Model error" in logs


async def test_logs_and_download(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(5)
    status, body, headers = await api.call("GET", f"{TASKS}/{task_id}/logs")
    lines = body.decode().splitlines()
    assert status == 200
    assert [line.split()[-1] for line in lines] == [
        "queued",
        "assigned",
        "running",
        "solving",
        "completed",
    ]
    status, body2, headers = await api.call("GET", f"{TASKS}/{task_id}/logs/download")
    assert (status, body2) == (200, body)
    assert headers["Content-Disposition"] == f'attachment; filename="{task_id}.log"'


async def test_task_stats(api: Api) -> None:
    done = await api.create("/SupplyPlanner/1.1/echo")
    await api.create("/SupplyPlanner/1.1/fail")
    api.clock.advance(5)
    await api.create("/SupplyPlanner/1.1/echo")
    stats = (await api.get(f"{TASKS}/stats"))[1]
    assert stats["total"] == 3
    assert stats["byState"]["completed"] == 1
    assert stats["byState"]["failed"] == 1
    assert stats["byState"]["assigned"] == 1
    assert stats["averageRunTime"] == 4.0  # (5 + 3) / 2
    assert done


async def test_bodies_beyond_one_mib_and_the_size_cap(start: Any) -> None:
    api = await start(max_request_bytes=3 * 1024 * 1024)
    big = b"x" * (2 * 1024 * 1024)  # more than aiohttp's default client_max_size
    task_id = await api.create("/SupplyPlanner/1.1/echo", io.BytesIO(big))
    api.clock.advance(5)
    assert (await api.get(f"{TASKS}/{task_id}/response"))[1] == big
    status, body, _ = await api.call(
        "POST", f"{TASKS}/SupplyPlanner/1.1/echo", data=io.BytesIO(b"y" * (3 * 1024 * 1024 + 1))
    )
    assert status == 413
    assert "larger than" in body["message"]


# --- contract 4: scheduling and state hooks ---------------------------------------------------


async def test_schedule_in_keeps_the_task_queued_until_due(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/echo", params={"scheduleIn": "PT1H"})
    task = await api.task(task_id)
    assert (task["state"], task["scheduleFor"]) == ("queued", iso(T0 + 3600))
    api.clock.advance(3599.9)
    assert await api.state(task_id) == "queued"
    api.clock.advance(0.1)
    task = await api.task(task_id)
    assert (task["state"], task["queueTime"]) == ("assigned", 0.0)
    human = await api.create("/SupplyPlanner/1.1/echo", params={"scheduleIn": "1 day"})
    assert (await api.task(human))["scheduleFor"] == iso(T0 + 3600 + 86_400)


async def test_schedule_for_with_offset_and_in_the_past(api: Api) -> None:
    # 2026-01-01 02:00 at +01:00 is 01:00 UTC, one hour after T0.
    task_id = await api.create(
        "/SupplyPlanner/1.1/echo", params={"scheduleFor": "2026-01-01 02:00:00.000 +01:00"}
    )
    assert (await api.task(task_id))["scheduleFor"] == "2026-01-01T01:00:00.000Z"
    api.clock.advance(3600)
    assert await api.state(task_id) == "assigned"
    past = await api.create("/SupplyPlanner/1.1/echo", params={"scheduleFor": "2020-01-01 00:00"})
    assert await api.state(past) == "assigned"


async def test_bad_schedule_parameters_are_400(api: Api) -> None:
    for params in (
        {"scheduleIn": "soon"},
        {"scheduleFor": "tomorrow"},
        {"scheduleFor": "2026-01-01 00:00", "scheduleIn": "PT1H"},
        {"scheduleInterval": "PT0S"},
    ):
        status, body, _ = await api.call("POST", f"{TASKS}/SupplyPlanner/1.1/echo", params=params)
        assert status == 400, params
        assert body["message"]
    status, _, _ = await api.call(
        "POST", f"{TASKS}/SupplyPlanner/1.1/echo", headers={"taskStateHook": "ftp://x"}
    )
    assert status == 400


async def test_schedule_interval_repeats_with_group_index(api: Api) -> None:
    task_id = await api.create("/SupplyPlanner/1.1/echo", params={"scheduleInterval": "1 hour"})
    # Run k + 1 exists (queued, one interval later) as soon as run k is due.
    first = await api.task(task_id, "?groupIndex=0")
    assert (first["groupIndex"], first["state"], first["scheduleInterval"]) == (
        0,
        "assigned",
        "1 hour",
    )
    pending = await api.task(task_id)  # no groupIndex: the last run
    assert (pending["groupIndex"], pending["state"], pending["scheduleFor"]) == (
        1,
        "queued",
        iso(T0 + 3600),
    )
    api.clock.advance(3600)
    last = await api.task(task_id)
    assert (last["groupIndex"], last["state"], last["scheduleFor"]) == (2, "queued", iso(T0 + 7200))
    assert (await api.task(task_id, "?groupIndex=0"))["state"] == "completed"
    assert (await api.task(task_id, "?groupIndex=1"))["state"] == "assigned"
    listed = [(t["id"], t["groupIndex"]) for t in (await api.get(TASKS))[1]]
    assert listed == [(task_id, 0), (task_id, 1), (task_id, 2)]
    status, _, _ = await api.call("DELETE", f"{TASKS}/{task_id}")  # the last run: series ends
    assert status == 200
    api.clock.advance(10 * 3600)
    assert [t["groupIndex"] for t in (await api.get(TASKS))[1]] == [0, 1]
    assert (await api.task(task_id))["groupIndex"] == 1


async def test_series_stop_at_max_runs_per_group(start: Any) -> None:
    api = await start(max_runs_per_group=4)
    task_id = await api.create("/SupplyPlanner/1.1/echo", params={"scheduleInterval": "PT10S"})
    api.clock.advance(86_400)
    runs = (await api.get(TASKS))[1]
    assert [t["groupIndex"] for t in runs] == [0, 1, 2, 3]
    assert all(t["id"] == task_id and t["state"] == "completed" for t in runs)


async def test_state_hook_is_called_on_every_change(api: Api, receiver: Receiver) -> None:
    hook = f"{receiver.url}?key=s3cret&tenant=7"
    task_id = await api.create("/SupplyPlanner/1.1/echo", headers={"taskStateHook": hook})
    api.clock.advance(5)
    status, tick = await api.control("POST", "tick")
    assert (status, tick["states"]) == (200, {"completed": 1})
    states = [c["task_state"] for c in receiver.calls]
    assert states == ["queued", "assigned", "running", "solving", "completed"]
    assert set(receiver.methods) == {"PUT"}
    expected_hmac = hmac.new(b"s3cret", task_id.encode(), hashlib.sha256).hexdigest()
    for call in receiver.calls:
        assert "key" not in call
        assert (call["task_uuid"], call["tenant"], call["hmac"]) == (task_id, "7", expected_hmac)
    assert receiver.calls[0]["at"] == iso(T0)
    assert receiver.calls[-1]["at"] == iso(T0 + 5)
    await api.control("POST", "tick")
    assert len(receiver.calls) == 5  # each change is announced once
    no_key = await api.create("/SupplyPlanner/1.1/echo", headers={"taskStateHook": receiver.url})
    await api.control("POST", "tick")
    assert receiver.calls[-1]["task_uuid"] == no_key
    assert "hmac" not in receiver.calls[-1]


async def test_state_hook_has_a_strict_timeout_and_no_retry(start: Any, receiver: Receiver) -> None:
    api = await start(hook_timeout_s=0.2)
    receiver.delay_s = 2.0
    await api.create("/SupplyPlanner/1.1/echo", headers={"taskStateHook": receiver.url})
    await api.control("POST", "tick")
    log = (await api.control("GET", "hooks"))[1]
    assert [e["task_state"] for e in log] == ["queued", "assigned"]
    assert all(e.get("error") for e in log)
    assert len(receiver.calls) == 2


async def test_hooks_fire_without_polling_on_the_system_clock(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    settings = {
        "task_phases_s": {"assigned": 0.02, "running": 0.02, "solving": 0.02},
        "tick_interval_s": 0.02,
    }
    sandbox = await sandbox_factory("aimms", records=10, vendors={"aimms": settings})
    url = f"{sandbox.url('aimms')}{TASKS}/SupplyPlanner/1.1/echo"
    headers = {"apikey": ALL, "taskStateHook": receiver.url}
    async with http.post(url, headers=headers) as resp:
        assert resp.status == 200
    for _ in range(150):  # at most ~3 s; the background tick needs well under 1 s
        if len(receiver.calls) == 5:
            break
        await asyncio.sleep(0.02)
    assert [c["task_state"] for c in receiver.calls][-1] == "completed"
    assert len(receiver.calls) == 5


# --- contract 5: faults -----------------------------------------------------------------------


async def test_task_fail_fault(api: Api) -> None:
    status, _ = await api.control("POST", "faults", {"extra": {"task_fail": True}})
    assert status == 200
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(5)
    task = await api.task(task_id)
    assert task["state"] == "failed"
    assert "Injected fault" in task["errorMessage"]
    await api.control("POST", "faults", {"extra": {"task_fail": False}})
    ok = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(5)
    assert await api.state(ok) == "completed"


async def test_task_stuck_fault_holds_its_slot(start: Any) -> None:
    api = await start(task_parallelism=1)
    await api.control("POST", "faults", {"extra": {"task_stuck": True}})
    stuck = await api.create("/SupplyPlanner/1.1/echo")
    await api.control("POST", "faults", {"extra": {"task_stuck": False}})
    waiting = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(86_400)
    assert [await api.state(stuck), await api.state(waiting)] == ["running", "queued"]
    status, body, _ = await api.call(
        "PUT", f"{TASKS}/{stuck}", json={"setstatus": "interrupt-solve"}
    )
    assert (status, body["state"]) == (200, "running")  # no solve ever starts
    assert (await api.call("DELETE", f"{TASKS}/{stuck}"))[0] == 405


async def test_licence_zero_fault_and_recovery(api: Api) -> None:
    await api.control("POST", "faults", {"extra": {"licence_zero": True}})
    task_id = await api.create("/SupplyPlanner/1.1/echo")
    api.clock.advance(3600)
    assert await api.state(task_id) == "queued"
    assert (await api.get(f"{TASKS}/stats/current"))[1]["parallelism"] == 0
    await api.control("POST", "faults", {"extra": {"licence_zero": False}})
    task = await api.task(task_id)  # the licence counts from when it is seen back
    assert (task["state"], task["queueTime"]) == ("assigned", 3600.0)


async def test_unknown_fault_is_rejected(api: Api) -> None:
    status, body = await api.control("POST", "faults", {"extra": {"disk_full": True}})
    assert status == 400
    assert "disk_full" in body["error"]


async def test_shared_error_fault_uses_the_vendor_error_shape(api: Api) -> None:
    await api.control("POST", "faults", {"error_rate": 1.0, "error_status": 503})
    assert await api.get(f"{V1}/applications") == (503, {"message": "Injected server error"})


# --- mutation API, reset, determinism, stats --------------------------------------------------


async def test_mutation_by_fractions(start: Any) -> None:
    api = await start(records=100)
    before = {u["id"]: u for u in (await api.get(f"{V1}/authentication/users"))[1]}
    status, out = await api.control(
        "POST", "mutate", {"entity": "users", "change": 0.1, "delete": 0.05, "add": 3, "seed": 1}
    )
    assert status == 200
    assert (len(out["changed"]), len(out["deleted"]), len(out["added"]), out["count"]) == (
        10,
        5,
        3,
        98,
    )
    after = {u["id"]: u for u in (await api.get(f"{V1}/authentication/users"))[1]}
    assert set(after) == (set(before) - set(out["deleted"])) | set(out["added"])
    assert all(after[i] != before[i] for i in out["changed"])
    unchanged = set(before) - set(out["changed"]) - set(out["deleted"])
    assert all(after[i] == before[i] for i in unchanged)


async def test_mutation_by_ids(api: Api) -> None:
    users = (await api.get(f"{V1}/authentication/users"))[1]
    body = {
        "entity": "users",
        "update": [{"id": users[1]["id"], "name": "Renamed"}],
        "delete_ids": [users[2]["id"]],
        "add": [{"name": "Added", "email": "added@example.com"}],
    }
    status, out = await api.control("POST", "mutate", body)
    assert status == 200
    assert (out["changed"], out["deleted"]) == ([users[1]["id"]], [users[2]["id"]])
    after = {u["id"]: u for u in (await api.get(f"{V1}/authentication/users"))[1]}
    assert after[users[1]["id"]]["name"] == "Renamed"
    assert users[2]["id"] not in after
    assert after[out["added"][0]]["email"] == "added@example.com"
    for bad in (
        {"entity": "apps", "change": 0.1},
        {"entity": "users", "delete_ids": [1]},
        {"entity": "users", "update": [{"id": users[0]["id"], "colour": "red"}]},
        {"entity": "users", "change": 1.5},
        {"entity": "users", "update": [{"id": users[0]["id"], "name": "X"}], "delete_ids": [1]},
    ):
        assert (await api.control("POST", "mutate", bad))[0] == 400, bad
    unchanged = {u["id"]: u for u in (await api.get(f"{V1}/authentication/users"))[1]}
    assert unchanged == after  # a rejected mutation applies nothing


async def test_reset_data_restores_users_apps_and_tasks(api: Api) -> None:
    users = (await api.get(f"{V1}/authentication/users"))[1]
    await api.control("POST", "mutate", {"entity": "users", "delete": 0.5, "seed": 3})
    await api.call("DELETE", f"{V1}/applications/DemandForecast/2.0")
    await api.create("/SupplyPlanner/1.1/echo")
    status, _ = await api.control("POST", "reset", {"data": True})
    assert status == 200
    assert (await api.get(f"{V1}/authentication/users"))[1] == users
    assert len((await api.get(f"{V1}/applications"))[1]) == 6
    assert (await api.get(TASKS))[1] == []


async def test_same_seed_same_data_and_task_ids(start: Any) -> None:
    runs = []
    for seed in (7, 7, 8):
        api = await start(seed=seed)
        users = (await api.get(f"{V1}/authentication/users"))[1]
        task_id = await api.create("/SupplyPlanner/1.1/echo")
        mutated = await api.control("POST", "mutate", {"entity": "users", "change": 0.2, "seed": 5})
        runs.append((users, task_id, mutated[1]["changed"]))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    assert runs[0][1] != runs[2][1]


async def test_stats_endpoint_counts_vendor_requests(api: Api) -> None:
    await api.get(f"{V1}/applications")
    await api.get(f"{V1}/applications", key=None)
    await api.get(TASKS)
    status, stats = await api.control("GET", "stats")
    assert status == 200
    assert stats["vendor"] == "aimms"
    assert stats["requests"] == 3  # control calls are not counted
    assert stats["by_status"] == {"200": 2, "401": 1}
    assert stats["violation_count"] == 0


async def test_settings_are_validated(clock: FakeClock) -> None:
    from sandbox.aimms import AimmsSim

    def make(**settings: Any) -> AimmsSim:
        return AimmsSim(SandboxOptions(records=10, clock=clock, vendors={"aimms": settings}))

    assert make().settings["task_parallelism"] == 2
    with pytest.raises(ValueError, match="unknown aimms setting"):
        make(task_paralelism=3)
    with pytest.raises(ValueError, match="task_phases_s"):
        make(task_phases_s={"warmup": 1})
    bad_key = {"key": "k", "name": "k", "scopes": ["Root"], "expires_in_s": 1, "user": 1}
    with pytest.raises(ValueError, match="unknown scope"):
        make(api_keys=[bad_key])
    with pytest.raises(ValueError, match="1 year"):
        make(api_keys=[{**bad_key, "scopes": ["Tasks"], "expires_in_s": 400 * 86_400}])


# --- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("P1DT2H3M4S", 93_784.0),
        ("PT1H", 3600.0),
        ("P2W", 14 * 86_400.0),
        ("PT0.5S", 0.5),
        ("1 day", 86_400.0),
        ("2 weeks", 14 * 86_400.0),
        ("1 hour 30 minutes", 5400.0),
        ("1h, 30m and 10s", 5410.0),
        ("90 seconds", 90.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "1 fortnight", "soon", "1 day later", "P1X"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01 00:00", T0),
        ("2026-01-01 01:00:30.250", T0 + 3630.25),
        ("2026-01-01 02:00:00.000 +01:00", T0 + 3600),
        ("2026-01-01 02:00 01:00", T0 + 3600),  # an unencoded "+" arrives as a space
        ("2025-12-31 23:00:00 -01:00", T0),
        ("2026-01-01T00:00:00Z", T0),
    ],
)
def test_parse_schedule_for(text: str, expected: float) -> None:
    assert parse_schedule_for(text) == expected


def test_hook_url_strips_key_and_signs_the_uuid() -> None:
    url = hook_call_url("https://h.example/cb?key=k1&a=b", "uuid-1", "running", "T")
    assert dict(url.query) == {
        "a": "b",
        "task_uuid": "uuid-1",
        "task_state": "running",
        "at": "T",
        "hmac": hmac.new(b"k1", b"uuid-1", hashlib.sha256).hexdigest(),
    }


def test_effective_authorization_sums_grants_and_applies_denials() -> None:
    entries = [
        {"authorization": 4, "deny": False, "entity": 1},
        {"authorization": 1, "deny": False, "entity": 2},
        {"authorization": 2, "deny": False, "entity": 1},
        {"authorization": 2, "deny": True, "entity": 2},
        {"authorization": 7, "deny": False, "entity": 9},
    ]
    assert effective_authorization(entries, {1, 2}) == 5
    assert effective_authorization(entries, {3}) == 0
