"""AIMMS PRO (Azure cloud): catalog listings, task history, task exchanges, push as tasks.

* **Catalog** (``/pro-api/v1``): applications (one record per name/version, ``isLatest``
  telling which carries the latest tag), AIMMS versions, environments, groups, users. No
  listing pages or filters, so each run reads the whole listing; the engine writes only what
  changed and soft-deletes what vanished (``seen_keys``). The environments/groups/users
  paths are vendor assumptions: ``[vendors.aimms.options.paths]`` overrides them.
* **Task history** (``GET /pro-api/v2/tasks``): new tasks and tasks whose state moved,
  keyed by id (``id#groupIndex`` for runs of a scheduled series), cursor = state.
* **Task exchange** (configured streams, ``ExchangeOptions``): run a DEX service as a task
  and stage its response (JSON, or CSV streamed) by a declared key; see ``aimms_tasks``.
  The task id is checkpointed once created, so a run killed before it read the result
  leaves the task to the next (non ``--full``) run, which follows it instead of creating
  the same work again.
* **Push** (entity ``task``): a batch of rows is one task's JSON body (``options.push``);
  every row shares its task's outcome.

Auth: the ``apikey`` header on every call; a key lacking a scope fails that stream with the
scope named (403), the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from service.connectors.aimms_tasks import (
    ExchangeOptions,
    LicenceError,
    TaskOptions,
    TaskRunner,
    TaskStuck,
    response_rows,
    scope_error,
    staged_body,
)
from service.connectors.base import Connector, PushOutcome, StreamContext, StreamSpec
from service.connectors.paging import JobFailed, JobTimeout
from service.errors import AuthError, FatalError, ParseError, RequestRejected, RetriableError
from service.models import JSON, Batch, Record

V1 = "/pro-api/v1"
VENDOR = "aimms"
RESUME_WITHIN_S = 86_400.0  # an older task of a killed run is not followed: its data is old

# Stream → (default path, scope, record key of one item). Paths of the "Authentication"
# section were not retrieved from the vendor: they are assumptions, configurable.
DEFAULT_PATHS: dict[str, str] = {
    "applications": f"{V1}/applications",
    "aimms_versions": f"{V1}/aimms-versions",
    "environments": f"{V1}/authentication/environments",
    "groups": f"{V1}/authentication/groups",
    "users": f"{V1}/authentication/users",
}
SCOPES: dict[str, str] = {
    "applications": "PublishApp",
    "aimms_versions": "PublishAIMMS",
    "environments": "Authentication",
    "groups": "Authentication",
    "users": "Authentication",
    "tasks": "Tasks",
}


def app_key(item: dict[str, Any]) -> str | None:
    name, version = item.get("projectName"), item.get("projectVersion")
    return None if not name or not version else f"{name}/{version}"


def task_key(item: dict[str, Any]) -> str | None:
    if not item.get("id"):
        return None
    index = item.get("groupIndex")
    return str(item["id"]) if index is None else f"{item['id']}#{index}"


def id_key(item: dict[str, Any]) -> str | None:
    value = item.get("id")
    return None if value in (None, "") else str(value)


KEYS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "applications": app_key,
    "tasks": task_key,
}


def parse_listing(stream: str, body: Any) -> list[dict[str, Any]]:
    """A v1 listing → its items (AIMMS versions come wrapped as ``{"versions": [...]}``)."""
    if isinstance(body, dict):
        for wrapper in ("versions", "items", "data", stream):
            if isinstance(body.get(wrapper), list):
                body = body[wrapper]
                break
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        raise ParseError(f"AIMMS PRO {stream} listing is not a list of objects", vendor=VENDOR)
    return body


def keyed(stream: str, items: list[dict[str, Any]]) -> list[Record]:
    key_of = KEYS.get(stream, id_key)
    out: list[Record] = []
    for i, item in enumerate(items):
        key = key_of(item)
        if key is None:
            raise ParseError(f"AIMMS PRO {stream} item {i} has no key", vendor=VENDOR)
        cursor = str(item.get("state")) if stream == "tasks" else None
        out.append(Record(stream, key, item, cursor))
    return out


def changed_tasks(records: list[Record], staged: dict[str, str | None]) -> list[Record]:
    """Tasks that are new, or whose state differs from the staged one."""
    return [r for r in records if r.key not in staged or staged[r.key] != r.cursor]


class AimmsConnector(Connector):
    vendor = "aimms"
    stream_specs = (
        StreamSpec("applications", "projectName/projectVersion", description="apps by version"),
        StreamSpec("aimms_versions", "id", description="AIMMS versions on the cloud"),
        StreamSpec("environments", "id", fields=(("id", "integer"), ("name", "text"))),
        StreamSpec(
            "groups", "id", fields=(("id", "integer"), ("name", "text"), ("environment", "integer"))
        ),
        StreamSpec(
            "users",
            "id",
            fields=(
                ("id", "integer"),
                ("name", "text"),
                ("email", "text"),
                ("environment", "integer"),
                ("isActive", "boolean"),
                ("isAdmin", "boolean"),
                ("groups", "text"),
            ),
        ),
        StreamSpec("tasks", "id#groupIndex", "state", description="task history"),
    )
    push_entities = ("task",)
    stream_options: ClassVar[type[BaseModel] | None] = ExchangeOptions
    auth_defaults: ClassVar[dict[str, Any]] = {"header": "apikey"}

    @classmethod
    def configured_spec(cls, stream: str, options: BaseModel) -> StreamSpec:
        assert isinstance(options, ExchangeOptions)
        return StreamSpec(stream, options.key, description=f"task {options.describe()}")

    def path(self, stream: str) -> str:
        paths = self.settings.options.get("paths") or {}
        return str(paths.get(stream) or DEFAULT_PATHS[stream])

    def runner(self, ctx: StreamContext | None = None) -> TaskRunner:
        if ctx is None:  # push runs outside a stream: real time
            return TaskRunner(self.client, clock=time.monotonic, sleep=asyncio.sleep)
        return TaskRunner(self.client, clock=ctx.clock, sleep=ctx.sleep)

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        spec = self.spec(ctx.stream)
        if self.declared(ctx.stream) is None:
            async with contextlib.aclosing(self.exchange(ctx, spec.name)) as batches:
                async for batch in batches:
                    yield batch
            return
        name = spec.name
        items = await self.listing(name)
        records = keyed(name, items)
        if name == "tasks":
            # History: keep tasks PRO no longer lists; stage new ones and state changes.
            todo = records if ctx.full or ctx.since else changed_tasks(records, await ctx.cursors())
            ctx.expect(len(todo))
            yield Batch(todo, state={"listed": len(records)}, unchanged=len(records) - len(todo))
            return
        ctx.expect(len(records))
        yield Batch(
            records, state={"listed": len(records)}, seen_keys=frozenset(r.key for r in records)
        )

    async def listing(self, stream: str) -> list[dict[str, Any]]:
        path = "/pro-api/v2/tasks" if stream == "tasks" else self.path(stream)
        try:
            resp = await self.client.request("GET", path, expect_json=True)
        except AuthError as exc:
            raise scope_error(exc, SCOPES[stream], f"list {stream}") from exc
        return parse_listing(stream, resp.json())

    async def exchange(self, ctx: StreamContext, stream: str) -> AsyncGenerator[Batch, None]:
        """Run the configured task, stage its response as a complete snapshot."""
        opts = ExchangeOptions.model_validate(ctx.options or self._options(stream))
        runner = self.runner(ctx)
        body = opts.body
        if opts.body_from is not None:
            source = opts.body_from
            if ctx.staged_rows is None:
                raise FatalError("body_from needs staged rows (run through the engine)")
            staged = await ctx.staged_rows(source.vendor or ctx.vendor, source.stream)
            body = staged_body(staged, source)
        payload = encode_body(body)
        sig = task_signature(opts, payload)
        task_id = await self._resumable(runner, ctx, sig)
        if task_id is None:
            task_id = await runner.create(opts, payload)
            # Saved before the wait: a run killed from here on leaves the task to the next
            # run, which follows it instead of starting the same work again.
            pending: JSON = {"pending": {"task": task_id, "sig": sig, "at": ctx.now().isoformat()}}
            yield Batch([], state=pending, marks=())
        else:
            ctx.note(f"resumed task {task_id} of an interrupted run")
        task = await runner.wait(task_id, opts)
        state: JSON = {"task": task.id, "state": task.state}
        spec = self.configured_spec(stream, opts)
        count = 0
        if opts.format == "json":
            rows = response_rows(await runner.response_json(task_id), opts.rows_path)
            chunks: AsyncGenerator[list[dict[str, Any]], None] = _chunks(rows, ctx.batch_size)
        else:
            chunks = runner.response_csv(task_id, ctx.batch_size)
        async with contextlib.aclosing(chunks) as parts:
            async for part in parts:
                records = [_row_record(spec, stream, row, count + i) for i, row in enumerate(part)]
                count += len(records)
                ctx.advance(len(records))
                yield Batch(records, marks=())
        if opts.delete_completed:
            await runner.delete(task_id)
        yield Batch([], state={**state, "rows": count}, marks=(), complete=True)

    async def _resumable(self, runner: TaskRunner, ctx: StreamContext, sig: str) -> str | None:
        """The task an interrupted run of this exchange created, when it was made from the
        same service and body less than a day ago and PRO still has it (not failed)."""
        pending = (ctx.state or {}).get("pending") if isinstance(ctx.state, dict) else None
        if not isinstance(pending, dict) or pending.get("sig") != sig:
            return None
        task_id, at = pending.get("task"), pending.get("at")
        try:
            age_s = (ctx.now() - datetime.fromisoformat(str(at))).total_seconds()
        except (TypeError, ValueError):  # not a time, or naive against aware
            return None
        if not isinstance(task_id, str) or not 0 <= age_s < RESUME_WITHIN_S:
            return None
        try:
            task = await runner.get(task_id)
        except RequestRejected as exc:
            if exc.status == 404:  # deleted (after its rows were read) or purged
                return None
            raise
        return None if task.state == "failed" else task.id

    def _options(self, stream: str) -> dict[str, Any]:
        configured = self.settings.streams.get(stream)
        return configured.options if configured else {}

    # --- push -----------------------------------------------------------------------------
    def push_options(self) -> TaskOptions:
        try:
            return TaskOptions.model_validate(self.settings.options.get("push") or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'push'}: {e['msg']}" for e in exc.errors()
            )
            # Fatal, not a bug: the rows wait as failed until the config names a target.
            raise FatalError(
                f"vendors.{self.connection}.options.push: the push target (app, service, …) "
                f"is missing or invalid: {problems}",
                vendor=self.connection,
            ) from None

    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        if entity != "task":
            return "AIMMS PRO accepts pushes only as task payloads (entity 'task')"
        return None if isinstance(payload, dict) and payload else "an empty row"

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        value = payload.get("id") if isinstance(payload, dict) else None
        return None if value in (None, "") else str(value)

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        """One task per batch; each row's outcome is its task's outcome."""
        opts = self.push_options()
        keys = [key for key, _ in rows]
        runner = self.runner()
        body = json.dumps([payload for _, payload in rows]).encode()
        task_id = await runner.create(opts, body)
        try:
            await runner.wait(task_id, opts)
        except JobFailed as exc:
            return [PushOutcome(k, "rejected", str(exc)) for k in keys]
        except (TaskStuck, JobTimeout, LicenceError, RetriableError) as exc:
            return [PushOutcome(k, "retry", str(exc)) for k in keys]
        if opts.delete_completed:
            await runner.delete(task_id)
        return [PushOutcome(k, "accepted", f"task {task_id} completed") for k in keys]


def task_signature(opts: TaskOptions, body: bytes) -> str:
    """What makes two task creations the same work: the service path, type and body."""
    digest = hashlib.sha256(f"{opts.create_path()}\n{opts.content_type}\n".encode())
    digest.update(body)
    return digest.hexdigest()[:32]


def encode_body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _row_record(spec: StreamSpec, stream: str, row: dict[str, Any], n: int) -> Record:
    key = spec.key_of(row)
    if key is None:
        raise ParseError(
            f"task response row {n} has no {spec.key_field!r} (the stream's key)", vendor=VENDOR
        )
    return Record(stream, key, row)


async def _chunks(
    rows: list[dict[str, Any]], size: int
) -> AsyncGenerator[list[dict[str, Any]], None]:
    for start in range(0, len(rows), max(size, 1)):
        yield rows[start : start + size]
