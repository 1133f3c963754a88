"""The Aqua mutation API: change, delete and add grid rows between syncs.

Explicit edits name rows by their key column value ("Order No", …); fractional edits pick
rows deterministically from ``seed``. Every edit stamps "Last Modified" with the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.aqua.data import SOURCES, AquaDataset, Source, find_source, iso_ms, touch_fn


def mutate_source(
    datasets: dict[str, AquaDataset], body: dict[str, Any], now_s: Callable[[], float]
) -> dict[str, Any]:
    """Apply one mutation body; returns the key values touched and the new row count.

    ``{"entity": "Orders", "change": 0.1, "delete": 0.05, "add": 3, "seed": 1}`` and/or
    ``{"entity": "Orders", "update": [{"id": "SO100001", "Status": "Hold"}],
    "delete_ids": ["SO100002"]}``. Bad ids or columns raise before anything changes.
    """
    source = find_source(str(body.get("entity", "")))
    if source is None:
        raise ValueError(f"unknown entity {body.get('entity')!r}; known: {sorted(SOURCES)}")
    data = datasets[source.name]
    keys = source.key_format
    updates = [_checked_update(source, data, u) for u in body.get("update", [])]
    deletes = [_checked_index(source, data, k) for k in body.get("delete_ids", [])]
    for index, fields in updates:
        data.put(index, {**(data.get(index) or {}), "Last Modified": iso_ms(now_s()), **fields})
    for index in deletes:
        data.delete(index)
    touched = data.mutate(
        touch_fn(source, now_s),
        change=float(body.get("change", 0)),
        delete=float(body.get("delete", 0)),
        add=int(body.get("add", 0)),
        seed=int(body.get("seed", 0)),
    )
    for index in touched["added"]:  # new rows are new now, whatever the generator says
        data.put(index, {**(data.get(index) or {}), "Last Modified": iso_ms(now_s())})
    return {
        "entity": source.name,
        "key": source.key,
        "updated": [keys.of(i) for i, _ in updates],
        "changed": [keys.of(i) for i in touched["changed"]],
        "deleted": [keys.of(i) for i in deletes + touched["deleted"]],
        "added": [keys.of(i) for i in touched["added"]],
        "count": len(data),
    }


def _checked_index(source: Source, data: AquaDataset, key: object) -> int:
    index = source.key_format.index(key)
    if index is None or index not in data:
        raise KeyError(f"unknown {source.key} {key!r}")
    return index


def _checked_update(
    source: Source, data: AquaDataset, update: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    fields = dict(update)
    key = fields.pop("id", None)
    key = fields.pop(source.key, key)
    unknown = set(fields) - set(source.columns)
    if unknown:
        raise ValueError(f"unknown {source.name} column(s): {sorted(unknown)}")
    return _checked_index(source, data, key), fields
