"""iMIS (ASI REST API): token auth, filtered incremental reads, concurrent offset paging,
restore windows, IQA queries as configured streams, and Party/Activity push.

Pull, per data contract (``GET /api/{Entity}?limit=&offset=&<filters>``):
1. Where to start: the saved cursor (UTC) minus ``lookback_s``, via ``checkpoint.read_from``;
   none on a first or ``--full`` run.
2. ``{Entity}?UpdatedOn=ge:<site-local start>&orderby=UpdatedOn``: the first page gives
   ``TotalCount``, the other offsets are fetched concurrently (the vendor limiter is the
   brake) and committed in order; rows are deduplicated by key and their cursor checked.
3. The docs flag the ``updatedOn`` filter as unreliable, so an incremental run then walks
   ``orderby=UpdatedOn desc`` *without* that filter until it passes the start, and stages
   what the filter missed (``verify``).
4. Deletes: Party from ``PartyDeleteLog`` (``DeletedOn`` since the start); a complete pass
   (no start, no configured filter) soft-deletes what it did not see, by run marks.
5. The checkpoint (newest cursor seen, never past now) rides only on the last batch.

Timestamps carry no offset: they are site-local, in ``options.time_zone`` (IANA).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.connectors.base import Connector, PushOutcome, StreamContext, StreamSpec
from service.connectors.checkpoint import advance, read_from
from service.connectors.fetch import bounded_fetch
from service.connectors.imis_push import PUSH, typed_body, validation_message
from service.connectors.imis_query import (
    cursor_text,
    local_to_utc,
    lookback,
    page_limit,
    parse_cursor,
    parse_filter,
    parse_page,
    unwrap,
    utc_to_local,
    zone,
)
from service.connectors.paging import Page, fetch_in_order, remaining_offsets
from service.errors import ConfigError, ParseError, RequestRejected, RetriableError
from service.models import JSON, Batch, Record

API = "/api"
MAX_PAGES = 100_000  # a bound on any walk; 50 M rows at the cap of 500

# Stream → (key field, modified-date field of the payload, its filter/sort property).
# Activity has no modification stamp (TRANSACTION_DATE is when it happened): read in full.
CONTRACTS: dict[str, tuple[str, str | None, str | None]] = {
    "Party": ("PartyId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
    "Activity": ("Properties.SEQN", None, None),
    "Event": ("EventId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
    "EventRegistration": ("EventRegistrationId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
    "GroupMember": ("GroupMemberId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
    "Item": ("ItemId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
    "Invoice": ("InvoiceId", "UpdateInformation.UpdatedOn", "UpdatedOn"),
}
DELETE_LOGS = {"Party": "PartyDeleteLog"}
DAY_S = 86_400.0


def _filters(v: dict[str, Any]) -> dict[str, str]:
    return dict(parse_filter(k, raw) for k, raw in v.items())


class EntityOptions(BaseModel):
    """Options of a declared stream: ``filters = {lastName = "startsWith:A"}``."""

    model_config = ConfigDict(extra="forbid")
    filters: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("filters")
    @classmethod
    def _check(cls, v: dict[str, Any]) -> dict[str, Any]:
        _filters(v)
        return v


class IqaOptions(BaseModel):
    """An IQA query as a stream: ``query = "$/Path/To/Query"``, ``key = "ID"`` (a column),
    optional ``parameters`` (positional, ``parameter=`` in order) and ``filters``."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=3, pattern=r"^\$/[^&=#?\r\n]+$")
    key: str = Field(min_length=1)
    cursor: str | None = None  # a column holding a site-local modified date, if any
    parameters: list[str] = Field(default_factory=list)
    filters: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("filters")
    @classmethod
    def _check(cls, v: dict[str, Any]) -> dict[str, Any]:
        _filters(v)
        return v

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: list[str]) -> list[str]:
        for p in v:
            if any(c in p for c in "&=#\r\n"):
                raise ValueError("an IQA parameter may not contain '&', '=', '#' or newlines")
        return v


class ImisConnector(Connector):
    vendor = "imis"
    # Only Party deletes are journaled (PartyDeleteLog): the other dated contracts learn
    # of deletions from a daily complete pass (config `full_every` overrides).
    stream_specs = tuple(
        StreamSpec(
            name,
            key,
            cursor,
            full_every_s=DAY_S if cursor is not None and name not in DELETE_LOGS else None,
        )
        for name, (key, cursor, _) in CONTRACTS.items()
    )
    push_entities = tuple(PUSH)
    stream_options = IqaOptions
    auth_defaults: ClassVar[dict[str, Any]] = {"token_path": "/token"}
    # "Database restore takes place at 6:00 AM and 6:00 PM GMT and takes approximately
    # 5 minutes": a minute's margin either side.
    default_blackouts = ("05:59-06:07", "17:59-18:07")

    @classmethod
    def check_stream(cls, stream: str, options: dict[str, Any]) -> BaseModel | None:
        if cls.declared(stream) is not None:
            EntityOptions.model_validate(options)
            return None
        return super().check_stream(stream, options)

    @classmethod
    def configured_spec(cls, stream: str, options: BaseModel) -> StreamSpec:
        assert isinstance(options, IqaOptions)
        return StreamSpec(stream, options.key, options.cursor, description=options.query)

    # --- settings -------------------------------------------------------------------------
    @property
    def page_size(self) -> int:
        return int(self.settings.options.get("page_size", 500))

    @property
    def lookback_s(self) -> float:
        return float(self.settings.options.get("lookback_s", 3600))

    @property
    def verify(self) -> bool:
        return bool(self.settings.options.get("verify", True))

    def tz(self) -> Any:
        try:
            return zone(str(self.settings.options.get("time_zone", "UTC")))
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"vendors.{self.connection}.options.time_zone") from exc

    # --- pull -----------------------------------------------------------------------------
    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        spec = self.spec(ctx.stream)
        declared = self.declared(ctx.stream) is not None
        tz = self.tz()
        params: list[tuple[str, str]] = []
        if declared:
            path = f"{API}/{spec.name}"
            opts = EntityOptions.model_validate(ctx.options)
            sort_prop = CONTRACTS[spec.name][2]
        else:
            path = f"{API}/iqa"
            iqa = IqaOptions.model_validate(ctx.options)
            opts = EntityOptions(filters=iqa.filters)
            params.append(("QueryName", iqa.query))
            params.extend(("parameter", p) for p in iqa.parameters)
            sort_prop = iqa.cursor
        params.extend(_filters(opts.filters).items())
        saved = parse_cursor((ctx.state or {}).get("cursor"))
        start = None
        if sort_prop is not None:
            start = read_from(
                saved, lookback=lookback(self.lookback_s), since=ctx.since, full=ctx.full
            )
        query = list(params)
        if start is not None and sort_prop is not None:
            query.append((sort_prop, f"ge:{utc_to_local(start, tz)}"))
        if sort_prop is not None:
            query.append(("orderby", sort_prop))
        complete = start is None and not opts.filters

        def cursor_of(payload: JSON) -> datetime | None:
            raw = spec.cursor_of(payload)
            return None if raw is None else local_to_utc(raw, tz)

        seen: set[str] = set()
        newest: datetime | None = None

        def take(items: list[JSON], *, skip_seen: bool = True) -> list[Record]:
            nonlocal newest
            out = []
            for item in items:
                payload = unwrap(item)
                key = spec.key_of(payload)
                if key is None:
                    raise ParseError(f"{spec.name} row without {spec.key_field}", vendor="imis")
                if skip_seen and key in seen:
                    continue  # offset paging over a changing set repeats rows
                when = cursor_of(payload)
                if start is not None and when is not None and when < start:
                    continue  # the filter let through what it should not have
                seen.add(key)
                newest = advance(newest, when)
                out.append(Record(ctx.stream, key, payload, cursor_text(when) if when else None))
            return out

        # Pages gather into batches of ``batch_size``: a transaction per 100-row page cost
        # more in commits and lease renewals than the rows' own writes.
        pending: list[Record] = []
        async with contextlib.aclosing(self.walk(path, query)) as pages:
            async for page in pages:
                records = take(page.items)
                ctx.advance(len(records))
                pending.extend(records)
                if len(pending) >= ctx.batch_size:
                    yield Batch(pending, marks=() if complete else None)
                    pending = []
        if pending:
            yield Batch(pending, marks=() if complete else None)
        if start is not None and sort_prop is not None and self.verify:
            async for records in self.verify_walk(path, params, sort_prop, start, take):
                yield Batch(records)
        deleted: list[str] = []
        if start is not None and spec.name in DELETE_LOGS and declared:
            deleted = await self.deleted_since(DELETE_LOGS[spec.name], start, tz)
        cursor = advance(saved, min(newest, ctx.now()) if newest is not None else None)
        state: JSON | None = {"cursor": cursor_text(cursor)} if cursor is not None else None
        if state is None and sort_prop is None:
            state = {"full_pass": True}
        yield Batch(
            [], state=state, deleted_keys=deleted, marks=() if complete else None, complete=complete
        )

    async def get_page(self, path: str, query: list[tuple[str, str]], offset: int) -> Any:
        params = [*query, ("limit", str(self.page_size)), ("offset", str(offset))]
        resp = await self.client.request("GET", path, params=params, expect_json=True)
        return resp.json()

    async def walk(
        self, path: str, query: list[tuple[str, str]]
    ) -> AsyncGenerator[Page[JSON], None]:
        """Offset 0; then, with ``TotalCount``, every other offset concurrently, yielded in
        order; without it, ``NextOffset`` while ``HasNext``."""
        first = await self.get_page(path, query, 0)
        head = parse_page(first, path)
        yield head
        limit = page_limit(first, self.page_size)
        if head.total is not None and head.next is not None:
            offsets = remaining_offsets(head.total, limit, start=0)[:MAX_PAGES]
            fetch = functools.partial(self._page_at, path, query)
            async with contextlib.aclosing(
                fetch_in_order(offsets, fetch, max_parallel=self.settings.max_parallel)
            ) as pages:
                async for page in pages:
                    yield page
            return
        page, pages_read, offset = head, 1, 0
        while page.next is not None and pages_read < MAX_PAGES:
            if int(page.next) <= offset:  # a link back: the walk would never end
                raise ParseError(f"{path}: pagination loop at NextOffset {page.next}")
            offset = int(page.next)
            page = parse_page(await self.get_page(path, query, offset), path)
            pages_read += 1
            yield page

    async def _page_at(self, path: str, query: list[tuple[str, str]], offset: int) -> Page[JSON]:
        return parse_page(await self.get_page(path, query, offset), path)

    async def verify_walk(
        self,
        path: str,
        params: list[tuple[str, str]],
        sort_prop: str,
        start: datetime,
        take: Callable[[list[JSON]], list[Record]],
    ) -> AsyncIterator[list[Record]]:
        """Newest first without the date filter, until a row older than ``start``: what
        the filter missed. Sequential (it usually ends on the first page)."""
        query = [*params, ("orderby", f"{sort_prop} desc")]
        offset = 0
        tz = self.tz()
        for _ in range(MAX_PAGES):
            body = await self.get_page(path, query, offset)
            page = parse_page(body, path)
            records = take(page.items)
            if records:
                yield records
            oldest = page.items[-1] if page.items else None
            raw = field_of(oldest, sort_prop) if oldest is not None else None
            if page.next is None or raw is None or local_to_utc(str(raw), tz) < start:
                return
            if int(page.next) <= offset:  # a link back: the walk would never end
                raise ParseError(f"{path}: pagination loop at NextOffset {page.next}")
            offset = int(page.next)

    async def deleted_since(self, log: str, start: datetime, tz: Any) -> list[str]:
        query = [("DeletedOn", f"ge:{utc_to_local(start, tz)}"), ("orderby", "DeletedOn")]
        keys: list[str] = []
        async with contextlib.aclosing(self.walk(f"{API}/{log}", query)) as pages:
            async for page in pages:
                keys.extend(str(r["PartyId"]) for r in page.items if r.get("PartyId"))
        return list(dict.fromkeys(keys))

    # --- push -----------------------------------------------------------------------------
    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        if entity not in PUSH:
            return f"iMIS does not accept pushes of {entity}"
        if not isinstance(payload, dict) or not payload:
            return "the row must be a non-empty JSON object"
        return None

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        if entity not in PUSH:
            return None
        value = payload.get(PUSH[entity][1])
        if value is None and isinstance(payload.get("Properties"), dict):
            value = payload["Properties"].get(PUSH[entity][1])
        return None if value in (None, "") else str(value)

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        results: dict[str, PushOutcome] = {}
        sends = bounded_fetch(
            rows, functools.partial(self._push_one, entity), self.settings.max_parallel
        )
        async with contextlib.aclosing(sends) as outcomes:
            async for outcome in outcomes:
                results[outcome.record_key] = outcome
        return [results[key] for key, _ in rows]

    async def _push_one(self, entity: str, row: tuple[str, JSON]) -> PushOutcome:
        key, payload = row
        body = typed_body(entity, payload)
        ident = self.push_key(entity, payload)
        method, path = ("PUT", f"{API}/{entity}/{ident}") if ident else ("POST", f"{API}/{entity}")
        try:
            resp = await self.client.request(
                method, path, json=body, expected=(200, 201, 202, 400, 422), expect_json=False
            )
        except RetriableError as exc:
            return PushOutcome(key, "retry", str(exc))
        except RequestRejected as exc:
            return PushOutcome(key, "rejected", f"HTTP {exc.status}")
        if resp.status in (400, 422):
            return PushOutcome(key, "rejected", validation_message(resp.text()))
        return PushOutcome(key, "edited" if method == "PUT" else "created")


def field_of(payload: JSON, prop: str) -> Any:
    """A sort property's value in a raw row: top level or under ``UpdateInformation``."""
    if prop in payload:
        return payload[prop]
    info = payload.get("UpdateInformation")
    return info.get(prop) if isinstance(info, dict) else None
