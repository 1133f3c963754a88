"""The iMIS entity resources: ``GET|POST /api/{Entity}``, ``GET|PUT|DELETE /api/{Entity}/{id}``.

A :class:`View` is an entity as one URL serves it; :class:`EntityApi` lists (filters, paging,
``orderby`` and the ``flaky_updated_on`` fault), reads, validates and writes records, and
journals every write. Errors end the request as :class:`ImisError`. See
``sandbox/imis/sim.py`` for the routes' documented behaviour and the settings they read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sandbox.data import Record
from sandbox.faults import Faults
from sandbox.imis.filter import (
    Filter,
    date_only,
    paged_result,
    parse_filter,
    parse_orderby,
    parse_paging,
)
from sandbox.imis.mutate import Journal, diff
from sandbox.imis.records import Stamp, mix
from sandbox.imis.store import Table

RESERVED = frozenset({"limit", "offset", "orderby"})
_CORE = "Asi.Soa.Core.DataContracts."
_FLAKY_SALT = 0xF1A4


class ImisError(Exception):
    """Ends a request with an iMIS-shaped error."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {"Message": message}
        self.headers: dict[str, str] = {}


@dataclass(frozen=True)
class View:
    """An entity as one URL serves it (Person is a view of the Party table)."""

    name: str
    table: Table
    item_type: str
    list_type: str
    base: tuple[Filter, ...] = ()
    admits: Callable[[Record], bool] = field(default=lambda _record: True)

    def render(self, record: Record) -> Record:
        if record.get("$type") == self.item_type:
            return record
        return {**record, "$type": self.item_type}


class EntityHost(Protocol):
    """What the entity handlers use of their simulator (an :class:`~sandbox.imis.sim.ImisSim`)."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def views(self) -> Mapping[str, View]: ...

    @property
    def journal(self) -> Journal: ...

    def now_ms(self) -> int: ...

    def stamp(self, user: str) -> Stamp: ...


class EntityApi:
    """The handlers behind ``/api/{Entity}`` and ``/api/{Entity}/{id}``."""

    def __init__(self, sim: EntityHost) -> None:
        self.sim = sim

    def _view(self, request: web.Request) -> View:
        view = self.sim.views.get(request.match_info["entity"].casefold())
        if view is None:
            raise ImisError(
                404, f"No HTTP resource was found that matches the request URI '{request.url}'."
            )
        return view

    def _not_allowed(self, request: web.Request, view: View) -> ImisError:
        exc = ImisError(
            405, f"The requested resource does not support http method '{request.method}'."
        )
        exc.headers["Allow"] = ", ".join(sorted(view.table.spec.methods))
        return exc

    async def on_collection(self, request: web.Request, user: str) -> web.Response:
        view = self._view(request)
        if request.method == "GET":
            return self._list(request, view)
        if request.method == "POST" and "POST" in view.table.spec.methods:
            return await self._create(request, view, user)
        raise self._not_allowed(request, view)

    async def on_item(self, request: web.Request, user: str) -> web.Response:
        view = self._view(request)
        ident = request.match_info["id"]
        methods = view.table.spec.methods
        if request.method == "GET":
            return web.json_response(view.render(self._find(view, ident)[1]))
        if request.method == "PUT" and "PUT" in methods:
            return await self._replace(request, view, ident, user)
        if request.method == "DELETE" and "DELETE" in methods:
            return self._remove(view, ident, user)
        raise self._not_allowed(request, view)

    def _list(self, request: web.Request, view: View) -> web.Response:
        s = self.sim.settings
        query = request.query
        reserved: dict[str, str] = {}
        filters = list(view.base)
        for key, raw in query.items():
            if key.casefold() in RESERVED:
                reserved.setdefault(key.casefold(), raw)
            else:
                filters.append(parse_filter(key, raw))
        limit, offset = parse_paging(
            reserved.get("limit"), reserved.get("offset"), s["default_limit"], s["max_limit"]
        )
        order = parse_orderby(reserved["orderby"]) if reserved.get("orderby") else None
        table = view.table
        if not filters and order is None:
            total, indices = len(table), table.live_slice(offset, limit)
        else:
            filters, post, extra = self._flaky(table, filters)
            matched = table.query(filters, order, post=post, cache_extra=extra)
            total, indices = len(matched), matched[offset : offset + limit]
        items = [view.render(r) for r in map(table.get, indices) if r is not None]
        return web.json_response(paged_result(view.list_type, items, offset, limit, total))

    def _flaky(
        self, table: Table, filters: list[Filter]
    ) -> tuple[list[Filter], Callable[[list[int]], list[int]] | None, Hashable]:
        """Apply the ``flaky_updated_on`` switch to a query on ``UpdatedOn``."""
        mode = self.sim.faults.extra.get("flaky_updated_on")
        key = table.spec.updated_key
        if not mode or key is None:
            return filters, None, None
        target = table.spec.by_key[key]
        if not any(table.field_for(f.prop) is target for f in filters):
            return filters, None, None
        if mode == "date_only":
            return (
                [date_only(f) if table.field_for(f.prop) is target else f for f in filters],
                None,
                mode,
            )
        now_ms = self.sim.now_ms()
        window_ms = float(self.sim.settings["flaky_window_s"]) * 1000
        cutoff = float(self.sim.settings["flaky_drop_fraction"]) * 1000

        def hide_recent(matched: list[int]) -> list[int]:
            kept = []
            for i in matched:
                updated = table.value(i, target.key)
                recent = updated is not None and now_ms - updated < window_ms
                if not (recent and mix(_FLAKY_SALT ^ updated, i) % 1000 < cutoff):
                    kept.append(i)
            return kept

        return filters, hide_recent, ("drop", now_ms)

    def _find(self, view: View, ident: str) -> tuple[int, Record]:
        index = view.table.spec.index_of(ident)
        record = view.table.get(index)
        if index is None or record is None or not view.admits(record):
            raise ImisError(404, f"{view.name} '{ident}' was not found.")
        return index, record

    async def _body(self, request: web.Request, view: View) -> Record:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ImisError(400, "The request body is not valid JSON.") from exc
        if not isinstance(body, dict):
            raise ImisError(400, "The request body must be a JSON object.")
        type_name = body.get("$type")
        if not type_name:
            raise ImisError(400, f"$type is required (e.g. '{view.item_type}').")
        if type_name not in view.table.spec.accepts and type_name != view.item_type:
            raise ImisError(400, f"$type '{type_name}' is not valid for {view.name}.")
        errors = view.table.spec.validate(body)
        if errors:
            raise self._invalid(errors)
        return body

    def _invalid(self, errors: list[str]) -> ImisError:
        results = [
            {"$type": _CORE + "ValidationResultData, Asi.Contracts", "Message": m} for m in errors
        ]
        message = "Validation failed. " + " ".join(errors)
        body: dict[str, Any] = {
            "Message": message,
            "ValidationResults": {
                "$type": _CORE + "ValidationResultsData, Asi.Contracts",
                "Errors": {
                    "$type": _CORE + "ValidationResultDataCollection, Asi.Contracts",
                    "$values": results,
                },
            },
        }
        return ImisError(int(self.sim.settings["validation_status"]), message, body)

    async def _create(self, request: web.Request, view: View, user: str) -> web.Response:
        body = await self._body(request, view)
        spec, stamp = view.table.spec, self.sim.stamp(user.upper())
        index = view.table.add(lambda i: spec.prepare(body, i, None, stamp))
        record = view.table.get(index)
        assert record is not None
        self.sim.journal.changed(
            spec.name, spec.id_of(index), "Add", diff({}, spec.flatten(record)), stamp
        )
        return web.json_response(view.render(record), status=201)

    async def _replace(
        self, request: web.Request, view: View, ident: str, user: str
    ) -> web.Response:
        index, existing = self._find(view, ident)
        body = await self._body(request, view)
        spec, stamp = view.table.spec, self.sim.stamp(user.upper())
        body_id = spec.body_id(body)
        if body_id not in (None, "") and str(body_id).casefold() != spec.id_of(index).casefold():
            raise ImisError(
                400, f"The id in the body ({body_id}) does not match the URL ({ident})."
            )
        record = spec.prepare(body, index, existing, stamp)
        view.table.put(index, record)
        changes = diff(spec.flatten(existing), spec.flatten(record))
        self.sim.journal.changed(spec.name, spec.id_of(index), "Change", changes, stamp)
        return web.json_response(view.render(record))

    def _remove(self, view: View, ident: str, user: str) -> web.Response:
        index, _ = self._find(view, ident)
        record = view.table.delete(index)
        assert record is not None
        self.sim.journal.deleted(view.table.spec.name, record, self.sim.stamp(user.upper()))
        return web.Response(status=200)
