"""Deterministic, lazily generated vendor data.

Record ``i`` of an entity is built on demand from ``(seed, entity, i)``, so a dataset of a
million rows costs no memory until it is read, and the same seed always yields the same
rows. Mutations (changes, deletions, additions) live in small overlay dicts.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

Record = dict[str, Any]
MakeFn = Callable[[random.Random, int], Record]
TouchFn = Callable[[Record, random.Random], Record]


def guid_for(seed: int, entity: str, index: int) -> str:
    """A stable GUID whose last 12 hex digits are the index, so lookups need no table."""
    head = hashlib.sha1(f"{seed}:{entity}".encode()).hexdigest()[:20]
    return str(uuid.UUID(head + f"{index:012x}"))


def index_of_guid(guid: str) -> int | None:
    try:
        return int(uuid.UUID(guid).hex[20:], 16)
    except (ValueError, AttributeError):
        return None


class Dataset:
    """One entity's records: ``size`` generated ones plus an overlay of edits."""

    def __init__(self, entity: str, size: int, seed: int, make: MakeFn) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.entity = entity
        self.seed = seed
        self._make = make
        self._size = size  # generated indices are 0 .. size-1
        self._next = size  # next index for added records
        self._overrides: dict[int, Record] = {}
        self._deleted: set[int] = set()
        self.version = 0  # bumps on every edit: caches of rendered output compare it

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.entity}:{index}")

    def __len__(self) -> int:
        return self._next - len(self._deleted)

    def __contains__(self, index: int) -> bool:
        return 0 <= index < self._next and index not in self._deleted

    def get(self, index: int) -> Record | None:
        if index not in self:
            return None
        found = self._overrides.get(index)
        if found is not None:
            return found
        return self._make(self.rng(index), index)

    def indices(self) -> Iterator[int]:
        """Live indices in ascending order (ids ascend with them)."""
        deleted = self._deleted
        for i in range(self._next):
            if i not in deleted:
                yield i

    def records(self) -> Iterator[tuple[int, Record]]:
        for i in self.indices():
            rec = self.get(i)
            if rec is not None:
                yield i, rec

    def put(self, index: int, record: Record) -> None:
        if not 0 <= index < self._next:
            raise KeyError(index)
        self._overrides[index] = record
        self._deleted.discard(index)
        self.version += 1

    def add(self, build: Callable[[int], Record]) -> int:
        """Append a record built from its new index; returns that index."""
        index = self._next
        self._next += 1
        self._overrides[index] = build(index)
        self.version += 1
        return index

    def delete(self, index: int) -> bool:
        if index not in self:
            return False
        self._deleted.add(index)
        self._overrides.pop(index, None)
        self.version += 1
        return True

    def mutate(
        self,
        touch: TouchFn,
        *,
        change: float = 0.0,
        delete: float = 0.0,
        add: int = 0,
        seed: int = 0,
    ) -> dict[str, list[int]]:
        """Change and delete fractions of the live rows and add new ones, deterministically.

        Returns the indices touched, so a caller (or a test) knows the exact expected state.
        """
        rng = random.Random(f"mutate:{self.seed}:{self.entity}:{seed}")
        live = list(self.indices())
        n_change = round(len(live) * change)
        n_delete = round(len(live) * delete)
        picked = rng.sample(live, min(len(live), n_change + n_delete))
        changed, deleted = picked[:n_change], picked[n_change:]
        for i in changed:
            current = self.get(i)
            assert current is not None
            self.put(i, touch(dict(current), rng))
        for i in deleted:
            self.delete(i)
        added = [self.add(lambda idx: self._make(self.rng(idx), idx)) for _ in range(add)]
        return {"changed": sorted(changed), "deleted": sorted(deleted), "added": added}
