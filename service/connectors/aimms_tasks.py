"""AIMMS PRO v2 tasks: run a DEX service as a task, follow it to its end, read its response.

Pure parsing (``parse_task``, ``task_status``, ``response_rows``, ``csv_rows``) plus one
driver, ``TaskRunner.run``: create → poll with backoff (``paging.poll_job``) → completed
(the response is read) or failed (``JobFailed`` with the task's ``errorMessage``). Two ways
a task may never end are told apart:

* **stuck**: it started but is still not done at the deadline: interrupted with
  ``interrupt-solve`` (the only interrupt PRO accepts), then the run fails.
* **licence**: still ``queued`` after ``licence_wait_s`` while no other task of the
  account runs: the REST licence profile allows 0 concurrent tasks (PRO's default). We
  stop with an actionable error instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.connectors.base import field_value
from service.connectors.paging import JobStatus, JobTimeout, PollPolicy, poll_job
from service.errors import AuthError, FatalError, ParseError, RequestRejected
from service.http import VendorClient

TASKS = "/pro-api/v2/tasks"
TERMINAL = frozenset({"completed", "failed"})
ACTIVE = frozenset({"assigned", "running", "solving"})
VENDOR = "aimms"


class LicenceError(FatalError):
    """The account's REST licence profile lets no task start."""


class TaskStuck(FatalError):
    """A task did not finish by its deadline (it was interrupted)."""


class TaskOptions(BaseModel):
    """How one DEX service is run as a task (a configured stream, or the push target)."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(min_length=1)
    version: str | None = None  # None or "latest": the version tagged latest
    service: str = Field(min_length=1)
    body: Any = None  # sent as JSON; None sends an empty body
    content_type: str = Field(
        "application/json", pattern=r"^[\w.+-]+/[\w.+-]+(;[^\x00-\x1f\x7f]*)?$"
    )
    poll_min_s: float = Field(default=1.0, gt=0)
    poll_max_s: float = Field(default=5.0, gt=0)
    deadline_s: float = Field(default=3600.0, gt=0)
    # A task queued this long while none of the account's tasks runs: licence at 0.
    licence_wait_s: float = Field(default=120.0, gt=0)
    delete_completed: bool = False

    @model_validator(mode="after")
    def _poll(self) -> TaskOptions:
        if self.poll_min_s > self.poll_max_s:
            raise ValueError("poll_min_s must not exceed poll_max_s")
        return self

    def policy(self) -> PollPolicy:
        return PollPolicy(self.poll_min_s, self.poll_max_s, 2.0, self.deadline_s)

    def create_path(self) -> str:
        parts = [self.app] if self.latest() else [self.app, str(self.version)]
        return "/".join([TASKS, *(quote(p, safe="") for p in parts), quote(self.service, safe="")])

    def latest(self) -> bool:
        return self.version in (None, "", "latest")

    def describe(self) -> str:
        return f"{self.app}/{'latest' if self.latest() else self.version}/{self.service}"


class BodyFrom(BaseModel):
    """A task body built from the staged rows of another stream: a JSON list of their
    payloads (only ``fields`` when given), wrapped as ``{wrap: [...]}`` when ``wrap`` is set."""

    model_config = ConfigDict(extra="forbid")

    stream: str = Field(min_length=1)
    vendor: str | None = None  # None: this vendor
    fields: list[str] | None = None
    wrap: str | None = None
    max_rows: int = Field(default=100_000, gt=0)  # one request body: keep it bounded


def staged_body(rows: dict[str, Any], spec: BodyFrom) -> Any:
    """The task body for ``rows`` (key → payload), in key order (stable between runs)."""
    if len(rows) > spec.max_rows:
        raise FatalError(
            f"{len(rows)} staged rows of {spec.stream!r} exceed body_from.max_rows "
            f"({spec.max_rows})",
            vendor=VENDOR,
        )
    items = [rows[k] for k in sorted(rows)]
    if spec.fields is not None:
        items = [
            {f: field_value(p, f) for f in spec.fields} if isinstance(p, dict) else p for p in items
        ]
    return {spec.wrap: items} if spec.wrap else items


class ExchangeOptions(TaskOptions):
    """A configured task-exchange stream: the task plus how to stage its response."""

    key: str = Field(min_length=1)  # the key field of each response row (dotted, a|b)
    format: Literal["json", "csv"] = "json"
    rows_path: str | None = None  # JSON: where the list of rows sits (None: the body is it)
    body_from: BodyFrom | None = None  # instead of ``body``: staged rows of another stream

    @model_validator(mode="after")
    def _one_body(self) -> ExchangeOptions:
        if self.body is not None and self.body_from is not None:
            raise ValueError("give either body or body_from, not both")
        return self


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    state: str
    error: str | None
    raw: dict[str, Any]


def parse_task(body: Any) -> Task:
    """A v2 task object → ``Task``; a shape we do not understand is a ParseError."""
    if not isinstance(body, dict) or not body.get("id") or not isinstance(body.get("state"), str):
        raise ParseError("AIMMS PRO task object lacks an id or a state", vendor=VENDOR)
    error = body.get("errorMessage")
    return Task(str(body["id"]), body["state"].lower(), None if error is None else str(error), body)


def parse_created(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise ParseError("AIMMS PRO task create answer has no id", vendor=VENDOR)
    return body["id"]


def task_status(task: Task) -> JobStatus[Task]:
    return JobStatus(
        task.state,
        done=task.state == "completed",
        failed=task.state == "failed",
        error=task.error or "the task failed without an errorMessage",
        result=task,
    )


def licence_blocked(state: str, queued_for_s: float, wait_s: float, others_active: int) -> bool:
    """A queued task that never started while nothing else ran: the licence is 0."""
    return state == "queued" and queued_for_s >= wait_s and others_active == 0


def response_rows(body: Any, rows_path: str | None) -> list[dict[str, Any]]:
    """The rows of a JSON task response (at ``rows_path`` when given)."""
    rows = field_value(body, rows_path) if rows_path else body
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        where = f" at {rows_path!r}" if rows_path else ""
        raise ParseError(f"task response{where} is not a list of objects", vendor=VENDOR)
    return rows


def csv_rows(header: list[str] | None, lines: Iterable[str]) -> tuple[list[str], list[dict]]:
    """Parse complete CSV ``lines``; the first line is the header unless one is given."""
    reader = csv.reader(io.StringIO("".join(lines), newline=""))
    out: list[dict[str, Any]] = []
    try:
        for values in reader:
            if header is None:
                header = [h.strip() for h in values]
                continue
            if values:
                out.append(dict(zip(header, values, strict=False)))
    except csv.Error as exc:
        raise ParseError(f"task response is not CSV: {exc}", vendor=VENDOR) from exc
    return header or [], out


def line_complete(pending: str) -> bool:
    """Whether buffered CSV text ends outside a quoted field (newlines inside quotes)."""
    return pending.count('"') % 2 == 0


def scope_error(exc: AuthError, scope: str, what: str) -> AuthError:
    """A 403 restated with the scope the call needs (the vendor text stays appended)."""
    if exc.status != 403:
        return exc
    return AuthError(
        f"AIMMS PRO API key lacks the {scope!r} scope (or the app permission) needed to "
        f"{what}: {exc}",
        status=403,
        vendor=VENDOR,
    )


class TaskRunner:
    """One task from creation to its end, on the caller's clock."""

    def __init__(
        self,
        client: VendorClient,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Any],
    ) -> None:
        self.client = client
        self.clock = clock
        self.sleep = sleep

    async def create(self, opts: TaskOptions, body: bytes) -> str:
        try:
            resp = await self.client.request(
                "POST",
                opts.create_path(),
                data=body,
                headers={"Content-Type": opts.content_type},
                expect_json=True,
            )
        except AuthError as exc:
            raise scope_error(exc, "Tasks", f"run {opts.describe()}") from exc
        return parse_created(resp.json())

    async def get(self, task_id: str) -> Task:
        try:
            resp = await self.client.request("GET", f"{TASKS}/{task_id}", expect_json=True)
        except AuthError as exc:
            raise scope_error(exc, "Tasks", "read a task") from exc
        return parse_task(resp.json())

    async def active_count(self, exclude: str) -> int:
        resp = await self.client.request("GET", TASKS, expect_json=True)
        body = resp.json()
        if not isinstance(body, list):
            raise ParseError("AIMMS PRO task list is not a JSON array", vendor=VENDOR)
        return sum(
            1
            for t in body
            if isinstance(t, dict) and t.get("state") in ACTIVE and t.get("id") != exclude
        )

    async def wait(self, task_id: str, opts: TaskOptions) -> Task:
        """Poll until completed; JobFailed / TaskStuck / LicenceError otherwise."""
        created = self.clock()

        async def check() -> JobStatus[Task]:
            task = await self.get(task_id)
            queued_for = self.clock() - created
            # Only a task still queued past the wait costs a second call (the task list).
            if (
                task.state == "queued"
                and queued_for >= opts.licence_wait_s
                and licence_blocked(
                    task.state, queued_for, opts.licence_wait_s, await self.active_count(task_id)
                )
            ):
                raise LicenceError(
                    f"AIMMS PRO task {task_id} ({opts.describe()}) stayed queued for "
                    f"{queued_for:.0f}s while no other task ran: the account's REST "
                    "licence profile allows 0 concurrent tasks (PRO's default). Ask AIMMS "
                    "Customer Support to enable the REST profile for this account.",
                    vendor=VENDOR,
                )
            return task_status(task)

        try:
            status = await poll_job(
                check,
                opts.policy(),
                clock=self.clock,
                sleep=self.sleep,
                what=f"AIMMS PRO task {task_id} ({opts.describe()})",
            )
        except JobTimeout as exc:
            await self.interrupt(task_id)
            raise TaskStuck(
                f"AIMMS PRO task {task_id} ({opts.describe()}) not finished after "
                f"{opts.deadline_s:g}s; interrupted with interrupt-solve",
                vendor=VENDOR,
            ) from exc
        assert status.result is not None
        return status.result

    async def interrupt(self, task_id: str) -> None:
        # PRO accepts only interrupt-solve (interrupt-execution would end its session).
        await self.client.request(
            "PUT", f"{TASKS}/{task_id}", json={"setstatus": "interrupt-solve"}
        )

    async def response_json(self, task_id: str) -> Any:
        resp = await self.client.request("GET", f"{TASKS}/{task_id}/response", expect_json=True)
        return resp.json()

    async def response_csv(
        self, task_id: str, batch: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The CSV response, streamed: lists of at most ~``batch`` rows."""
        header: list[str] | None = None
        pending: list[str] = []
        async with self.client.stream("GET", f"{TASKS}/{task_id}/response") as resp:
            carry = ""
            async for raw in resp.content.iter_lines():
                carry += raw.decode("utf-8")
                if not line_complete(carry):
                    continue  # a quoted field goes on over the next line
                pending.append(carry)
                carry = ""
                if len(pending) >= batch:
                    header, rows = csv_rows(header, pending)
                    pending = []
                    yield rows
            if carry:
                pending.append(carry)
        header, rows = csv_rows(header, pending)
        yield rows

    async def delete(self, task_id: str) -> None:
        # Best effort: a task PRO will not delete stays listed, nothing worse.
        with contextlib.suppress(RequestRejected):
            await self.client.request("DELETE", f"{TASKS}/{task_id}")
