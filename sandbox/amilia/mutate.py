"""The Amilia mutation API (``POST /amilia/_sandbox/mutate``): edits between two syncs.

Body: ``{"entity": "accounts"|"persons"|"registrations", "change": fraction,
"delete": fraction, "add": n, "seed": s}`` for deterministic random edits, and/or
``{"update": [{"Id": id, field: value, …}], "delete_ids": [id, …]}`` for exact ones.
Deleting an account deletes its persons; adding an account adds an owner and a member;
adding a person adds a member to an existing account; added registrations are created
"now" by the simulator clock. The answer lists every API id touched.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from sandbox.amilia.data import Table, make_membership
from sandbox.amilia.store import Store
from sandbox.amilia.wire import person_errors, person_fields
from sandbox.data import Record

MUTABLE = ("accounts", "persons", "registrations")
# Generated from the layout and never edited here (the catalogue and the scan log): a
# mutation of these touches nothing, so a demo may mutate every stream it syncs.
READ_ONLY = ("programs", "activities", "accessscans")
# Explicit updates of accounts and registrations: field → accepted types.
ACCOUNT_FIELDS: dict[str, tuple[type, ...]] = {
    "Corporate": (bool,),
    "AccountMemberships": (list,),
    "Archived": (bool,),  # stored as the internal archived flag that showArchived reads
}
REGISTRATION_FIELDS: dict[str, tuple[type, ...]] = {
    "DropIn": (bool,),
    "Group": (str, type(None)),
    "Staff": (dict, type(None)),
}


def touch(entity: str, rec: Record, rng: random.Random, anchor: int) -> Record:
    """A plausible random edit of one row (``anchor``: the data's day, for new dates)."""
    if entity == "persons":
        rec["TelephoneMobile"] = f"514-555-{rng.randrange(10_000):04d}"
        if isinstance(rec.get("Address"), dict):
            street = f"{rng.randrange(10, 9999)} rue Fleury"
            rec["Address"] = {**rec["Address"], "Address1": street}
    elif entity == "accounts":
        new = make_membership(rng, anchor - rng.randrange(60))
        rec["AccountMemberships"] = [*rec["AccountMemberships"], new]
    else:
        rec["DropIn"] = not rec["DropIn"]
        rec["Group"] = rng.choice(("Group A", "Group B", "Group C"))
    return rec


def _fraction(body: dict[str, Any], key: str) -> float:
    value = body.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{key!r} must be a fraction between 0 and 1")
    return float(value)


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key!r} must be a non-negative integer")
    return value


def _index(table: Table, ident: Any) -> int:
    index = table.index_of(ident)
    if index is None:
        raise ValueError(f"unknown {table.entity} id {ident!r}")
    return index


def _typed(fields: dict[str, Any], allowed: dict[str, tuple[type, ...]]) -> None:
    for key, value in fields.items():
        if key not in allowed:
            raise ValueError(f"{key!r} cannot be updated; allowed: {sorted(allowed)}")
        if not isinstance(value, allowed[key]):
            raise ValueError(f"{key!r} has the wrong type")


def _update(store: Store, entity: str, item: Any, today: int) -> int:
    if not isinstance(item, dict):
        raise ValueError("each update must be an object with an Id")
    table: Table = getattr(store, entity)
    index = _index(table, item.get("Id", item.get("id")))
    fields = {k: v for k, v in item.items() if k not in ("Id", "id")}
    if entity == "persons":
        errors = person_errors(fields, creating=False, owner=False, today=today)
        if errors:
            raise ValueError("; ".join(errors))
        store.update_person(index, person_fields(fields))
    elif entity == "accounts":
        _typed(fields, ACCOUNT_FIELDS)
        if "Archived" in fields:
            fields["_archived"] = fields.pop("Archived")
        store.update_record(table, index, fields)
    else:
        _typed(fields, REGISTRATION_FIELDS)
        store.update_record(table, index, fields)
    return table.id_of(index)


def apply_mutation(store: Store, body: dict[str, Any], now_s: float, today: int) -> dict[str, Any]:
    """Apply one mutation request; returns the ids touched (a ValueError becomes a 400)."""
    entity = body.get("entity")
    if entity in READ_ONLY:
        return {"entity": entity, "updated": [], "changed": [], "deleted": [], "added": [],
                "read_only": True}  # fmt: skip
    if entity not in MUTABLE:
        raise ValueError(f"'entity' must be one of {', '.join(MUTABLE)}")
    table: Table = getattr(store, entity)
    change, delete = _fraction(body, "change"), _fraction(body, "delete")
    add, seed = _count(body, "add"), body.get("seed", 0)
    updates, delete_ids = body.get("update", []), body.get("delete_ids", [])
    if not isinstance(updates, list) or not isinstance(delete_ids, list):
        raise ValueError("'update' and 'delete_ids' must be lists")
    persons_added: list[int] = []
    persons_deleted: list[int] = []
    accounts_changed: list[int] = []

    def remove(index: int) -> None:
        if entity == "accounts":
            persons_deleted.extend(store.delete_account(index))
        else:
            table.delete(index)

    updated = [_update(store, entity, item, today) for item in updates]
    explicit_deleted = [_index(table, ident) for ident in delete_ids]
    for index in explicit_deleted:
        remove(index)

    # Random edits: the same seed on the same data picks the same rows.
    rng = random.Random(f"mutate:{store.layout.seed}:{entity}:{seed}")
    live = list(table.indices())
    n_change, n_delete = round(len(live) * change), round(len(live) * delete)
    picked = rng.sample(live, min(len(live), n_change + n_delete))
    changed, deleted = sorted(picked[:n_change]), sorted(picked[n_change:])
    for index in changed:
        current = table.get(index)
        assert current is not None
        table.put(index, touch(entity, dict(current), rng, store.layout.anchor))
    for index in deleted:
        remove(index)

    added: list[int] = []
    if add and entity == "accounts":
        for _ in range(add):
            a = store.add_account([None], [None], corporate=False)
            added.append(a)
            account = store.accounts.get(a)
            assert account is not None
            persons_added.extend(account["_owners"] + account["_members"])
    elif add and entity == "persons":
        accounts = list(store.accounts.indices())
        if not accounts:
            raise ValueError("no account left to add a person to")
        for _ in range(add):
            a = rng.choice(accounts)
            added.append(store.add_member(a))
            accounts_changed.append(a)
    elif add:
        persons = list(store.persons.indices())
        if not persons:
            raise ValueError("no person left to register")
        created = datetime.fromtimestamp(now_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        for _ in range(add):
            activity = rng.randrange(store.layout.activities)
            added.append(store.add_registration(rng.choice(persons), activity, created))

    ids = table.id_of
    return {
        "entity": entity,
        "updated": sorted(updated),
        "changed": [ids(i) for i in changed],
        "deleted": sorted(ids(i) for i in explicit_deleted + deleted),
        "added": [ids(i) for i in added],
        "related": {
            "persons": {
                "added": [store.persons.id_of(p) for p in persons_added],
                "deleted": sorted(store.persons.id_of(p) for p in persons_deleted),
            },
            "accounts": {"changed": sorted({store.accounts.id_of(a) for a in accounts_changed})},
        },
        "total": len(table),
    }
