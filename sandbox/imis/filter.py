"""iMIS query-string filters, paging and server-local timestamps, as pure functions.

A filter is a query parameter named after a property, valued ``operator:value``
(``?lastName=contains:smith``); a value without a known operator means equality. Operator
names and their aliases are matched case-insensitively. ``between`` takes ``a|b``
(inclusive), ``in`` takes ``a|b|c``; ``isEmpty:``, ``notEmpty:``, ``isTrue:`` and
``isFalse:`` take nothing after the colon.

Comparisons follow SQL Server, which stands behind the API: text compares
case-insensitively, and a missing (null) value matches nothing except ``isEmpty``.

Timestamps are the server's local time without an offset (``2013-08-22T17:30:50.15``).
Inside the simulator they are integers: milliseconds since 1970-01-01T00:00 *local*,
so comparing two of them is an integer comparison.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Kind = Literal["str", "int", "num", "bool", "dt"]
Predicate = Callable[[Any], bool]

ALIASES: dict[str, tuple[str, ...]] = {
    "between": ("Between", "between"),
    "contains": ("Contains", "contains"),
    "endswith": ("EndsWith", "endsWith"),
    "eq": ("Equal", "equal", "eq", "=="),
    "gt": ("GreaterThan", "greaterThan", "gt", ">"),
    "ge": ("GreaterThanOrEqual", "greaterThanOrEqual", "ge", ">="),
    "in": ("In", "in"),
    "isempty": ("IsEmpty", "isEmpty", "empty"),
    "isfalse": ("IsFalse", "isFalse", "false"),
    "istrue": ("IsTrue", "isTrue", "true"),
    "lt": ("LessThan", "lessThan", "lt", "<"),
    "le": ("LessThanOrEqual", "lessThanOrEqual", "le", "<="),
    "notcontain": ("NotContain", "notContain", "!contain"),
    "notempty": ("NotEmpty", "notEmpty", "!empty"),
    "ne": ("NotEqual", "notEqual", "ne", "!="),
    "startswith": ("StartsWith", "startsWith"),
}
OPERATORS: dict[str, str] = {
    alias.casefold(): op for op, aliases in ALIASES.items() for alias in aliases
}
NO_ARGUMENT = frozenset({"isempty", "notempty", "istrue", "isfalse"})
TEXT_ONLY = frozenset({"contains", "notcontain", "startswith", "endswith"})
RANGE_OPS = frozenset({"eq", "gt", "ge", "lt", "le", "between"})

_EPOCH = datetime(1970, 1, 1)
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}(T|$)")


class FilterError(ValueError):
    """A filter or paging parameter the server rejects (HTTP 400)."""


@dataclass(frozen=True)
class Filter:
    prop: str  # the property as the client named it
    op: str  # canonical operator name (a key of ALIASES)
    args: tuple[str, ...]


def parse_filter(prop: str, raw: str) -> Filter:
    """``("lastName", "contains:smith")`` → ``Filter("lastName", "contains", ("smith",))``."""
    head, sep, tail = raw.partition(":")
    op = OPERATORS.get(head.casefold()) if sep else None
    if op is None:
        return Filter(prop, "eq", (raw,))
    if op in NO_ARGUMENT:
        return Filter(prop, op, ())
    if op == "between":
        parts = tuple(tail.split("|"))
        if len(parts) != 2:
            raise FilterError(f"'between' on {prop} needs two values separated by '|'")
        return Filter(prop, op, parts)
    if op == "in":
        return Filter(prop, op, tuple(tail.split("|")))
    return Filter(prop, op, (tail,))


# --- timestamps ---------------------------------------------------------------------------
def local_ms(epoch_s: float, utc_offset_min: int) -> int:
    """The server-local timestamp (ms) of a UTC instant."""
    return round((epoch_s + utc_offset_min * 60) * 1000)


def format_local(ms: int) -> str:
    """``1377192650150`` → ``"2013-08-22T17:30:50.15"`` (.NET drops trailing zeros)."""
    text = (_EPOCH + timedelta(milliseconds=ms // 1000 * 1000)).strftime("%Y-%m-%dT%H:%M:%S")
    frac = ms % 1000
    return f"{text}.{frac:03d}".rstrip("0") if frac else text


def parse_local(text: str, utc_offset_min: int) -> int:
    """An ISO 8601 date or date-time → local ms; an explicit offset is converted to local."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise FilterError(f"'{text}' is not a valid date") from exc
    if parsed.tzinfo is not None:
        utc = parsed.astimezone(UTC).replace(tzinfo=None)
        parsed = utc + timedelta(minutes=utc_offset_min)
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def looks_like_date(value: Any) -> bool:
    return isinstance(value, str) and _DATE_LIKE.match(value) is not None


# --- evaluation ---------------------------------------------------------------------------
def normalize(value: Any, kind: Kind, utc_offset_min: int = 0) -> Any:
    """A JSON value from a record → the comparable form stored for filtering."""
    if value is None or value == "":
        return None if value is None else ""
    if isinstance(value, dict) and "$value" in value:  # .NET boxed value
        value = value["$value"]
    if kind == "dt":
        return parse_local(value, utc_offset_min) if isinstance(value, str) else value
    if kind in ("int", "num") and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def infer_kind(value: Any) -> Kind:
    if isinstance(value, dict) and "$value" in value:
        value = value["$value"]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if looks_like_date(value):
        return "dt"
    return "str"


def _coerce(kind: Kind, text: str, utc_offset_min: int) -> Any:
    if kind == "str":
        return text.casefold()
    if kind in ("int", "num"):
        try:
            return float(text)
        except ValueError as exc:
            raise FilterError(f"'{text}' is not a number") from exc
    if kind == "bool":
        folded = text.strip().casefold()
        if folded in ("true", "1"):
            return True
        if folded in ("false", "0"):
            return False
        raise FilterError(f"'{text}' is not a boolean")
    return parse_local(text, utc_offset_min)


def compile_predicate(flt: Filter, kind: Kind, utc_offset_min: int = 0) -> Predicate:
    """The test one filter applies to a normalized value of the given kind."""
    op = flt.op
    if op == "isempty":
        return lambda v: v is None or v == ""
    if op == "notempty":
        return lambda v: v is not None and v != ""
    if op == "istrue":
        return lambda v: v is True or (isinstance(v, str) and v.casefold() == "true")
    if op == "isfalse":
        return lambda v: v is False or (isinstance(v, str) and v.casefold() == "false")
    if op in TEXT_ONLY and kind != "str":
        raise FilterError(f"'{op}' needs a text property; {flt.prop} is not text")
    test = _operator_test(op, [_coerce(kind, a, utc_offset_min) for a in flt.args])
    if kind == "str":
        # This runs once per row scanned: keep it to one check and one call.
        return lambda v: isinstance(v, str) and test(v.casefold())

    def predicate(v: Any) -> bool:
        if v is None:
            return False
        try:
            return test(v)
        except TypeError:  # a value of another type than the property's (client-written)
            return False

    return predicate


def _operator_test(op: str, args: list[Any]) -> Predicate:
    a = args[0] if args else None
    if op == "eq":
        return lambda v: v == a
    if op == "ne":
        return lambda v: v != a
    if op == "gt":
        return lambda v: v > a
    if op == "ge":
        return lambda v: v >= a
    if op == "lt":
        return lambda v: v < a
    if op == "le":
        return lambda v: v <= a
    if op == "between":
        lo, hi = args
        return lambda v: lo <= v <= hi
    if op == "in":
        members = set(args)
        return lambda v: v in members
    if op == "contains":
        return lambda v: a in v
    if op == "notcontain":
        return lambda v: a not in v
    if op == "startswith":
        return lambda v: v.startswith(a)
    if op == "endswith":
        return lambda v: v.endswith(a)
    raise FilterError(f"unknown operator {op!r}")


def bounds(flt: Filter, kind: Kind, utc_offset_min: int = 0) -> tuple[Any, bool, Any, bool]:
    """The range ``(lo, lo_inclusive, hi, hi_inclusive)`` a range filter admits (None: open)."""
    args = [_coerce(kind, a, utc_offset_min) for a in flt.args]
    op = flt.op
    if op == "eq":
        return args[0], True, args[0], True
    if op == "between":
        return args[0], True, args[1], True
    if op in ("gt", "ge"):
        return args[0], op == "ge", None, False
    if op in ("lt", "le"):
        return None, False, args[0], op == "le"
    raise FilterError(f"{op!r} is not a range operator")


def date_only(flt: Filter) -> Filter:
    """The same filter with the time of day cut off its dates (the flaky ``updatedOn``)."""
    return Filter(flt.prop, flt.op, tuple(a.split("T", 1)[0] for a in flt.args))


# --- paging and ordering --------------------------------------------------------------------
def parse_paging(
    limit_raw: str | None, offset_raw: str | None, default_limit: int, max_limit: int
) -> tuple[int, int]:
    """``(limit, offset)``; a limit over the cap is lowered to the cap, as the server reports."""
    try:
        limit = int(limit_raw) if limit_raw not in (None, "") else default_limit
        offset = int(offset_raw) if offset_raw not in (None, "") else 0
    except ValueError as exc:
        raise FilterError("limit and offset must be integers") from exc
    if limit < 0 or offset < 0:
        raise FilterError("limit and offset must not be negative")
    if limit == 0:
        limit = default_limit
    return min(limit, max_limit), offset


def parse_orderby(raw: str) -> tuple[str, bool]:
    """``"LastName desc"`` → ``("LastName", True)``; ``"-LastName"`` is accepted too."""
    text = raw.strip()
    descending = text.startswith("-")
    text = text.lstrip("-+").strip()
    name, _, direction = text.partition(" ")
    direction = direction.strip().casefold()
    if not name or direction not in ("", "asc", "desc"):
        raise FilterError(f"invalid orderby {raw!r}")
    return name, descending or direction == "desc"


def generic_type(item_type: str) -> str:
    return f"[[{item_type}, Asi.Contracts]]"


def paged_result(
    item_type: str, items: Iterable[Any], offset: int, limit: int, total: int
) -> dict[str, Any]:
    """The ``PagedResult`` envelope of items of ``item_type`` (``…DataContracts.PartyData``)."""
    values = list(items)
    has_next = offset + len(values) < total
    generic = generic_type(item_type)
    return {
        "$type": f"Asi.Soa.Core.DataContracts.PagedResult`1{generic}, Asi.Contracts",
        "Items": {
            "$type": f"System.Collections.Generic.List`1{generic_type(item_type)}, mscorlib",
            "$values": values,
        },
        "Offset": offset,
        "Limit": limit,
        "Count": len(values),
        "TotalCount": total,
        "NextPageLink": None,
        "HasNext": has_next,
        "NextOffset": offset + len(values) if has_next else 0,
    }


def in_restore_window(epoch_s: float, starts_utc: Iterable[str], duration_s: float) -> bool:
    """Whether a UTC instant falls in one of the daily windows starting at ``"HH:MM"``."""
    second_of_day = epoch_s % 86400
    for start in starts_utc:
        hours, _, minutes = start.partition(":")
        begin = int(hours) * 3600 + int(minutes or 0) * 60
        if (second_of_day - begin) % 86400 < duration_s:
            return True
    return False
