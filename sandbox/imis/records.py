"""How an iMIS data contract is described to the simulator: fields, ids, generation, writes.

Each entity is an :class:`EntitySpec`. A spec names the *fields* clients filter and sort
on (with the property names and aliases the API accepts) and where each sits inside the
.NET-typed JSON record. Generated rows are built from cheap per-field functions of the row
index (no ``random.Random`` per row), so a filter over 10,000 rows reads only the fields it
tests; a full record is built only for rows that end up on a page.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sandbox.data import Record, guid_for, index_of_guid
from sandbox.imis.filter import FilterError, Kind, format_local, normalize, parse_local

M64 = (1 << 64) - 1
ASI = "Asi.Soa.{}.DataContracts.{}, Asi.Contracts"
STRING_COLLECTION = (
    "System.Collections.ObjectModel.Collection`1[[System.String, mscorlib]], mscorlib"
)
UPDATE_INFO = ASI.format("Core", "EntityUpdateInformationData")
GENERIC_PROPERTY = ASI.format("Core", "GenericPropertyData")
GENERIC_PROPERTIES = ASI.format("Core", "GenericPropertyDataCollection")
IDENTITY = ASI.format("Core", "IdentityData")
SYSTEM_USER = "MANAGER"

# Generated rows are stamped between these instants, in index order (see ``EntitySpec.stamp``).
_T0_MS = 1_420_070_400_000  # 2015-01-01T00:00Z
_SPAN_MS = 1_751_328_000_000 - _T0_MS  # ... to 2025-07-01T00:00Z


def mix(base: int, index: int) -> int:
    """A well-spread 64-bit hash of ``(base, index)`` (splitmix64 finaliser)."""
    x = (base ^ (index * 0x9E3779B97F4A7C15)) & M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Named:
    """A path step into a ``GenericPropertyData`` list: the item whose ``Name`` matches."""

    name: str


PathPart = str | int | Named


@dataclass(frozen=True)
class Field:
    key: str  # canonical name; also the key of the flat (filterable) row
    kind: Kind
    path: tuple[PathPart, ...]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stamp:
    """Who writes, and when (server-local ms)."""

    now_ms: int
    user: str = SYSTEM_USER

    @property
    def text(self) -> str:
        return format_local(self.now_ms)


@dataclass
class Context:
    """What specs share: the seed, generated sizes, and look-ups across entities."""

    seed: int
    size: int
    utc_offset_min: int = 0
    exists: Callable[[str, str], bool] = field(default=lambda _entity, _id: True)


# --- paths --------------------------------------------------------------------------------
def _child(node: Any, part: PathPart) -> Any:
    if isinstance(part, Named):
        if isinstance(node, dict):
            node = node.get("$values")
        if not isinstance(node, list):
            return None
        want = part.name.casefold()
        for item in node:
            if isinstance(item, dict) and str(item.get("Name", "")).casefold() == want:
                return item
        return None
    if isinstance(part, int):
        return node[part] if isinstance(node, list) and len(node) > part else None
    if not isinstance(node, dict):
        return None
    if part in node:
        return node[part]
    want = part.casefold()  # Json.NET reads property names case-insensitively
    for key, value in node.items():
        if key.casefold() == want:
            return value
    return None


def extract(record: Any, path: tuple[PathPart, ...]) -> Any:
    """The value at ``path``; a boxed .NET value (``{"$type", "$value"}``) is unboxed."""
    node = record
    for part in path:
        node = _child(node, part)
        if node is None:
            return None
    if isinstance(node, dict) and "$value" in node:
        return node["$value"]
    return node


def prop_path(name: str) -> tuple[PathPart, ...]:
    """Where a ``GenericEntityData`` property's value sits."""
    return ("Properties", Named(name), "Value")


def boxed(type_name: str, value: Any) -> Record:
    return {"$type": type_name, "$value": value}


def set_path(record: Record, path: tuple[PathPart, ...], value: Any) -> None:
    """Set a value, creating the dicts (and named property items) on the way."""
    node: Any = record
    for pos, part in enumerate(path):
        last = pos == len(path) - 1
        if isinstance(part, Named):
            item = _child(node, part)
            if item is None:
                item = {"$type": GENERIC_PROPERTY, "Name": part.name, "Value": None}
                node.setdefault("$values", []).append(item)
            node = item
            continue
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            if last:
                node[part] = value
            node = node[part]
            continue
        if last:
            node[part] = value
        else:
            nxt = path[pos + 1]
            default: Any = [] if isinstance(nxt, int) else {}
            node = node.setdefault(part, default)


def find_property(record: Record, name: str) -> Any:
    """Resolve a property the spec does not declare: dotted path, top level, then nested."""
    parts = name.split(".")
    if len(parts) > 1:
        node: Any = record
        for part in parts:
            if isinstance(node, dict) and "$values" in node and part.casefold() != "$values":
                node = (node["$values"] or [None])[0]
            node = _child(node, part)
        return node
    found = _child(record, name)
    if found is not None:
        return found
    prop = _child(record.get("Properties"), Named(name))
    if prop is not None:
        return prop.get("Value")
    queue = [v for v in record.values() if isinstance(v, dict | list)]
    for _ in range(200):  # a bounded breadth-first search
        if not queue:
            break
        node = queue.pop(0)
        if isinstance(node, list):
            queue.extend(v for v in node[:1] if isinstance(v, dict))
            continue
        found = _child(node, name)
        if found is not None and not isinstance(found, dict | list):
            return found
        queue.extend(v for v in node.values() if isinstance(v, dict | list))
    return None


def update_info(existing: Record | None, stamp: Stamp) -> Record:
    old = (existing or {}).get("UpdateInformation") or {}
    return {
        "$type": UPDATE_INFO,
        "CreatedBy": old.get("CreatedBy", stamp.user),
        "CreatedOn": old.get("CreatedOn", stamp.text),
        "UpdatedBy": stamp.user,
        "UpdatedOn": stamp.text,
    }


def generated_update_info(created_ms: int, updated_ms: int) -> Record:
    """``UpdateInformation`` of a generated row: written by the system user."""
    return {
        "$type": UPDATE_INFO,
        "CreatedBy": SYSTEM_USER,
        "CreatedOn": format_local(created_ms),
        "UpdatedBy": SYSTEM_USER,
        "UpdatedOn": format_local(updated_ms),
    }


def check_date(body: Record, name: str, path: tuple[Any, ...], errors: list[str]) -> int | None:
    """The date at ``path`` (server-local ms), if any; an unreadable one is added to ``errors``."""
    value = extract(body, path)
    if value is None:
        return None
    try:
        return parse_local(str(value), 0)
    except FilterError:
        errors.append(f"{name} '{value}' is not a valid date.")
        return None


def identity(entity: str, ident: str) -> Record:
    return {
        "$type": IDENTITY,
        "EntityTypeName": entity,
        "IdentityElements": {"$type": STRING_COLLECTION, "$values": [ident]},
    }


def collection(type_name: str, values: list[Any]) -> Record:
    return {"$type": type_name, "$values": values}


# --- the spec -----------------------------------------------------------------------------
class EntitySpec:
    """One data contract. Subclasses set the class attributes and the hooks below."""

    name: ClassVar[str]
    item_type: ClassVar[str]  # ``$type`` of stored records
    list_type: ClassVar[str]  # the PagedResult's item type, without the assembly
    accepts: ClassVar[frozenset[str]]  # ``$type`` values taken on POST/PUT
    methods: ClassVar[frozenset[str]] = frozenset({"GET", "POST", "PUT", "DELETE"})
    fields: ClassVar[tuple[Field, ...]]
    id_key: ClassVar[str]
    updated_key: ClassVar[str | None] = "UpdatedOn"  # what the flaky switch and mutations touch
    monotonic_key: ClassVar[str | None] = "UpdatedOn"  # generated values ascend with the index
    id_base: ClassVar[int] = 1  # numeric ids: id = index + id_base

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.by_key = {f.key: f for f in self.fields}
        names: dict[str, Field] = {}
        for f in self.fields:
            dotted = ""
            if not any(isinstance(p, Named) for p in f.path):
                dotted = ".".join(p for p in f.path if isinstance(p, str) and p != "$values")
            for alias in (f.key, dotted, *f.aliases):
                if alias:
                    names.setdefault(alias.casefold(), f)
        self.by_name = names
        self._salt = zlib.crc32(f"{ctx.seed}:{self.name}".encode())
        self._salts: dict[str, int] = {}
        self.gens: dict[str, Callable[[int], Any]] = self.generators()

    # ids
    def id_of(self, index: int) -> str:
        return str(index + self.id_base)

    def index_of(self, ident: str) -> int | None:
        return int(ident) - self.id_base if ident.isdigit() else None

    # generation
    def pick(self, what: str, index: int) -> int:
        """A 64-bit hash of ``(seed, entity, what, index)``, cheap enough to call per row."""
        base = self._salts.get(what)
        if base is None:
            base = self._salts[what] = self._salt ^ zlib.crc32(what.encode())
        x = (base ^ (index * 0x9E3779B97F4A7C15)) & M64  # mix(), inlined: this is the hot path
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & M64
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & M64
        return x ^ (x >> 31)

    def choice(self, what: str, index: int, options: tuple[Any, ...]) -> Any:
        return options[self.pick(what, index) % len(options)]

    def stamp(self, index: int, what: str = "updated") -> int:
        """A local-ms instant that never decreases with the index (ids follow time)."""
        step = _SPAN_MS / max(self.ctx.size, 1)
        frac = self.pick(what, index) / (M64 + 1)
        return _T0_MS + int((index + frac) * step) + self.ctx.utc_offset_min * 60_000

    def generators(self) -> dict[str, Callable[[int], Any]]:
        """Flat field values of generated rows; fields left out are read from ``build``."""
        return {}

    def build(self, index: int) -> Record:
        raise NotImplementedError

    def fresh(self, index: int, stamp: Stamp) -> Record:
        """A record added by a mutation: generated content, created now."""
        return self.prepare(self.build(index), index, None, stamp)

    # reading
    def flatten(self, record: Record) -> dict[str, Any]:
        """The filterable values of a stored record, keyed like ``generators``."""
        offset = self.ctx.utc_offset_min
        flat = {}
        for f in self.fields:
            try:
                flat[f.key] = normalize(extract(record, f.path), f.kind, offset)
            except FilterError:  # an unreadable date matches nothing, as a null would
                flat[f.key] = None
        return flat

    def body_id(self, body: Record) -> Any:
        return extract(body, self.by_key[self.id_key].path)

    # writing
    def validate(self, body: Record) -> list[str]:
        return []

    def prepare(self, body: Record, index: int, existing: Record | None, stamp: Stamp) -> Record:
        """The stored record for a POST (``existing`` None) or PUT: server fields filled in."""
        record = copy.deepcopy(body)
        record["$type"] = self.item_type
        set_path(record, self.by_key[self.id_key].path, self.id_of(index))
        if self.updated_key is not None:
            record["UpdateInformation"] = update_info(existing, stamp)
        return record

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        """A mutation's change to one record; bumps ``UpdatedOn``."""
        if self.updated_key is not None:
            record["UpdateInformation"] = update_info(record, stamp)
        return record

    def exists(self, entity: str, ident: Any) -> bool:
        return isinstance(ident, str | int) and self.ctx.exists(entity, str(ident))


class GuidIds:
    """Mix-in: ids are GUIDs that encode the index (``sandbox.data.guid_for``)."""

    name: ClassVar[str]
    ctx: Context

    def id_of(self, index: int) -> str:
        return guid_for(self.ctx.seed, self.name, index)

    def index_of(self, ident: str) -> int | None:
        index = index_of_guid(ident)
        if index is None or self.id_of(index) != ident.lower():
            return None
        return index
