"""The AIMMS PRO simulator beyond tasks (seed: OpenAPI description, publishing an app, API
keys, the account's REST task concurrency), over real HTTP on a FakeClock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.sandbox import test_aimms as base
from tests.sandbox.test_aimms import TASKS, V1, Api

clock = base.clock  # the simulator suite's fixtures: a FakeClock and a sandbox starter
start = base.start

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
KEYS = f"{V1}/apikeys"


@pytest.fixture
async def pro(start: Any) -> Api:
    sandbox: Api = await start()
    return sandbox


def iso_in(pro: Api, seconds: float) -> str:
    return (datetime.fromtimestamp(pro.clock.now(), UTC) + timedelta(seconds=seconds)).isoformat()


def publish_form(meta: dict[str, Any], file: bytes = b"PK\x03\x04 aimmspack") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(meta), content_type="application/json")
    form.add_field("file", file, filename="app.aimmspack", content_type="application/octet-stream")
    return form


async def test_openapi_description_is_served_at_the_v1_root(pro: Api) -> None:
    status, doc = await pro.get(f"{V1}/", key=None)
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert "/applications" in doc["paths"]
    assert doc["components"]["securitySchemes"]["apikey"]["name"] == "apikey"
    status, raw, headers = await pro.call("GET", f"{V1}/?format=yaml", key=None)
    assert status == 200
    assert "yaml" in headers["Content-Type"]
    assert b'"openapi": "3.0.1"' in raw


async def test_publish_update_and_delete_an_application(pro: Api) -> None:
    meta = {
        "name": "project7003",
        "description": "my_project",
        "projectVersion": "3.0",
        "aimmsVersionId": "24.5.2.3-linux64",
        "attributes": {"isWebUI": "false", "iconUrl": "/icons/my_logo"},
        "projectCategory": "cat_1",
    }
    status, body, _ = await pro.call("POST", f"{V1}/applications", data=publish_form(meta))
    assert status == 201, body
    assert body["isLatest"] is True  # the first version of a name carries the tag
    status, body, _ = await pro.call("POST", f"{V1}/applications", data=publish_form(meta))
    assert status == 409
    second = {**meta, "projectVersion": "3.1"}
    status, body, _ = await pro.call("POST", f"{V1}/applications", data=publish_form(second))
    assert status == 201
    assert body["isLatest"] is False
    # A published app runs tasks (DEX echo) by version and, after PATCH, as latest.
    status, body, _ = await pro.call(
        "PATCH", f"{V1}/applications/project7003/3.1", json={"isLatest": True}
    )
    assert status == 200
    assert body["isLatest"] is True
    assert await pro.create("/project7003/echo", b"hi")
    status, apps = await pro.get(f"{V1}/applications")
    mine = {a["projectVersion"]: a["isLatest"] for a in apps if a["projectName"] == "project7003"}
    assert mine == {"3.0": False, "3.1": True}
    status, _, _ = await pro.call("DELETE", f"{V1}/applications/project7003/3.0")
    assert status == 204
    for bad, why in (
        ({**meta, "aimmsVersionId": "1.0"}, "unknown AIMMS version"),
        ({k: v for k, v in meta.items() if k != "name"}, "'name' is required"),
    ):
        status, body, _ = await pro.call("POST", f"{V1}/applications", data=publish_form(bad))
        assert status == 400
        assert why in body["message"]
    status, body, _ = await pro.call("POST", f"{V1}/applications", data=publish_form(meta, b""))
    assert status == 400
    status, _, _ = await pro.call(
        "POST", f"{V1}/applications", data=publish_form(meta), key="demo-apikey-tasks-only"
    )
    assert status == 403


async def test_api_keys_created_used_and_deleted(pro: Api) -> None:
    body = {"name": "ci", "expiresAt": iso_in(pro, 30 * 86400), "scopes": ["Tasks"]}
    status, created, _ = await pro.call("POST", KEYS, json=body)
    assert status == 201, created
    secret = created["key"]
    status, listed = await pro.get(KEYS)
    assert created["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)  # secrets are shown once, never listed
    assert (await pro.get(TASKS, key=secret))[0] == 200
    assert (await pro.get(f"{V1}/applications", key=secret))[0] == 403  # scope
    pro.clock.advance(31 * 86400)
    assert (await pro.get(TASKS, key=secret))[0] == 401  # expired
    status, _, _ = await pro.call("DELETE", f"{KEYS}/{created['id']}")
    assert status == 204
    assert (await pro.call("DELETE", f"{KEYS}/{created['id']}"))[0] == 404
    for bad in (
        {**body, "expiresAt": iso_in(pro, 366 * 86400)},
        {**body, "expiresAt": iso_in(pro, -60)},
        {**body, "scopes": ["Everything"]},
        {**body, "name": ""},
    ):
        status, _, _ = await pro.call("POST", KEYS, json=bad)
        assert status == 400, bad
    assert (await pro.call("POST", KEYS, json=body, key="demo-apikey-tasks-only"))[0] == 403


async def test_rest_task_concurrency_is_settable_from_outside(pro: Api) -> None:
    assert (await pro.control("POST", "concurrency", {"task_parallelism": 0}))[0] == 200
    task_id = await pro.create("/SupplyPlanner/echo", b"x")
    pro.clock.advance(60)
    assert await pro.state(task_id) == "queued"  # nothing ever starts at 0
    assert (await pro.control("POST", "concurrency", {"task_parallelism": 1}))[0] == 200
    pro.clock.advance(10)
    assert await pro.state(task_id) == "completed"
    assert (await pro.control("POST", "concurrency", {"task_parallelism": -1}))[0] == 400
