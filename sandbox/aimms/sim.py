"""AIMMS PRO REST API simulator (Azure cloud PRO: ``/pro-api/v1`` and the v2 Tasks API).

Every call needs the ``apikey`` header (any case). Keys carry scopes (``Authentication``,
``PublishAIMMS``, ``PublishApp``, ``Tasks``, ``API Key``) and an expiry on the sandbox clock:
missing/unknown/expired key → 401, missing scope or app permission → 403.

Demo keys (all owned by the portal account ``DEMO_USER_ID``, valid 365 days from start):
``demo-apikey-all-scopes`` (every scope), ``demo-apikey-tasks-only`` (Tasks) and
``demo-apikey-expired`` (expired a day before start).

Routes (under ``/aimms``):
- ``GET /pro-api/v1/applications``; ``PATCH|DELETE /pro-api/v1/applications/{name}/{version}``
  (PublishApp); ``GET /pro-api/v1/aimms-versions`` (PublishAIMMS).
- ``GET`` environments / groups / users (Authentication) and API keys (API Key, no secrets)
  at the paths in ``listing_paths``.
- ``GET /pro-api/v1/`` (no key): the OpenAPI description (JSON; YAML with ``?format=yaml``
  or ``Accept: …yaml``); ``POST /pro-api/v1/applications`` publishes (multipart ``metadata``
  + ``file``); ``POST`` / ``DELETE {apikeys}/{id}`` create (name, ``expiresAt`` ≤ 1 year,
  scopes; the secret shown once) and delete API keys. See ``sandbox/aimms/admin.py``.
- v2 tasks (Tasks scope): see ``sandbox/aimms/v2.py``; apps, services and the model's
  answers: see ``sandbox/aimms/model.py``; the queue: ``sandbox/aimms/tasks.py``.
- Control: ``POST /_sandbox/concurrency`` (``{"task_parallelism": n}``: the account's REST
  task concurrency, 0 as PRO's default profile), ``POST /_sandbox/tick`` (advance the queue to the clock, send due hooks and wait for
  them), ``GET /_sandbox/hooks`` (hook call log), plus the shared stats/faults/reset/mutate.
  ``POST /_sandbox/mutate`` takes ``{"entity": "users", "change", "delete", "add", "seed"}``
  or ``{"entity": "users", "update": [{"id", ...fields}], "delete_ids": [...], "add": [{...}]}``.

Tenants (portal accounts): a demo key plus a suffix (``demo-apikey-all-scopes-7``,
``demo-apikey-tasks-only-7``) is a key of account ``demo-7`` (the key's first word and the
suffix): its own users, apps, task queue, keys and counters; keys that account creates name
it too. A key of one account never reaches another's tasks. The control routes
(``/_sandbox/tick``, ``hooks``, ``concurrency``) take ``?tenant=demo-7``.

Settings (``SandboxOptions.vendors["aimms"]``; unknown keys are an error):
- ``task_parallelism`` (2): concurrent tasks (account parallelism × REST licence; PRO's own
  default profile is 0, which would make the demo useless).
- ``task_phases_s`` ({"assigned": 1, "running": 2, "solving": 2}): seconds in each phase.
- ``allow_interrupt_execution`` (False) [ASSUMPTION]: PRO refuses ``interrupt-execution`` with
  405; True behaves as local DEX (task → failed).
- ``response_unfinished_status`` (409) [ASSUMPTION]: ``GET …/response`` before the task ends.
- ``delete_refused_status`` (405) [ASSUMPTION]: DELETE of a task not queued/completed (DEX
  uses 405; the vendor notes suggest 409 for PRO).
- ``invalid_key_message`` ("invalid or expired api key") [ASSUMPTION]: the 401 message.
- ``error_body_key`` ("message") [ASSUMPTION]: errors are ``{"message": "…"}``.
- ``task_fields`` (list) [ASSUMPTION]: the v2 task object's fields, in order.
- ``listing_paths`` (dict) [ASSUMPTION]: paths of environments, groups, users and apikeys.
- ``api_keys`` (the demo keys): ``[{"key", "name", "scopes", "expires_in_s", "user"}]``.
- ``max_request_bytes`` (128 MiB, local DEX's default): bigger task bodies → 413.
- ``hook_timeout_s`` (5.0), ``tick_interval_s`` (0.5 s of real time; 0 = no background
  ticking, states still advance on every read), ``max_runs_per_group`` (1000).

Faults (``extra``): ``task_fail`` / ``task_stuck`` (true, or a fraction of new tasks: they
end ``failed`` with an errorMessage / stay ``running`` holding their slot), and
``licence_zero`` (true/false: parallelism 0 while on). Task faults apply to tasks created while on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import web

from sandbox.aimms.admin import AdminApi
from sandbox.aimms.config import PHASE_NAMES, ApiError, ApiKey, build_keys, resolve_settings
from sandbox.aimms.hooks import HookSender, hook_call_url
from sandbox.aimms.model import (
    AIMMS_VERSIONS,
    ENVIRONMENTS,
    USER_BASE_ID,
    App,
    Directory,
    default_apps,
    effective_authorization,
    precheck,
    run_service,
    touch_user,
    validate_authorizations,
)
from sandbox.aimms.schedule import iso
from sandbox.aimms.tasks import Fate, Phases, Run, TaskGroup, TaskQueue
from sandbox.aimms.v2 import TaskApi
from sandbox.app import SandboxOptions, VendorSim, suffixed
from sandbox.limits import LimitConfig

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _switch_on(value: Any, roll: Callable[[float], bool]) -> bool:
    """A fault switch: true/false, or a fraction of the decisions it applies to."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    return roll(float(value))


class AimmsSim(VendorSim):
    name: ClassVar[str] = "aimms"
    # PRO documents no request-rate limit; its cap is task concurrency, which queues.
    default_limits: ClassVar[LimitConfig] = LimitConfig()
    extra_faults: ClassVar[frozenset[str]] = frozenset({"task_fail", "task_stuck", "licence_zero"})

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        self.settings = resolve_settings(self.settings)
        self.keys = build_keys(self.settings["api_keys"], self.clock.now())
        self.hooks = HookSender(float(self.settings["hook_timeout_s"]))
        self.reset_data()

    def reset_data(self) -> None:
        self.directory = Directory(self.options.records, self.options.seed)
        self.apps: list[App] = default_apps()
        phases = Phases(*(float(self.settings["task_phases_s"][p]) for p in PHASE_NAMES))
        self.queue = TaskQueue(
            seed=self.options.seed,
            phases=phases,
            max_runs_per_group=int(self.settings["max_runs_per_group"]),
        )

    # --- vendor hooks -----------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response({self.settings["error_body_key"]: message}, status=status)

    def setup_routes(self, app: web.Application) -> None:
        g = self.guarded
        paths = self.settings["listing_paths"]
        app.router.add_post("/_sandbox/tick", self._post_tick)
        app.router.add_get("/_sandbox/hooks", self._get_hooks)
        app.router.add_get("/pro-api/v1/applications", g(self._list_apps))
        one_app = "/pro-api/v1/applications/{projectName}/{projectVersion}"
        app.router.add_patch(one_app, g(self._patch_app))
        app.router.add_delete(one_app, g(self._delete_app))
        app.router.add_get("/pro-api/v1/aimms-versions", g(self._list_versions))
        app.router.add_get(paths["environments"], g(self._list_environments))
        app.router.add_get(paths["groups"], g(self._list_groups))
        app.router.add_get(paths["users"], g(self._list_users))
        app.router.add_get(paths["apikeys"], g(self._list_apikeys))
        TaskApi(self).add_routes(app)
        AdminApi(self).add_routes(app, paths["apikeys"])
        app.cleanup_ctx.append(self._lifecycle)

    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        entity = body.get("entity", "users")
        if entity != "users":
            raise ValueError(f"unknown entity {entity!r}; the aimms sandbox mutates 'users'")
        users = self.directory.users
        out: dict[str, Any] = {"entity": "users", "changed": [], "deleted": [], "added": []}
        change, delete = float(body.get("change", 0)), float(body.get("delete", 0))
        if not (0 <= change <= 1 and 0 <= delete <= 1 and change + delete <= 1):
            raise ValueError("'change' and 'delete' are fractions summing to at most 1")
        add = body.get("add", 0)
        if change or delete or (isinstance(add, int) and add):
            n_add = int(add) if isinstance(add, int) else 0
            seed = int(body.get("seed", 0))
            done = users.mutate(touch_user, change=change, delete=delete, add=n_add, seed=seed)
            for what, indices in done.items():
                out[what] += [USER_BASE_ID + i for i in indices]
        updates = [
            (int(u["id"]), {k: v for k, v in u.items() if k != "id"})
            for u in body.get("update", [])
        ]
        delete_ids = [int(i) for i in body.get("delete_ids", [])]
        for user_id, fields in updates:  # check everything first: a 400 changes nothing
            if self.directory.user(user_id) is None:
                raise KeyError(f"unknown user id {user_id}")
            problem = self.directory.validate_user_fields(fields)
            if problem:
                raise ValueError(problem)
        missing = [i for i in delete_ids if self.directory.user(i) is None]
        if missing:
            raise KeyError(f"unknown user id(s) {missing}")
        for user_id, fields in updates:
            self.directory.update_user(user_id, fields)
            out["changed"].append(user_id)
        for user_id in delete_ids:
            users.delete(user_id - USER_BASE_ID)
            out["deleted"].append(user_id)
        if isinstance(add, list):
            out["added"] += [self.directory.add_user(dict(fields)) for fields in add]
        out["count"] = len(users)
        return out

    # --- tenants: one portal account each ----------------------------------------------------
    async def tenant_of(self, request: web.Request) -> str | None:
        """A configured key plus a suffix (``demo-apikey-all-scopes-7``) is a key of account
        ``demo-7`` (the key's first word and the suffix), as is a key that account created."""
        secret = request.headers.get("apikey")
        if not secret or secret in self.keys:
            return None
        for name, sim in self.tenants().items():
            if isinstance(sim, AimmsSim) and secret in sim.keys:
                return name
        named = suffixed(secret, self.keys)
        if named is None:
            return None
        return f"{named[0].split('-')[0]}-{named[1].rpartition('-')[2]}"

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        account, _, suffix = tenant.rpartition("-")
        keys = [
            {**spec, "key": f"{spec['key']}-{suffix}"}
            for spec in self.settings["api_keys"]
            if spec["key"].split("-")[0] == account
        ]
        return {"api_keys": keys}

    def _all_accounts(self) -> list[AimmsSim]:
        return [self, *(s for s in self.tenants().values() if isinstance(s, AimmsSim))]

    # --- shared helpers (also used by v2.TaskApi, see v2.TaskHost) --------------------------
    def guarded(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as exc:
                return self.error_response(exc.status, exc.message)

        return run

    def authorize(self, request: web.Request, scope: str) -> ApiKey:
        secret = request.headers.get("apikey")  # header names are case-insensitive
        key = self.keys.get(secret) if secret else None
        if key is None or key.expires_at <= self.clock.now():
            raise ApiError(401, self.settings["invalid_key_message"])
        if scope not in key.scopes:
            raise ApiError(403, f"api key lacks the '{scope}' scope")
        return key

    def app_rights(self, key: ApiKey, app: App) -> int:
        member = self.directory.member(key.user)
        if member is None:  # the key's user was deleted
            return 0
        entities = {member["id"], member["environment"], *member["groups"]}
        return effective_authorization(app.meta["authorizations"], entities)

    def find_app(self, name: str, version: str | None) -> App | None:
        for app in self.apps:
            meta = app.meta
            if meta["projectName"] == name and (
                meta["projectVersion"] == version if version is not None else meta["isLatest"]
            ):
                return app
        return None

    def now(self) -> float:
        return self.clock.now()

    def parallelism(self) -> int:
        if self.faults.extra.get("licence_zero"):
            return 0
        return int(self.settings["task_parallelism"])

    def decide(self, group: TaskGroup) -> Fate:
        """How a new run will end: the model's own verdict first, then injected faults."""
        problem = precheck(group.service, group.body)
        if problem:
            return "fail", problem
        extra = self.faults.extra
        if _switch_on(extra.get("task_fail"), self.faults.roll):
            return "fail", "Injected fault: the model session ended with an error"
        if _switch_on(extra.get("task_stuck"), self.faults.roll):
            return "stuck", None
        return "ok", None

    def advance(self) -> float:
        """Bring the queue to the clock: start, finish and announce what is due by now."""
        now = self.queue.advance(self.clock.now(), self.parallelism(), self.decide)
        for run in self.queue.finished(now):
            self._finish(run)
        calls: dict[str, list[Any]] = {}
        for run, state in self.queue.due_notifications(now):
            hook = run.group.hook
            assert hook is not None
            calls.setdefault(run.group.id, []).append(
                hook_call_url(hook, run.group.id, state, iso(now))
            )
        for task_id, urls in calls.items():
            self.hooks.send(task_id, urls)
        return now

    def _finish(self, run: Run) -> None:
        if run.history[-1][0] == "failed":
            run.return_code = -1
            return
        group = run.group
        outcome = run_service(
            group.service,
            group.body,
            group.content_type,
            self.directory,
            interrupted=run.interrupted,
        )
        run.return_code = outcome.return_code
        run.response = (outcome.body, outcome.content_type)

    # --- lifecycle and control --------------------------------------------------------------
    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        interval_s = float(self.settings["tick_interval_s"])
        ticker = asyncio.create_task(self._tick_forever(interval_s)) if interval_s > 0 else None
        yield
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        for sim in self._all_accounts():
            await sim.hooks.close()

    async def _tick_forever(self, interval_s: float) -> None:
        # Hooks fire without anyone polling, as on PRO; reads advance the queue anyway.
        while True:
            await asyncio.sleep(interval_s)
            try:
                for sim in self._all_accounts():  # every tenant's queue moves on its own
                    sim.advance()
            except Exception:
                log.exception("aimms sandbox: background tick failed")

    async def _post_tick(self, request: web.Request) -> web.Response:
        now = self.advance()
        await self.hooks.drain(float(self.settings["hook_timeout_s"]) + 1.0)
        states: dict[str, int] = {}
        for run in self.queue.runs():
            state = run.state_at(now)
            states[state] = states.get(state, 0) + 1
        return web.json_response({"now": iso(now), "states": states})

    async def _get_hooks(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.hooks.log))

    # --- v1 listings --------------------------------------------------------------------------
    async def _list_apps(self, request: web.Request) -> web.Response:
        self.authorize(request, "PublishApp")
        return web.json_response([app.meta for app in self.apps])

    def _app_or_404(self, request: web.Request) -> App:
        name, version = request.match_info["projectName"], request.match_info["projectVersion"]
        app = self.find_app(name, version)
        if app is None:
            raise ApiError(404, f"App {name} version {version} doesn't exist")
        return app

    async def _patch_app(self, request: web.Request) -> web.Response:
        self.authorize(request, "PublishApp")
        app = self._app_or_404(request)
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, "the body must be JSON") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        problem = _patch_problem(body)
        if problem:
            raise ApiError(400, problem)
        fields = ("description", "projectCategory", "attributes", "authorizations")
        changes = {k: body[k] for k in (*fields, "resourceProfile") if k in body}
        if body.get("isLatest"):
            for other in self.apps:  # the tag moves: one latest version per app name
                if other.meta["projectName"] == app.meta["projectName"]:
                    other.meta["isLatest"] = other is app
        app.meta.update(changes)
        return web.json_response(app.meta)

    async def _delete_app(self, request: web.Request) -> web.Response:
        self.authorize(request, "PublishApp")
        app = self._app_or_404(request)
        self.apps.remove(app)
        return web.Response(status=204)

    async def _list_versions(self, request: web.Request) -> web.Response:
        self.authorize(request, "PublishAIMMS")
        versions = [{"id": v, "activated": True, "authorization": []} for v in AIMMS_VERSIONS]
        return web.json_response({"versions": versions})

    async def _list_environments(self, request: web.Request) -> web.Response:
        self.authorize(request, "Authentication")
        return web.json_response(list(ENVIRONMENTS))

    async def _list_groups(self, request: web.Request) -> web.Response:
        self.authorize(request, "Authentication")
        return web.json_response([rec for _, rec in self.directory.groups.records()])

    async def _list_users(self, request: web.Request) -> web.Response:
        self.authorize(request, "Authentication")
        return web.json_response(self.directory.user_list())

    async def _list_apikeys(self, request: web.Request) -> web.Response:
        self.authorize(request, "API Key")
        return web.json_response([key.public() for key in self.keys.values()])


def _patch_problem(body: dict[str, Any]) -> str | None:
    """Why an application PATCH body is invalid, or None (absent fields stay unchanged)."""
    for name in ("description", "projectCategory", "resourceProfile"):
        if name in body and not isinstance(body[name], str):
            return f"'{name}' must be a string"
    if "isLatest" in body:
        if not isinstance(body["isLatest"], bool):
            return "'isLatest' must be true or false"
        if body["isLatest"] is False:
            return "latest app tag cannot be explicitly disabled"
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        return "'attributes' must be an object of string values"
    if "authorizations" in body:
        return validate_authorizations(body["authorizations"])
    return None


SIM = AimmsSim
DEMO_CREDENTIALS: dict[str, str] = {"apikey": "demo-apikey-all-scopes"}
EXAMPLE_PATH = "/pro-api/v1/applications"
