"""Aimsio: list stubs, fetch only what changed, soft-delete what vanished; push master data.

Incremental pull, per entity:
1. ``GET /rest/api/standard/v1/{Entity}``: a bare array of ``{dtype, guid|id, updatedAt}``.
2. Compare each ``updatedAt`` (epoch ms, as integers) with the staged cursor of that key.
3. ``GET …/{Entity}/{id}`` only for new or changed keys, concurrently; the vendor limiter
   (10 in flight, 10/s, shared by every stream of this process) is the only brake.
4. The listing is complete, so keys missing from it are soft-deleted (last batch).

A second run over unchanged data costs one list call per entity and writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from service.connectors.base import (
    Connector,
    PushOutcome,
    PushStatus,
    StreamContext,
    StreamSpec,
    field_value,
)
from service.connectors.checkpoint import epoch_ms, rereads
from service.connectors.fetch import bounded_fetch
from service.errors import ParseError, RequestRejected
from service.models import JSON, Batch, Record

API = "/rest/api/standard/v1"
KEY_FIELD = "guid|id"  # list stubs and objects carry one or the other
CURSOR_FIELD = "updatedAt"  # epoch ms

# Entity → (list key in a POST body, natural key field). Only these accept pushes.
PUSH_ENTITIES: dict[str, tuple[str, str]] = {
    "User": ("userList", "userName"),
    "Employee": ("employeeList", "employeeCode"),
    "Equipment": ("equipmentList", "equipmentCode"),
    "NRB": ("nrbList", "nrbNumber"),
}

EMPLOYMENT_TYPES = {"DIRECT_HIRE", "SUBCONTRACTOR"}
EMPLOYEE_STATUSES = {
    "active_employee_status",
    "inactive_permanent_layoff_employee_status",
    "inactive_temporary_layoff_employee_status",
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "User": ("userName", "userFirstName", "userLastName", "userIsActive"),
    "Employee": (
        "employeeCode",
        "employmentType",
        "employeeStatusUname",
        "employeeFirstName",
        "employeeLastName",
    ),
    "Equipment": ("equipmentCode",),
    "NRB": ("nrbNumber",),
}


@dataclass(frozen=True, slots=True)
class Stub:
    key: str
    updated_at: int


def parse_stubs(entity: str, body: Any) -> list[Stub]:
    """The GET-all listing → stubs; a shape we do not understand is a ParseError."""
    if not isinstance(body, list):
        raise ParseError(f"{entity} listing is not a JSON array", vendor="aimsio", stream=entity)
    stubs: list[Stub] = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise ParseError(f"{entity} listing item {i} is not an object", vendor="aimsio")
        key = field_value(item, KEY_FIELD)
        updated = item.get(CURSOR_FIELD)
        if key is None or isinstance(updated, bool) or not isinstance(updated, int):
            raise ParseError(
                f"{entity} listing item {i} lacks guid/id or an integer updatedAt",
                vendor="aimsio",
                stream=entity,
            )
        stubs.append(Stub(str(key), updated))
    return stubs


def changed_stubs(stubs: Iterable[Stub], staged: dict[str, str | None]) -> list[Stub]:
    """Stubs that are new or whose ``updatedAt`` differs from the staged cursor."""
    out = []
    for stub in stubs:
        cursor = staged.get(stub.key)
        if cursor is None or not cursor.lstrip("-").isdigit() or int(cursor) != stub.updated_at:
            out.append(stub)
    return out


def validate_row(entity: str, row: JSON) -> str | None:
    """Why Aimsio would reject this row, checked locally before sending; None if valid."""
    if entity not in PUSH_ENTITIES:
        return f"Aimsio does not accept pushes of {entity}"
    missing = [f for f in REQUIRED[entity] if row.get(f) in (None, "")]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    if entity == "User":
        if not (row.get("userRoleNames") or row.get("userRoleGuids")):
            return "userRoleNames or userRoleGuids is required"
        short = row.get("userShortCode")
        if short is not None and len(str(short)) > 3:
            return f"userShortCode {short!r} is longer than 3 characters"
        if not isinstance(row.get("userIsActive"), bool):
            return "userIsActive must be true or false"
    if entity == "Employee":
        if str(row["employmentType"]).strip() not in EMPLOYMENT_TYPES:
            return f"employmentType must be one of {sorted(EMPLOYMENT_TYPES)}"
        if row["employeeStatusUname"] not in EMPLOYEE_STATUSES:
            return f"employeeStatusUname must be one of {sorted(EMPLOYEE_STATUSES)}"
        if not (row.get("employeeTradeGuid") or row.get("employeeTradeCode")):
            return "employeeTradeGuid or employeeTradeCode is required"
    return None


def _count(entity: str, body: JSON, name: str) -> int:
    """A counter of an import result: absent or null is 0; anything but a whole number
    (a count in a string included) is a shape we do not understand."""
    value = body.get(name)
    if value is None:
        return 0
    if isinstance(value, str) and (text := value.strip()).isascii() and text.isdigit():
        return int(text)  # isascii: "¹" and "٣" are digits to isdigit, not to int
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParseError(f"{entity} push: {name} is not a count: {value!r:.40}", vendor="aimsio")
    return value


def parse_import_result(entity: str, keys: list[str], body: Any) -> list[PushOutcome]:
    """Map an ``IntegrationImportResult`` onto the rows sent, in order.

    Rows named in ``notices`` with severity ERROR are rejected with the notice text; the
    rest were accepted (created or edited, as the counters tell when they are unambiguous).
    """
    if not isinstance(body, dict) or body.get("dtype") != "IntegrationImportResult":
        raise ParseError(f"{entity} push: not an IntegrationImportResult", vendor="aimsio")
    rejected: dict[str, str] = {}
    notices = body.get("notices") or []
    if not isinstance(notices, list):
        raise ParseError(f"{entity} push: notices is not a list", vendor="aimsio")
    for notice in notices:
        if not isinstance(notice, dict):
            continue
        key = notice.get("entityKey")
        severity = str(notice.get("severity", "ERROR")).upper()
        if key is not None and severity == "ERROR":
            rejected.setdefault(str(key), str(notice.get("message") or "rejected by Aimsio"))
    created = _count(entity, body, "numberOfEntitiesCreated")
    edited = _count(entity, body, "numberOfEntitiesEdited")
    accepted_status: PushStatus = (
        "created" if edited == 0 and created else "edited" if created == 0 else "accepted"
    )
    out = []
    for key in keys:
        if key in rejected:
            out.append(PushOutcome(key, "rejected", rejected[key]))
        else:
            out.append(PushOutcome(key, accepted_status))
    not_imported = _count(entity, body, "numberOfEntitiesNotImportedDueToErrors")
    if not_imported > sum(1 for o in out if o.status == "rejected"):
        # The vendor rejected rows it did not name: we cannot tell which, so retry them all.
        return [PushOutcome(k, "retry", "unattributed rejection in import result") for k in keys]
    return out


# Entities whose GET-one embeds fields of others (a renamed customer changes a JobOrder's
# `jobClientName`, a user's name its Employee's `employeeLinkedUserName`) without moving
# their `updatedAt`: re-read in full weekly unless the config says otherwise.
WEEK_S = 7 * 86400.0
EMBEDS_OTHERS: dict[str, float] = {"JobOrder": WEEK_S, "Employee": WEEK_S}

ENTITIES = (
    "User",
    "Employee",
    "Equipment",
    "JobOrder",
    "Customer",
    "PriceBook",
    "NRB",
    "NonRecurringBillableItem",
    "PayrollPeriod",
    "Invoice",
    "Timecard",
)


class AimsioConnector(Connector):
    vendor = "aimsio"
    stream_specs = tuple(
        StreamSpec(e, KEY_FIELD, CURSOR_FIELD, full_every_s=EMBEDS_OTHERS.get(e)) for e in ENTITIES
    )
    push_entities = tuple(PUSH_ENTITIES)
    # "If the queue takes longer than 5 seconds to return the call, the request will
    # timeout": a call may wait 5 s in the queue, then be worked on (processing time is
    # not documented; we allow it our own timeout_s).
    vendor_queue_timeout_s = 5.0

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        entity = self.spec(ctx.stream).name
        stubs = await self.list_stubs(entity)
        staged = await ctx.cursors()
        todo = changed_stubs(stubs, staged)
        seen = frozenset(s.key for s in stubs)
        # The checkpoint advances only with the last batch, once the whole listing is
        # staged; earlier batches carry none (the engine keeps the previous one).
        watermark = max((s.updated_at for s in stubs), default=0)
        state: JSON = {"cursor": str(watermark), "listed": len(stubs)}
        if ctx.since is not None and not ctx.full:
            since_ms = epoch_ms(ctx.since)
            changed = {s.key for s in todo}
            todo = [s for s in stubs if rereads(s.updated_at, since_ms) or s.key in changed]
        unchanged = len(stubs) - len(todo)
        ctx.expect(len(todo))
        pending: list[Record] = []
        gone: list[str] = []
        async with contextlib.aclosing(self.fetch_records(entity, todo)) as records:
            async for record in records:
                if isinstance(record, str):
                    gone.append(record)  # vanished between listing and fetch
                    continue
                pending.append(record)
                ctx.advance(1)
                if len(pending) >= ctx.batch_size:
                    yield Batch(records=pending, deleted_keys=gone)
                    pending, gone = [], []
        yield Batch(
            records=pending,
            state=state,
            deleted_keys=gone,
            seen_keys=seen - set(gone),
            unchanged=unchanged,
        )

    async def list_stubs(self, entity: str) -> list[Stub]:
        """The GET-all listing: every object's id and ``updatedAt``."""
        listing = await self.client.request("GET", f"{API}/{entity}", expect_json=True)
        return parse_stubs(entity, listing.json())

    async def fetch_records(
        self, entity: str, todo: list[Stub]
    ) -> AsyncGenerator[Record | str, None]:
        """GET-one for each stub, ``max_parallel`` at a time; yields as results arrive
        (a key instead of a record when the object vanished since the listing).

        The pool only keeps the limiter fed (it never exceeds the vendor's parallel cap);
        the limiter alone decides the pace. Closing this generator (or cancelling its
        consumer) cancels and awaits every fetch still running.
        """
        fetches = bounded_fetch(
            todo, functools.partial(self._fetch_one, entity), self.settings.max_parallel
        )
        async with contextlib.aclosing(fetches):
            async for item in fetches:
                yield item

    async def _fetch_one(self, entity: str, stub: Stub) -> Record | str:
        try:
            resp = await self.client.request("GET", f"{API}/{entity}/{stub.key}", expect_json=True)
        except RequestRejected as exc:
            if exc.status == 404:
                return stub.key
            raise
        payload = resp.json()
        if not isinstance(payload, dict):
            raise ParseError(f"{entity}/{stub.key} is not a JSON object", vendor="aimsio")
        updated = payload.get("updatedAt")
        cursor = str(updated) if isinstance(updated, int) else str(stub.updated_at)
        return Record(entity, stub.key, payload, cursor)

    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        return validate_row(entity, payload)

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        if entity not in PUSH_ENTITIES:
            return None
        value = payload.get(PUSH_ENTITIES[entity][1])
        return None if value in (None, "") else str(value)

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        list_key, _ = PUSH_ENTITIES[entity]
        resp = await self.client.request(
            "POST",
            f"{API}/{entity}",
            json={list_key: [payload for _, payload in rows]},
            expect_json=True,
        )
        return parse_import_result(entity, [key for key, _ in rows], resp.json())
