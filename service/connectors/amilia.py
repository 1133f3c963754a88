"""Amilia (v3, per organisation): page-following at the vendor's 100 calls/s, no 429 sought.

Walk of a v3 list (``{"Items", "Paging": {"TotalCount", "Next"}}``), ordered by id:
1. The first page tells ``TotalCount``; the remaining pages are asked for directly
   (``page=N``) concurrently and yielded in order. The vendor limiter (100/s, shared by
   every Amilia stream of the process) is the only brake.
2. Pages shift when records are added or removed during the walk. Every page carries its
   own ``TotalCount``: if one differs from the first, or ids are not ascending, the walk
   was not stable and the list is read again, keeping only ids not yet yielded, until a
   pass sees one stable total (bounded). A record can so never go missing.
3. A list without a total (or an endpoint configured as v2: ``Page.NextId``/``idStart``,
   ``limit`` 5–100) is followed by its next links, one page after another.

Incremental: registrations and access scans by inclusive date windows re-read with an
overlap; everything else a complete walk whose unchanged rows the engine does not
rewrite (payload hash) and whose missing ids it soft-deletes (``marks`` + ``complete``).
A windowed pass deletes nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.config import VendorSettings
from service.connectors.base import Connector, PushOutcome, StreamContext, StreamSpec
from service.connectors.checkpoint import read_from
from service.connectors.paging import Page, fetch_in_order, remaining_pages
from service.errors import ConfigError, ParseError, RequestRejected
from service.http import VendorClient
from service.models import JSON, Batch, Record

VENDOR = "amilia"
T = TypeVar("T")
MAX_PASSES = 5  # re-reads of a list that kept shifting; then the run fails (nothing lost)


class AmiliaOptions(BaseModel):
    """``[vendors.amilia] options``: where the organisation lives and how lists page."""

    model_config = ConfigDict(extra="forbid")

    # An id or slug: it is a URL path segment, so nothing that could end or extend it.
    org: str = Field("8008", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    language: Literal["en", "fr"] = "en"
    # The X-Amilia-Origin header (partner email or org name): no CR/LF to split it.
    origin: str = Field("vendorsync", pattern=r"^[^\x00-\x1f\x7f]{1,200}$")
    per_page: int = Field(200, ge=1, le=1000)
    # The seed: "you can always use a limit query string parameter to control the page size".
    page_param: Literal["perPage", "limit"] = "perPage"
    v2_limit: int = Field(100, ge=5, le=100)
    v2_streams: list[str] = Field(default_factory=lambda: ["persons"])
    overlap_days: int = Field(3, ge=0, le=366)
    # The first date window of a stream without checkpoint (registrations, access scans).
    history_start: date = date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class ListDef:
    """One list endpoint under ``org/{org}/``; ``window`` names its inclusive date params."""

    path: str
    key: str
    cursor: str | None = None
    window: tuple[str, str] | None = None
    params: tuple[tuple[str, str], ...] = ()


LISTS: dict[str, ListDef] = {
    "accounts": ListDef("accounts", "Id", params=(("showArchived", "true"),)),
    "persons": ListDef("persons", "Id"),  # v2 only (no v3 person list)
    "programs": ListDef(
        "programs", "Id", params=(("showHidden", "true"), ("showArchived", "true"))
    ),
    "activities": ListDef(
        "programs/{program}/activities",
        "Id",
        params=(("showHidden", "true"), ("showCancelled", "true")),
    ),
    "registrations": ListDef(
        "registrations",
        "RegistrationId",
        "DateCreated",
        ("from", "to"),
        (("showEnded", "true"),),
    ),
    "accessscans": ListDef("accessscans", "Id", "ScanDate", ("start", "end")),
}

# Push entity → (method, path, key field of the stored object).
PUSH: dict[str, tuple[str, str]] = {"accounts": ("POST", "accounts"), "persons": ("PUT", "persons")}


# --- pure parsing ------------------------------------------------------------------------------
def parse_v3(body: Any, *, what: str = "list") -> Page[JSON]:
    """A v3 list page (``Items`` + ``Paging``) or a bare array (a whole list, no paging)."""
    if isinstance(body, list):
        return Page(_objects(body, what))
    if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
        raise ParseError(f"{what}: not an Items/Paging page", vendor=VENDOR, stream=what)
    paging = body.get("Paging")
    paging = {} if paging is None else paging
    if not isinstance(paging, dict):
        raise ParseError(f"{what}: Paging is not an object", vendor=VENDOR, stream=what)
    total = paging.get("TotalCount")
    nxt = paging.get("Next")
    return Page(
        _objects(body["Items"], what),
        next=nxt if isinstance(nxt, str) and nxt else None,
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
    )


def parse_v2(body: Any, *, what: str = "list") -> Page[JSON]:
    """A v2 page (``Items`` + ``Page: {NextId, Next}``)."""
    if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
        raise ParseError(f"{what}: not an Items/Page page", vendor=VENDOR, stream=what)
    page = body.get("Page") or {}
    nxt = page.get("Next") if isinstance(page, dict) else None
    return Page(_objects(body["Items"], what), next=nxt if isinstance(nxt, str) and nxt else None)


def _objects(items: list[Any], what: str) -> list[JSON]:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError(f"{what}: item {i} is not an object", vendor=VENDOR, stream=what)
    return items


def page_ids(items: list[JSON], key: str, what: str) -> list[int]:
    """The integer ids of a page's items (every list is ordered by them)."""
    ids = [item.get(key) for item in items]
    if not all(type(i) is int for i in ids):
        raise ParseError(f"{what}: item without an integer {key}", vendor=VENDOR, stream=what)
    return ids  # type: ignore[return-value]


def unstable(pages: Iterable[Page[JSON]], total: int | None, key: str, what: str) -> bool:
    """Whether a walk saw its list move: a page with another total, or a page starting at
    or before the id its predecessor ended with (an insertion shifted items forward, so a
    removal elsewhere may have hidden one). Lists are ordered by id within a page."""
    last = None
    for page in pages:
        if page.total != total:
            return True
        if page.items:
            ids = page_ids([page.items[0], page.items[-1]], key, what)
            if last is not None and ids[0] <= last:
                return True
            last = ids[-1]
    return False


def _ends(page: Page[JSON]) -> Page[JSON]:
    """What ``unstable`` needs of a page (its total, first and last item), so a walk does
    not hold every page it read."""
    return Page(page.items[:1] + page.items[-1:], next=page.next, total=page.total)


def window_start(
    checkpoint: str | None, *, overlap_days: int, since: datetime | None, full: bool, first: date
) -> date:
    """The first day of a date-window read (inclusive): the saved day minus the overlap."""
    saved = datetime.fromisoformat(checkpoint[:10]) if checkpoint else None
    when = since.replace(tzinfo=None) if since is not None else None
    start = read_from(saved, lookback=timedelta(days=overlap_days), since=when, full=full)
    day = None if start is None else start.date()
    return first if day is None or day < first else day


def validate_row(entity: str, row: JSON) -> str | None:
    if entity == "accounts":
        owners = row.get("Owners")
        if not isinstance(owners, list) or not owners:
            return "Owners must be a non-empty list of persons"
        if any(not isinstance(o, dict) or not o.get("Email") for o in owners):
            return "every owner needs an Email"
        return None
    if entity == "persons":
        if not isinstance(row.get("Id"), int):
            return "Id (the Amilia person id) is required"
        return None
    return f"Amilia does not accept pushes of {entity}"


# --- the connector -------------------------------------------------------------------------------
class AmiliaConnector(Connector):
    vendor = VENDOR
    stream_specs = tuple(StreamSpec(name, d.key, d.cursor) for name, d in LISTS.items())
    push_entities = tuple(PUSH)
    auth_defaults: ClassVar[dict[str, Any]] = {
        "token_path": "/api/v3/authenticate",
        "token_field": "Token",
    }
    # Amilia counts 100 calls/s per client IP: every organisation read from one egress
    # address shares that budget (``limit_group`` splits them when egress addresses differ).
    default_limit_group = "amilia"
    connection_options = AmiliaOptions

    def __init__(self, settings: VendorSettings, client: VendorClient) -> None:
        super().__init__(settings, client)
        try:
            self.options = AmiliaOptions.model_validate(settings.options)
        except ValidationError as exc:
            raise ConfigError(
                str(exc).splitlines()[0], key=f"vendors.{client.vendor}.options"
            ) from exc
        client.default_headers["X-Amilia-Origin"] = self.options.origin

    def _root(self, version: str) -> str:
        o = self.options
        return f"/api/{version}/{o.language}/org/{o.org}"

    def is_v2(self, stream: str) -> bool:
        return stream.lower() in {s.lower() for s in self.options.v2_streams}

    async def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        name = self.spec(ctx.stream).name
        spec = LISTS[name]
        if spec.window is not None:
            body = self._windowed(ctx, name, spec)
        elif name == "activities":
            body = self._activities(ctx)
        else:
            listed = (ctx.state or {}).get("listed")
            expected = listed if type(listed) is int and listed > 0 else None
            walk = self._walk(name, spec.path, spec, {}, expected=expected)
            body = self._complete(ctx, name, walk)
        async with contextlib.aclosing(body) as batches:
            async for batch in batches:
                yield batch

    # A complete pass: every batch marks what it saw, the last one says it was complete.
    async def _complete(
        self, ctx: StreamContext, stream: str, pages: AsyncGenerator[list[JSON], None]
    ) -> AsyncGenerator[Batch, None]:
        key = LISTS[stream].key
        pending: list[Record] = []
        count = 0
        async with contextlib.aclosing(pages) as walk:
            async for items in walk:
                pending.extend(Record(stream, str(item[key]), item) for item in items)
                count += len(items)
                ctx.advance(len(items))
                if len(pending) >= ctx.batch_size:
                    yield Batch(records=pending, marks=())
                    pending = []
        yield Batch(records=pending, marks=(), complete=True, state={"listed": count})

    async def _activities(self, ctx: StreamContext) -> AsyncGenerator[Batch, None]:
        programs = self._walk("programs", "programs", LISTS["programs"], {})
        ids = [item["Id"] async for items in programs for item in items]

        async def every() -> AsyncGenerator[list[JSON], None]:
            for program in ids:
                path = LISTS["activities"].path.format(program=program)
                async for items in self._walk("activities", path, LISTS["activities"], {}):
                    yield items

        async with contextlib.aclosing(self._complete(ctx, "activities", every())) as batches:
            async for batch in batches:
                yield batch

    async def _windowed(
        self, ctx: StreamContext, stream: str, spec: ListDef
    ) -> AsyncGenerator[Batch, None]:
        assert spec.window is not None
        assert spec.cursor is not None
        saved = (ctx.state or {}).get("cursor")
        full = ctx.full or not saved
        start = window_start(
            saved if isinstance(saved, str) else None,
            overlap_days=self.options.overlap_days,
            since=ctx.since,
            full=ctx.full,
            first=self.options.history_start,
        )
        # Only the lower bound: an upper one by our clock could cut off the vendor's today.
        params = {spec.window[0]: start.isoformat()}
        newest: str | None = saved if isinstance(saved, str) else None
        pending: list[Record] = []
        count = 0
        async with contextlib.aclosing(self._walk(stream, spec.path, spec, params)) as walk:
            async for items in walk:
                for item in items:
                    cursor = item.get(spec.cursor)
                    cursor = str(cursor) if cursor is not None else None
                    newest = max(newest, cursor) if newest and cursor else newest or cursor
                    pending.append(Record(stream, str(item[spec.key]), item, cursor))
                count += len(items)
                ctx.advance(len(items))
                if len(pending) >= ctx.batch_size:
                    yield Batch(records=pending, marks=() if full else None)
                    pending = []
        state = {"cursor": newest, "window_start": start.isoformat(), "listed": count}
        if full:  # the window covered all history: a complete pass
            yield Batch(records=pending, marks=(), complete=True, state=state)
        else:
            yield Batch(records=pending, state=state)

    # --- walks: each yields the items of one page at a time, in id order ----------------------
    def pages(
        self, stream: str, params: dict[str, str] | None = None, *, expected: int | None = None
    ) -> AsyncGenerator[list[JSON], None]:
        """Every item of a top-level list stream, page by page (benchmarks, tools)."""
        spec = LISTS[self.spec(stream).name]
        return self._walk(stream, spec.path, spec, params or {}, expected=expected)

    def _walk(
        self,
        stream: str,
        path: str,
        spec: ListDef,
        params: dict[str, str],
        *,
        expected: int | None = None,
    ) -> AsyncGenerator[list[JSON], None]:
        query = {**dict(spec.params), **params}
        if self.is_v2(stream):
            query["limit"] = str(self.options.v2_limit)
            return self._follow(f"{self._root('v2')}/{path}", query, parse_v2, stream)
        return self._walk_v3(f"{self._root('v3')}/{path}", query, spec.key, stream, expected)

    async def _get(self, url: str, params: dict[str, str] | None, parse: Callable[[Any], T]) -> T:
        """One page, parsed (a body that is not JSON is retried by the client)."""
        resp = await self.client.request("GET", url, params=params, expect_json=True)
        return parse(resp.json())

    async def _follow(
        self,
        url: str,
        query: dict[str, str],
        parse: Callable[..., Page[JSON]],
        what: str,
    ) -> AsyncGenerator[list[JSON], None]:
        """Next links one after another (v2, or a v3 list without a total)."""
        read = functools.partial(parse, what=what)
        seen: set[str] = set()
        page = await self._get(url, query, read)
        while True:
            yield page.items
            if page.next is None:
                return
            if page.next in seen:
                raise ParseError(f"{what}: pagination loop at {page.next}", vendor=VENDOR)
            seen.add(page.next)
            page = await self._get(page.next, None, read)

    async def _walk_v3(
        self, url: str, query: dict[str, str], key: str, what: str, expected: int | None = None
    ) -> AsyncGenerator[list[JSON], None]:
        """Head page, then the rest concurrently in order; re-read while the list shifts.

        ``expected`` (the count the stream's last complete pass listed) lets the first pass
        ask for the pages it will likely need together with the head instead of after it:
        the limiter then never idles for a round trip. Once the head tells the real total,
        guessed pages past its end are answered empty without a request (the few already
        on their way are read and yield nothing).
        """
        size = self.options.per_page
        query = {**query, self.options.page_param: str(size)}
        yielded: set[int] = set()
        last_page: int | None = None  # known once a head page told the total
        skipped: Page[JSON] = Page([])  # a guessed page past the end, not requested
        # A page's items are yielded and let go; `pages` keeps what the stability check
        # needs (first and last item), so a walk holds one page at a time, not the list.

        def read(body: Any) -> tuple[Page[JSON], list[int]]:
            page = parse_v3(body, what=what)
            return page, page_ids(page.items, key, what)

        async def fetch(n: int) -> tuple[Page[JSON], list[int]]:
            nonlocal last_page
            if last_page is not None and n > last_page:
                return skipped, []
            page, ids = await self._get(url, {**query, "page": str(n)}, read)
            if n == 1 and page.total is not None:  # known at once, not when consumed
                last_page = 1 if page.next is None else 1 + len(remaining_pages(page.total, size))
            return page, ids

        for attempt in range(MAX_PASSES):
            last_page = None
            guess = remaining_pages(expected, size) if expected and attempt == 0 else []
            pages: list[Page[JSON]] = []
            first = fetch_in_order([1, *guess], fetch, max_parallel=self.settings.max_parallel)
            async with contextlib.aclosing(first) as walk:
                async for page, ids in walk:
                    if not pages and page.total is None:  # no total: follow the links
                        await walk.aclose()
                        async for items in self._follow(
                            url, {**query, "page": "1"}, parse_v3, what
                        ):
                            yield items
                        return
                    pages.append(page if page is skipped else _ends(page))
                    yield self._fresh(page, ids, yielded)
            assert last_page is not None
            rest = list(range(2 + len(guess), last_page + 1))
            more = fetch_in_order(rest, fetch, max_parallel=self.settings.max_parallel)
            async with contextlib.aclosing(more) as walk:
                async for page, ids in walk:
                    pages.append(page if page is skipped else _ends(page))
                    yield self._fresh(page, ids, yielded)
            # Pages past the end (guessed, or requested before the head told the total)
            # must be empty: items there mean the list grew during the walk.
            needed, extra = pages[:last_page], [p for p in pages[last_page:] if p is not skipped]
            total = pages[0].total
            if (
                not unstable(needed + extra, total, key, what)
                and needed[-1].next is None
                and not any(p.items for p in extra)
            ):
                return
        raise ParseError(f"{what}: the list kept changing over {MAX_PASSES} reads", vendor=VENDOR)

    @staticmethod
    def _fresh(page: Page[JSON], ids: list[int], yielded: set[int]) -> list[JSON]:
        """The page's items not yielded by an earlier read of this walk."""
        if yielded.isdisjoint(ids):
            yielded.update(ids)
            return page.items
        out = [item for item, i in zip(page.items, ids, strict=True) if i not in yielded]
        yielded.update(ids)
        return out

    # --- push ------------------------------------------------------------------------------------
    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        return validate_row(entity, payload)

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        value = payload.get("Id") if entity == "persons" else None
        return None if value is None else str(value)

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        # One object per call (the API has no bulk write), several at once under the limiter.
        sends = fetch_in_order(
            rows, functools.partial(self._push_one, entity), max_parallel=self.settings.max_parallel
        )
        async with contextlib.aclosing(sends) as outcomes:
            return [outcome async for outcome in outcomes]

    async def _push_one(self, entity: str, row: tuple[str, JSON]) -> PushOutcome:
        key, payload = row
        method, path = PUSH[entity]
        url = f"{self._root('v3')}/{path}"
        if entity == "persons":
            url += f"/{payload['Id']}"
        try:
            await self.client.request(method, url, json=payload, expect_json=True)
        except RequestRejected as exc:
            if exc.status in (400, 422):  # this row's validation: record it, go on
                return PushOutcome(key, "rejected", str(exc))
            raise
        return PushOutcome(key, "created" if method == "POST" else "edited")
