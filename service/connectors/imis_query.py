"""iMIS pure parts: query-string filters from config, site-local timestamps, PagedResult
pages and the ``$type``/``$values`` unwrapping of what is staged.

Filters are query parameters named after a property, valued ``operator:value``; the
operator names and aliases are the documented ones (any case). A filter from config is
checked here so that a typo or an injected parameter is a config error, not a request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.connectors.paging import Page
from service.errors import ParseError

ALIASES: dict[str, tuple[str, ...]] = {
    "between": ("between",),
    "contains": ("contains",),
    "endsWith": ("endswith",),
    "eq": ("eq", "equal", "=="),
    "gt": ("gt", "greaterthan", ">"),
    "ge": ("ge", "greaterthanorequal", ">="),
    "in": ("in",),
    "isEmpty": ("isempty", "empty"),
    "isFalse": ("isfalse", "false"),
    "isTrue": ("istrue", "true"),
    "lt": ("lt", "lessthan", "<"),
    "le": ("le", "lessthanorequal", "<="),
    "notContain": ("notcontain", "!contain"),
    "notEmpty": ("notempty", "!empty"),
    "ne": ("ne", "notequal", "!="),
    "startsWith": ("startswith",),
}
OPERATORS = {alias: op for op, aliases in ALIASES.items() for alias in aliases}
NO_ARGUMENT = frozenset({"isEmpty", "isFalse", "isTrue", "notEmpty"})
PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
RESERVED = frozenset({"limit", "offset", "orderby", "queryname"})


def parse_filter(prop: str, raw: Any) -> tuple[str, str]:
    """A configured filter → ``(property, "op:value")`` with the canonical operator.

    Raises ``ValueError`` (pydantic reports it with the key) for an unknown operator, a
    property that is not a plain name, a reserved parameter, or a value with ``&``, ``=``
    or ``#`` that a hand-built URL would turn into another parameter.
    """
    if not PROPERTY.match(prop) or prop.casefold() in RESERVED:
        raise ValueError(f"filter property {prop!r} is not a plain property name")
    text = str(raw).lower() if isinstance(raw, bool) else str(raw)
    head, sep, tail = text.partition(":")
    if not sep:
        raise ValueError(f"filter {prop}={text!r}: write 'operator:value' (e.g. 'eq:{text}')")
    op = OPERATORS.get(head.strip().casefold())
    if op is None:
        raise ValueError(f"filter {prop}: unknown operator {head!r} (known: {', '.join(ALIASES)})")
    if any(c in tail for c in "&=#\r\n"):
        raise ValueError(f"filter {prop}: the value may not contain '&', '=', '#' or newlines")
    if op in NO_ARGUMENT:
        if tail:
            raise ValueError(f"filter {prop}: {op} takes no value")
        return prop, f"{op}:"
    if op == "between" and len(tail.split("|")) != 2:
        raise ValueError(f"filter {prop}: between needs two values 'between:a|b'")
    if op == "in" and not tail:
        raise ValueError(f"filter {prop}: in needs values 'in:a|b|c'")
    return prop, f"{op}:{tail}"


# --- site-local time --------------------------------------------------------------------
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'UTC')") from exc


def local_to_utc(text: str, tz: ZoneInfo) -> datetime:
    """An iMIS timestamp (site-local, no offset, e.g. ``2013-08-22T17:30:50.15``) → UTC.

    In the repeated hour after a DST change the earlier instant is taken (``fold=0``):
    reading from a cursor a little early re-reads, never skips.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ParseError(f"not an iMIS timestamp: {text!r}", vendor="imis") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz, fold=0)
    return parsed.astimezone(UTC)


def utc_to_local(when: datetime, tz: ZoneInfo) -> str:
    """A UTC instant → the site-local text a filter takes (milliseconds, no offset)."""
    local = when.astimezone(tz).replace(tzinfo=None)
    return local.isoformat(timespec="milliseconds")


def cursor_text(when: datetime) -> str:
    """How a cursor is stored: UTC ISO 8601 with microseconds (sorts as it compares)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_cursor(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def lookback(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# --- pages and payloads -----------------------------------------------------------------
def unwrap(value: Any) -> Any:
    """.NET-typed JSON → plain JSON: ``$type`` dropped, ``{"$values": [...]}`` → the list,
    boxed ``{"$type", "$value"}`` → the value, and a ``GenericPropertyData`` list (Activity's
    ``Properties``) → ``{Name: Value}``."""
    stack: list[tuple[Any, Any, Any]] = []
    root: list[Any] = [None]
    stack.append((value, root, 0))
    while stack:  # iterative: vendor JSON may nest deeper than the recursion limit
        item, parent, slot = stack.pop()
        if isinstance(item, dict):
            if "$value" in item:
                stack.append((item["$value"], parent, slot))
                continue
            if "$values" in item:
                stack.append((item["$values"], parent, slot))
                continue
            out: dict[str, Any] = {}
            parent[slot] = out
            for k, v in item.items():
                if k != "$type":
                    stack.append((v, out, k))
        elif isinstance(item, list):
            if item and all(_named_value(x) for x in item):
                named: dict[str, Any] = {}
                parent[slot] = named
                for x in item:
                    stack.append((x.get("Value"), named, str(x["Name"])))
                continue
            seq: list[Any] = [None] * len(item)
            parent[slot] = seq
            for i, v in enumerate(item):
                stack.append((v, seq, i))
        else:
            parent[slot] = item
    return root[0]


def _named_value(x: Any) -> bool:
    return isinstance(x, dict) and "Name" in x and set(x) <= {"$type", "Name", "Value"}


def parse_page(body: Any, what: str) -> Page[dict[str, Any]]:
    """A ``PagedResult`` → its items and ``TotalCount`` (``HasNext`` decides the rest)."""
    if not isinstance(body, dict) or "Items" not in body:
        raise ParseError(f"{what}: not a PagedResult", vendor="imis", stream=what)
    items = body["Items"]
    values = items.get("$values") if isinstance(items, dict) else items
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise ParseError(f"{what}: Items.$values is not a list of objects", vendor="imis")
    total = body.get("TotalCount")
    if not isinstance(total, int) or isinstance(total, bool):
        total = None
    more = body.get("HasNext") is True
    offset = body.get("NextOffset")
    if isinstance(offset, str) and offset.isdigit():
        offset = int(offset)
    if more and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
        raise ParseError(f"{what}: HasNext without a NextOffset to go on from", vendor="imis")
    return Page(values, next=str(offset) if more else None, total=total)


def page_limit(body: Any, asked: int) -> int:
    """The page size the server applied (it lowers a ``limit`` over its cap)."""
    limit = body.get("Limit") if isinstance(body, dict) else None
    return limit if isinstance(limit, int) and 0 < limit <= asked else asked
