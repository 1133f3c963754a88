"""Mapping rules: staged rows of any vendor's stream → rows to push to a vendor entity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import FieldMap
from service.db import fetch_live, translate_db_errors
from service.db.outbox import enqueue, plan_enqueue
from service.models import JSON

_MISSING = object()


def lookup(payload: Any, path: str) -> Any:
    """Dotted path into nested dicts/lists (``Emails.$values.0.Address``); missing → None."""
    node = payload
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            idx = int(part)
            node = node[idx] if -len(node) <= idx < len(node) else _MISSING
        else:
            node = _MISSING
        if node is _MISSING:
            return None
    return node


def map_record(rule: FieldMap, payload: JSON) -> tuple[str, JSON] | None:
    """Apply one rule to one staged payload; None when the target key would be empty.

    A source spec starting with ``=`` is a literal (``"=true"`` and ``"=false"`` are booleans;
    ``"=[a,b]"`` a list of strings).
    """
    out: JSON = {}
    for target, spec in rule.fields.items():
        if spec.startswith("="):
            out[target] = _literal(spec[1:])
        else:
            value = lookup(payload, spec)
            if value is not None:
                out[target] = value
    key = out.get(rule.key_field)
    if key in (None, ""):
        return None
    return str(key), out


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("[") and text.endswith("]"):
        return [p.strip() for p in text[1:-1].split(",") if p.strip()]
    return text


async def _mapped(db: AsyncEngine, rule: FieldMap) -> list[tuple[str, JSON]]:
    async with db.connect() as conn:
        live = await fetch_live(conn, rule.source_vendor, rule.source_stream)
    return [m for m in (map_record(rule, p) for p in live.values()) if m is not None]


async def apply_mappings(db: AsyncEngine, rules: list[FieldMap], *, now: datetime) -> int:
    """Enqueue every mapped row whose payload differs from the one its key is headed for
    (see ``plan_enqueue``): the newest still-pending row, else the last accepted one."""
    added = 0
    with translate_db_errors("applying mapping rules"):
        for rule in rules:
            rows = await _mapped(db, rule)
            async with db.begin() as conn:
                added += await enqueue(conn, rule.target_vendor, rule.entity, rows, now=now)
    return added


async def plan_mappings(db: AsyncEngine, rules: list[FieldMap]) -> list[tuple[FieldMap, str]]:
    """What ``apply_mappings`` would enqueue now, as (rule, key) pairs; writes nothing."""
    out: list[tuple[FieldMap, str]] = []
    with translate_db_errors("previewing mapping rules"):
        for rule in rules:
            rows = await _mapped(db, rule)
            async with db.connect() as conn:
                todo = await plan_enqueue(conn, rule.target_vendor, rule.entity, rows)
            out.extend((rule, key) for key, _ in todo)
    return out
