"""AIMMS PRO Tasks API v2 (``/pro-api/v2/tasks``), backed by ``tasks.TaskQueue``.

- ``POST /tasks/{app}/{version}/{service}`` and ``POST /tasks/{app}/{service}`` (the version
  tagged latest; none → 404 "App X with latest tag doesn't exist"). Unknown app or version →
  404; unknown service → 403 (as DEX); missing Read+Execute on the app → 403. Any body and
  content type; query ``scheduleFor`` | ``scheduleIn``, ``scheduleInterval``; header
  ``taskStateHook``. Answers ``200 {"id": uuid}``.
- ``GET /tasks[?appName=&appVersion=]``: every run the key's user may read, oldest first.
- ``GET /tasks/{id}[?groupIndex=]``: the task object (``task_fields``); 404 if unknown.
- ``GET /tasks/{id}/response``: the model's body with its content type once ``completed``;
  ``response_unfinished_status`` before the end; a ``failed`` task has an empty body.
- ``GET /tasks/{id}/logs`` (text lines) and ``…/logs/download`` (the same as an attachment).
- ``GET /tasks/stats`` (totals by state, mean queue and run times) and ``/stats/current``.
- ``PUT /tasks/{id}`` ``{"setstatus": "interrupt-solve"}`` → the solve ends now (or as soon
  as it starts) and the task completes; other values → 405 unless ``allow_interrupt_execution``.
- ``DELETE /tasks/{id}``: queued or completed runs only, else ``delete_refused_status``.
Times in task objects are ISO 8601 UTC; ``queueTime``/``runTime`` are seconds. ``returnCode``
is 1 for completed tasks (the DEX example's model returns 1) and -1 for failed ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from sandbox.aimms.config import ApiError, ApiKey
from sandbox.aimms.hooks import valid_hook
from sandbox.aimms.model import EXECUTE, READ, App
from sandbox.aimms.schedule import iso, parse_duration_s, parse_schedule_for
from sandbox.aimms.tasks import STATES, TERMINAL, Fate, Run, TaskGroup, TaskQueue

PREFIX = "/pro-api/v2/tasks"
CHUNK_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TaskHost(Protocol):
    """What the Tasks API uses of its simulator (an :class:`~sandbox.aimms.sim.AimmsSim`)."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def queue(self) -> TaskQueue: ...

    def guarded(self, handler: Handler) -> Handler: ...

    def authorize(self, request: web.Request, scope: str) -> ApiKey: ...

    def app_rights(self, key: ApiKey, app: App) -> int: ...

    def find_app(self, name: str, version: str | None) -> App | None: ...

    def parallelism(self) -> int: ...

    def decide(self, group: TaskGroup) -> Fate: ...

    def advance(self) -> float: ...


def parse_schedule(query: dict[str, str], now: float) -> tuple[float | None, float | None]:
    """``(due, interval_s)`` from the create-task query; ``ValueError`` when invalid."""
    due: float | None = None
    if "scheduleFor" in query and "scheduleIn" in query:
        raise ValueError("give either scheduleFor or scheduleIn, not both")
    if "scheduleFor" in query:
        due = parse_schedule_for(query["scheduleFor"])
    elif "scheduleIn" in query:
        due = now + parse_duration_s(query["scheduleIn"])
    interval_s = None
    if "scheduleInterval" in query:
        interval_s = parse_duration_s(query["scheduleInterval"])
        if interval_s <= 0:
            raise ValueError("scheduleInterval must be longer than zero")
    return due, interval_s


def render(run: Run, now: float, fields: list[str]) -> dict[str, Any]:
    """The v2 task object of one run as seen at ``now``."""
    group = run.group
    state = run.state_at(now)
    if run.assigned_at is not None:
        queue_end = run.assigned_at
    else:
        queue_end = run.finished_at if state in TERMINAL else now
    run_time = None
    if run.assigned_at is not None:
        run_time = round(min(now, run.finished_at) - run.assigned_at, 3)
    full = {
        "id": group.id,
        "appName": group.app_name,
        "appVersion": group.app_version,
        "serviceName": group.service,
        "state": state,
        "createdAt": iso(run.created_at),
        "queueTime": round(max(0.0, queue_end - run.eligible_at), 3),
        "runTime": run_time,
        "returnCode": run.return_code if state in TERMINAL else None,
        "errorMessage": run.error_message if state == "failed" else None,
        "scheduleFor": iso(run.eligible_at) if group.scheduled else None,
        "scheduleInterval": group.interval_text,
        "groupIndex": run.index if group.interval_s is not None else None,
    }
    return {name: full.get(name) for name in fields}


def log_lines(run: Run, now: float) -> str:
    where = f"task {run.group.id}"
    if run.group.interval_s is not None:
        where += f" (groupIndex {run.index})"
    lines = [f"{iso(t)} {where} {state}" for state, t in run.history if t <= now]
    if run.state_at(now) == "failed" and run.error_message:
        lines.append(f"{iso(run.finished_at)} {where} error: {run.error_message}")
    return "\n".join(lines) + "\n"


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    Reads the stream itself: ``request.read()`` would apply aiohttp's 1 MiB
    ``client_max_size`` of the root app instead of the vendor's 128 MB cap.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _group_index(request: web.Request) -> int | None:
    raw = request.query.get("groupIndex")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "groupIndex must be a non-negative integer")
    return int(raw)


class TaskApi:
    def __init__(self, sim: TaskHost) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        g, r = self.sim.guarded, app.router
        r.add_get(f"{PREFIX}/stats", g(self.stats))  # before /{id}, which would match too
        r.add_get(f"{PREFIX}/stats/current", g(self.stats_current))
        r.add_post(PREFIX + "/{appName}/{appVersion}/{serviceName}", g(self.create))
        r.add_post(PREFIX + "/{appName}/{serviceName}", g(self.create))
        r.add_get(PREFIX, g(self.list_tasks))
        r.add_get(PREFIX + "/{id}", g(self.get_task))
        r.add_put(PREFIX + "/{id}", g(self.interrupt))
        r.add_delete(PREFIX + "/{id}", g(self.delete))
        r.add_get(PREFIX + "/{id}/response", g(self.response))
        r.add_get(PREFIX + "/{id}/logs", g(self.logs))
        r.add_get(PREFIX + "/{id}/logs/download", g(self.logs))

    # --- helpers ----------------------------------------------------------------------------
    def _fields(self) -> list[str]:
        return list(self.sim.settings["task_fields"])

    def _rights(self, key: ApiKey, group: TaskGroup) -> int:
        app = self.sim.find_app(group.app_name, group.app_version)
        if app is None:  # the app was deleted since: only the task's creator still sees it
            return READ | EXECUTE if group.owner == key.user else 0
        return self.sim.app_rights(key, app)

    def _run(self, request: web.Request, key: ApiKey, need: int) -> Run:
        task_id = request.match_info["id"]
        try:
            run = self.sim.queue.find(task_id, _group_index(request))
        except KeyError as exc:
            raise ApiError(404, f"Task {task_id} not found") from exc
        if self._rights(key, run.group) & need != need:
            raise ApiError(403, f"no permission on app {run.group.app_name}")
        return run

    # --- handlers ---------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        sim = self.sim
        key = sim.authorize(request, "Tasks")
        now = sim.advance()
        name = request.match_info["appName"]
        version = request.match_info.get("appVersion")
        service = request.match_info["serviceName"]
        app = sim.find_app(name, version)
        if app is None:
            if version is None:
                raise ApiError(404, f"App {name} with latest tag doesn't exist")
            raise ApiError(404, f"App {name} version {version} doesn't exist")
        if sim.app_rights(key, app) & (READ | EXECUTE) != READ | EXECUTE:
            raise ApiError(403, f"Read and Execute permissions on app {name} are required")
        if service not in app.services:
            raise ApiError(403, f"Service {service} not found")  # DEX answers 403 here
        hook = request.headers.get("taskStateHook")
        if hook is not None and not valid_hook(hook):
            raise ApiError(400, "taskStateHook must be an http(s) URL")
        try:
            due, interval_s = parse_schedule(dict(request.query), now)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        body = await read_body(request, int(sim.settings["max_request_bytes"]))
        group = self._new_group(request, app, service, body, hook, key, interval_s)
        sim.queue.create(group, now, due, sim.decide(group))
        sim.advance()  # start it at once if a slot is free, and announce "queued"
        return web.json_response({"id": group.id})

    def _new_group(
        self,
        request: web.Request,
        app: App,
        service: str,
        body: bytes,
        hook: str | None,
        key: ApiKey,
        interval_s: float | None,
    ) -> TaskGroup:
        query = request.query
        return TaskGroup(
            id=self.sim.queue.new_id(),
            app_name=app.meta["projectName"],
            app_version=app.meta["projectVersion"],
            service=service,
            body=body,
            content_type=request.headers.get("Content-Type", ""),
            hook=hook,
            scheduled=any(k in query for k in ("scheduleFor", "scheduleIn", "scheduleInterval")),
            interval_s=interval_s,
            interval_text=query.get("scheduleInterval"),
            owner=key.user,
        )

    async def list_tasks(self, request: web.Request) -> web.Response:
        key = self.sim.authorize(request, "Tasks")
        now = self.sim.advance()
        app_name, app_version = request.query.get("appName"), request.query.get("appVersion")
        fields = self._fields()
        out = [
            render(run, now, fields)
            for run in self.sim.queue.runs()
            if (app_name is None or run.group.app_name == app_name)
            and (app_version is None or run.group.app_version == app_version)
            and self._rights(key, run.group) & READ
        ]
        return web.json_response(out)

    async def get_task(self, request: web.Request) -> web.Response:
        key = self.sim.authorize(request, "Tasks")
        now = self.sim.advance()
        run = self._run(request, key, READ)
        return web.json_response(render(run, now, self._fields()))

    async def interrupt(self, request: web.Request) -> web.Response:
        sim = self.sim
        key = sim.authorize(request, "Tasks")
        now = sim.advance()
        run = self._run(request, key, READ | EXECUTE)
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(
                400, 'the body must be JSON like {"setstatus": "interrupt-solve"}'
            ) from exc
        setstatus = body.get("setstatus") if isinstance(body, dict) else None
        if setstatus == "interrupt-solve":
            result = sim.queue.interrupt_solve(run, now)
        elif setstatus == "interrupt-execution" and sim.settings["allow_interrupt_execution"]:
            result = sim.queue.interrupt_execution(run, now)
        else:
            # The PRO REST API takes only interrupt-solve (its sessions are PRO's to stop).
            raise ApiError(405, f"setstatus {setstatus!r} is not supported; use interrupt-solve")
        now = sim.advance()
        return web.json_response({**render(run, now, self._fields()), "setstatus": result})

    async def delete(self, request: web.Request) -> web.Response:
        sim = self.sim
        key = sim.authorize(request, "Tasks")
        now = sim.advance()
        run = self._run(request, key, READ | EXECUTE)
        state = run.state_at(now)
        if state not in {"queued", "completed"}:
            status = int(sim.settings["delete_refused_status"])
            raise ApiError(status, f"Task in state {state} cannot be deleted")
        sim.queue.delete(run)
        return web.json_response(render(run, now, self._fields()))

    async def response(self, request: web.Request) -> web.Response:
        sim = self.sim
        key = sim.authorize(request, "Tasks")
        now = sim.advance()
        run = self._run(request, key, READ)
        state = run.state_at(now)
        if state not in TERMINAL:
            status = int(sim.settings["response_unfinished_status"])
            raise ApiError(status, f"Task is {state}; the response exists once it has finished")
        if run.response is None:  # failed: the model wrote no response
            return web.Response(body=b"", content_type="application/octet-stream")
        body, content_type = run.response
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def logs(self, request: web.Request) -> web.Response:
        key = self.sim.authorize(request, "Tasks")
        now = self.sim.advance()
        run = self._run(request, key, READ)
        resp = web.Response(text=log_lines(run, now), content_type="text/plain")
        if request.path.endswith("/download"):
            resp.headers["Content-Disposition"] = f'attachment; filename="{run.group.id}.log"'
        return resp

    async def stats(self, request: web.Request) -> web.Response:
        key = self.sim.authorize(request, "Tasks")
        now = self.sim.advance()
        by_state = dict.fromkeys(STATES, 0)
        queue_s: list[float] = []
        run_s: list[float] = []
        fields = ["state", "queueTime", "runTime"]
        for run in self.sim.queue.runs():
            if self._rights(key, run.group) & READ:
                obj = render(run, now, fields)
                by_state[obj["state"]] += 1
                queue_s.append(obj["queueTime"])
                if obj["state"] in TERMINAL and obj["runTime"] is not None:
                    run_s.append(obj["runTime"])
        return web.json_response(
            {
                "total": sum(by_state.values()),
                "byState": by_state,
                "averageQueueTime": round(sum(queue_s) / len(queue_s), 3) if queue_s else None,
                "averageRunTime": round(sum(run_s) / len(run_s), 3) if run_s else None,
            }
        )

    async def stats_current(self, request: web.Request) -> web.Response:
        self.sim.authorize(request, "Tasks")
        now = self.sim.advance()
        active = dict.fromkeys(("queued", "assigned", "running", "solving"), 0)
        for run in self.sim.queue.runs():
            state = run.state_at(now)
            if state in active:
                active[state] += 1
        parallelism = self.sim.parallelism()
        busy = self.sim.queue.busy(now)
        return web.json_response(
            {**active, "parallelism": parallelism, "available": max(0, parallelism - busy)}
        )
