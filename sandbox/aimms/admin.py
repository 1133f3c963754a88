"""AIMMS PRO v1 administration the seed describes beyond listings: the OpenAPI description
at ``/pro-api/v1/``, publishing an application (multipart ``metadata`` + ``file``), API keys
created (name, expiry at most one year, scopes) and deleted, and a ``_sandbox`` control for
the account's REST task concurrency (so licence cases can be driven from outside).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import datetime
from typing import Any, Protocol

from aiohttp import BodyPartReader, web

from sandbox.aimms.config import SCOPES, YEAR_S, ApiError, ApiKey
from sandbox.aimms.model import AIMMS_VERSIONS, ENVIRONMENTS, EXECUTE, READ, App

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLISH_FIELDS = {
    "name", "description", "projectVersion", "aimmsVersionId", "attributes", "projectCategory",
    "resourceProfile", "publishBehavior", "oldProjectName", "oldProjectVersion",
}  # fmt: skip
PUBLISHED_SERVICES = frozenset({"echo"})  # a published .aimmspack is opaque: DEX echo only


class AdminHost(Protocol):
    """What these routes use of the simulator (an :class:`~sandbox.aimms.sim.AimmsSim`)."""

    @property
    def settings(self) -> MutableMapping[str, Any]: ...

    @property
    def keys(self) -> dict[str, ApiKey]: ...

    @property
    def apps(self) -> list[App]: ...

    def guarded(self, handler: Handler) -> Handler: ...

    def authorize(self, request: web.Request, scope: str) -> ApiKey: ...

    def find_app(self, name: str, version: str | None) -> App | None: ...

    def now(self) -> float: ...

    def advance(self) -> float: ...


def openapi(paths: Mapping[str, str]) -> dict[str, Any]:
    """A short OpenAPI 3 description of what this simulator serves under ``/pro-api/v1``."""

    def op(summary: str, scope: str) -> dict[str, Any]:
        return {"summary": summary, "security": [{"apikey": []}], "x-scope": scope}

    return {
        "openapi": "3.0.1",
        "info": {"title": "AIMMS PRO REST API (sandbox)", "version": "v1"},
        "servers": [{"url": "/pro-api/v1"}],
        "components": {"securitySchemes": {"apikey": {"type": "apiKey", "in": "header", "name": "apikey"}}},
        "paths": {
            "/applications": {
                "get": op("List applications", "PublishApp"),
                "post": op("Publish an application (multipart metadata + file)", "PublishApp"),
            },
            "/applications/{projectName}/{projectVersion}": {
                "patch": op("Update an application", "PublishApp"),
                "delete": op("Delete an application", "PublishApp"),
            },
            "/aimms-versions": {"get": op("List AIMMS versions", "PublishAIMMS")},
            **{
                paths[name].removeprefix("/pro-api/v1"): {"get": op(f"List {name}", "Authentication")}
                for name in ("environments", "groups", "users")
            },
            paths["apikeys"].removeprefix("/pro-api/v1"): {
                "get": op("List API keys", "API Key"),
                "post": op("Create an API key", "API Key"),
            },
            paths["apikeys"].removeprefix("/pro-api/v1") + "/{id}": {
                "delete": op("Delete an API key", "API Key")
            },
        },
    }  # fmt: skip


def to_yaml(value: Any, indent: int = 0) -> str:
    """Plain YAML for the JSON-like spec (strings quoted as JSON, which YAML accepts)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{json.dumps(str(k))}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{json.dumps(str(k))}: {json.dumps(v)}")
    else:
        for v in value:
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}-")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(lines)


def metadata_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return "'metadata' must be a JSON object"
    unknown = set(meta) - PUBLISH_FIELDS
    if unknown:
        return f"unknown metadata field(s) {sorted(unknown)}"
    for name in ("name", "projectVersion", "aimmsVersionId"):
        if not isinstance(meta.get(name), str) or not meta[name]:
            return f"metadata '{name}' is required"
    if meta["aimmsVersionId"] not in AIMMS_VERSIONS:
        return f"unknown AIMMS version {meta['aimmsVersionId']}"
    attributes = meta.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        return "'attributes' must be an object of string values"
    if meta.get("publishBehavior", 0) not in (0, 1, 2):
        return "'publishBehavior' must be 0, 1 or 2"
    return None


def parse_expiry(value: Any) -> float:
    if not isinstance(value, str):
        raise ApiError(400, "'expiresAt' (ISO 8601 date-time) is required")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, f"'expiresAt' is not an ISO 8601 date-time: {value!r}") from exc
    if moment.tzinfo is None:
        raise ApiError(400, "'expiresAt' needs a UTC offset")
    return moment.timestamp()


class AdminApi:
    def __init__(self, sim: AdminHost) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application, apikeys_path: str) -> None:
        g = self.sim.guarded
        r = app.router
        r.add_get("/pro-api/v1/", self.spec)
        r.add_get("/pro-api/v1", self.spec)
        r.add_post("/pro-api/v1/applications", g(self.publish))
        r.add_post(apikeys_path, g(self.create_key))
        r.add_delete(apikeys_path + "/{id}", g(self.delete_key))
        r.add_post("/_sandbox/concurrency", self.concurrency)

    async def spec(self, request: web.Request) -> web.Response:
        # Public, as the vendor's download link is: no apikey needed.
        doc = openapi(self.sim.settings["listing_paths"])
        wants_yaml = request.query.get("format") == "yaml" or "yaml" in request.headers.get(
            "Accept", ""
        )
        if wants_yaml:
            return web.Response(text=to_yaml(doc) + "\n", content_type="application/yaml")
        return web.json_response(doc)

    async def publish(self, request: web.Request) -> web.Response:
        self.sim.authorize(request, "PublishApp")
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "publish takes multipart/form-data with 'metadata' and 'file'")
        meta: Any = None
        size = -1
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "metadata":
                try:
                    meta = json.loads(await part.text())
                except ValueError as exc:
                    raise ApiError(400, "'metadata' is not valid JSON") from exc
            elif part.name == "file":
                size = len(await part.read())
        if meta is None or size < 0:
            raise ApiError(400, "both 'metadata' and 'file' are required")
        problem = metadata_problem(meta)
        if problem:
            raise ApiError(400, problem)
        if size == 0:
            raise ApiError(400, "'file' (the .aimmspack) is empty")
        name, version = meta["name"], meta["projectVersion"]
        if self.sim.find_app(name, version) is not None:
            raise ApiError(409, f"App {name} version {version} already exists")
        latest = self.sim.find_app(name, None) is None  # the first version gets the tag
        everyone = [
            {"authorization": READ | EXECUTE, "deny": False, "entity": ENVIRONMENTS[0]["id"]}
        ]
        app = App(
            {
                "projectName": name,
                "projectVersion": version,
                "description": meta.get("description", ""),
                "isLatest": latest,
                "projectCategory": meta.get("projectCategory", ""),
                "aimmsVersionId": meta["aimmsVersionId"],
                "attributes": meta.get("attributes", {}),
                "authorizations": everyone,
                "resourceProfile": meta.get("resourceProfile", "default"),
            },
            PUBLISHED_SERVICES,
        )
        self.sim.apps.append(app)
        return web.json_response(app.meta, status=201)

    async def create_key(self, request: web.Request) -> web.Response:
        owner = self.sim.authorize(request, "API Key")
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, "the body must be JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(400, "'name' is required")
        scopes = body.get("scopes")
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
            raise ApiError(400, f"'scopes' must be a non-empty subset of {sorted(SCOPES)}")
        now = self.sim.now()
        expires = parse_expiry(body.get("expiresAt"))
        if expires <= now:
            raise ApiError(400, "'expiresAt' must be in the future")
        if expires - now > YEAR_S:
            raise ApiError(400, "the maximum expiration date for an API key is 1 year")
        secret = "pro-" + secrets.token_urlsafe(24)
        key = ApiKey(
            secret, str(uuid.uuid4()), body["name"], frozenset(scopes), now, expires, owner.user
        )
        self.sim.keys[secret] = key
        # The key is shown once, in plain text, at creation only.
        return web.json_response({**key.public(), "key": secret}, status=201)

    async def delete_key(self, request: web.Request) -> web.Response:
        self.sim.authorize(request, "API Key")
        key_id = request.match_info["id"]
        for secret, key in list(self.sim.keys.items()):
            if key.id == key_id:
                del self.sim.keys[secret]
                return web.Response(status=204)
        raise ApiError(404, f"API key {key_id} not found")

    async def concurrency(self, request: web.Request) -> web.Response:
        """``{"task_parallelism": n}``: the account's REST task concurrency (0 = PRO's default
        profile, tasks stay queued)."""
        body = await request.json()
        value = body.get("task_parallelism") if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return web.json_response(
                {"message": "'task_parallelism' must be an integer >= 0"}, status=400
            )
        self.sim.advance()  # the old capacity holds until now
        self.sim.settings["task_parallelism"] = value
        self.sim.advance()
        return web.json_response({"task_parallelism": value})
