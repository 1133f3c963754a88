"""``vendorsync push enqueue --file rows.jsonl``: validate every line, then add all or none."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.connectors import connector_class
from service.db import translate_db_errors
from service.db.outbox import enqueue
from service.engine.runtime import utc_now
from service.errors import InputError
from service.models import JSON


@dataclass(frozen=True, slots=True)
class PushRow:
    vendor: str
    entity: str
    key: str
    payload: JSON


MAX_KEY_CHARS = 512  # push_outbox.record_key is VARCHAR(512)
MAX_DEPTH = 100  # deeper JSON is a mistake, and deep enough to exhaust the stack later


class _Unrepresentable(ValueError):
    """A number JSON cannot carry to the vendor (NaN, Infinity, 1e999)."""


def _constant(name: str) -> Any:
    raise _Unrepresentable(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unrepresentable(f"{text} is out of range for a JSON number")
    return value


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise InputError(f"{where}: a string contains NUL (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{where}: a string contains an unpaired surrogate (\\ud800-\\udfff)"
        ) from None


def _check_value(value: Any, where: str) -> None:
    """Every string storable, nesting bounded; iterative, so depth cannot overflow us."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for k, v in item.items():
                _check_text(k, where)
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_text(item, where)


def _load_line(raw: str | bytes, n: int, where: str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start]
            raise InputError(
                f"{where}: not UTF-8 (byte 0x{byte:02x} at column {exc.start + 1})"
            ) from None
    if n == 1:
        raw = raw.removeprefix("\ufeff")  # a byte-order mark some editors write
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
    except _Unrepresentable as exc:
        raise InputError(f"{where}: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise InputError(f"{where}: invalid JSON ({' '.join(str(exc).split())[:120]})") from None
    _check_value(obj, where)
    return obj


def parse_rows(
    lines: Iterable[str | bytes],
    settings: Settings,
    *,
    vendor: str | None = None,
    entity: str | None = None,
    source: str = "input",
) -> list[PushRow]:
    """Each line: ``{"vendor", "entity", "payload", "key"?}``; ``--vendor``/``--entity`` fill
    in missing ones, and then a bare payload object per line is accepted too.

    The key defaults to the vendor's natural key of the entity (Aimsio User → userName).
    Lines may be bytes (decoded as UTF-8 here, so a bad byte is reported with its line).
    Any bad line raises ``InputError`` naming the line; nothing is enqueued.
    """
    rows: list[PushRow] = []
    for n, line in enumerate(lines, 1):
        where = f"{source}:{n}"
        obj = _load_line(line, n, where)
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        wrapped = "payload" in obj
        payload = obj.get("payload") if wrapped else obj
        v = obj.get("vendor", vendor) if wrapped else vendor
        e = obj.get("entity", entity) if wrapped else entity
        if not isinstance(payload, dict):
            raise InputError(f"{where}: 'payload' must be a JSON object")
        if not v or not e:
            raise InputError(f"{where}: vendor and entity are required (in the line or options)")
        if not isinstance(v, str) or not isinstance(e, str):
            raise InputError(f"{where}: vendor and entity must be strings")
        if v not in settings.vendors:
            raise InputError(f"{where}: unknown vendor {v!r}")
        try:
            cls = connector_class(settings.connector_of(v))
        except KeyError as exc:
            raise InputError(f"{where}: {exc.args[0]}") from None
        if e not in cls.push_entities:
            accepted = ", ".join(cls.push_entities) or "none"
            raise InputError(f"{where}: {v} does not accept {e!r} (accepts: {accepted})")
        key = obj.get("key") if wrapped else None
        key = key if key not in (None, "") else cls.push_key(e, payload)
        if key in (None, ""):
            raise InputError(f"{where}: no key given and the payload has no natural key for {e}")
        if isinstance(key, bool) or not isinstance(key, str | int | float):
            raise InputError(f"{where}: the key must be a string or a number")
        if len(str(key)) > MAX_KEY_CHARS:
            raise InputError(
                f"{where}: the key is {len(str(key))} characters long; at most {MAX_KEY_CHARS}"
            )
        rows.append(PushRow(v, e, str(key), payload))
    return rows


async def enqueue_rows(db: AsyncEngine, rows: list[PushRow], *, force: bool = False) -> int:
    """Add rows in one transaction; returns how many were added.

    Per key the last row given wins, and older waiting rows of its key are superseded.
    Without ``force`` a row is not added when its payload is already where that key is
    headed: the newest row's, while still pending, else the last the vendor accepted.
    """
    groups: dict[tuple[str, str], list[tuple[str, JSON]]] = defaultdict(list)
    for r in rows:
        groups[(r.vendor, r.entity)].append((r.key, r.payload))
    added = 0
    now = utc_now()
    with translate_db_errors("adding rows to the push outbox"):
        async with db.begin() as conn:
            for (vendor, entity), items in groups.items():
                added += await enqueue(conn, vendor, entity, items, now=now, dedupe=not force)
    return added
