"""What iMIS journals on every contact write, and the sandbox mutation API.

Party writes (through the REST API or a mutation) append ``ChangeLog`` rows; a deleted party
also gets a ``PartyDeleteLog`` row, which is how a sync learns about deletions.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from sandbox.data import Record
from sandbox.imis.filter import parse_local
from sandbox.imis.party import ChangeLogSpec, PartyDeleteLogSpec
from sandbox.imis.records import Stamp, set_path, update_info
from sandbox.imis.store import Table

Change = tuple[str, Any, Any]  # (property, old value, new value)
_NOT_LOGGED = frozenset({"UpdatedOn", "CreatedOn", "_IsPerson"})


class Journal:
    def __init__(
        self,
        changes: Table,
        change_spec: ChangeLogSpec,
        deletes: Table,
        delete_spec: PartyDeleteLogSpec,
    ) -> None:
        self.changes, self.change_spec = changes, change_spec
        self.deletes, self.delete_spec = deletes, delete_spec

    def changed(
        self, entity: str, ident: str, kind: str, changes: list[Change], stamp: Stamp
    ) -> None:
        if entity == "Party":  # iMIS's change log is about contacts
            spec = self.change_spec
            self.changes.add(lambda i: spec.entry(i, entity, ident, kind, changes, stamp))

    def deleted(self, entity: str, record: Record, stamp: Stamp) -> None:
        if entity != "Party":
            return
        self.deletes.add(lambda i: self.delete_spec.entry(i, record, stamp))
        name = [("Name", record.get("Name"), None)]
        self.changed(entity, str(record.get("PartyId")), "Delete", name, stamp)


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """What a write changed, from two flat rows (``EntitySpec.flatten``)."""
    return [(k, old.get(k), v) for k, v in new.items() if k not in _NOT_LOGGED and old.get(k) != v]


def apply_mutation(
    table: Table, body: dict[str, Any], stamp: Stamp, journal: Journal
) -> dict[str, Any]:
    """``POST /_sandbox/mutate``: fractions (``change``/``delete``/``add``/``seed``) and/or
    explicit ``update``/``delete_ids``. Returns the ids touched."""
    spec = table.spec
    changed: list[int] = []
    deleted: dict[int, Record] = {}
    added: list[int] = []
    change, remove = float(body.get("change", 0)), float(body.get("delete", 0))
    add = int(body.get("add", 0))
    if change or remove or add:

        def touch(record: Record, rng: random.Random) -> Record:
            return spec.touch(copy.deepcopy(record), rng.randrange(1 << 30), stamp)

        seed = int(body.get("seed", 0))
        touched, deleted = table.mutate(touch, change=change, delete=remove, add=add, seed=seed)
        changed, added = touched["changed"], touched["added"]
        for i in added:  # generated content, but created now
            table.put(i, spec.fresh(i, stamp))
    for item in body.get("update", []):
        changed.append(_update_one(table, dict(item), stamp))
    for ident in body.get("delete_ids", []):
        index = spec.index_of(str(ident))
        record = table.delete(index) if index is not None else None
        if index is None or record is None:
            raise KeyError(f"no {spec.name} with id {ident!r}")
        deleted[index] = record
    for i in changed:
        journal.changed(spec.name, spec.id_of(i), "Change", [], stamp)
    for i in added:
        journal.changed(spec.name, spec.id_of(i), "Add", [], stamp)
    for record in deleted.values():
        journal.deleted(spec.name, record, stamp)
    return {
        "entity": spec.name,
        "changed": [spec.id_of(i) for i in changed],
        "deleted": [spec.id_of(i) for i in sorted(deleted)],
        "added": [spec.id_of(i) for i in added],
        "updated_on": stamp.text,
    }


def _update_one(table: Table, item: dict[str, Any], stamp: Stamp) -> int:
    """Set properties (named as in filters) on one record; stamps ``UpdatedOn`` unless given."""
    spec = table.spec
    ident = str(item.pop("id"))
    index = spec.index_of(ident)
    current = table.get(index)
    if index is None or current is None:
        raise KeyError(f"no {spec.name} with id {ident!r}")
    record = copy.deepcopy(current)
    if spec.updated_key:
        record["UpdateInformation"] = update_info(current, stamp)
    for prop, value in item.items():
        f = table.field_for(prop)
        if f is None:
            record[prop] = value
            continue
        if f.kind == "dt":
            parse_local(str(value), 0)  # refuse what the server could not store
        set_path(record, f.path, value)
    table.put(index, record)
    return index
