"""``vendorsync push enqueue --file rows.jsonl``: validate every line, then add all or none."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

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


def parse_rows(
    lines: Iterable[str],
    settings: Settings,
    *,
    vendor: str | None = None,
    entity: str | None = None,
    source: str = "input",
) -> list[PushRow]:
    """Each line: ``{"vendor", "entity", "payload", "key"?}``; ``--vendor``/``--entity`` fill
    in missing ones, and then a bare payload object per line is accepted too.

    The key defaults to the vendor's natural key of the entity (Aimsio User → userName).
    Any bad line raises ``InputError`` naming the line; nothing is enqueued.
    """
    rows: list[PushRow] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
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
        if v not in settings.vendors:
            raise InputError(f"{where}: unknown vendor {v!r}")
        try:
            cls = connector_class(v)
        except KeyError as exc:
            raise InputError(f"{where}: {exc.args[0]}") from None
        if e not in cls.push_entities:
            accepted = ", ".join(cls.push_entities) or "none"
            raise InputError(f"{where}: {v} does not accept {e!r} (accepts: {accepted})")
        key = obj.get("key") if wrapped else None
        key = key if key not in (None, "") else cls.push_key(e, payload)
        if key in (None, ""):
            raise InputError(f"{where}: no key given and the payload has no natural key for {e}")
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
    with translate_db_errors("enqueuing push rows"):
        async with db.begin() as conn:
            for (vendor, entity), items in groups.items():
                added += await enqueue(conn, vendor, entity, items, now=now, dedupe=not force)
    return added
