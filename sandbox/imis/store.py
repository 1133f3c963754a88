"""One iMIS entity's rows, and the filtered, ordered queries the list endpoint runs on them.

A :class:`Table` wraps a lazy :class:`~sandbox.data.Dataset` and keeps, beside it, the flat
(filterable) values of every stored row (written, changed or added) and the set of deleted
indices, so a query never builds a full record just to test it.

Why a filtered page stays cheap on large tables:
- generated rows answer a filter from per-field functions of the index, not full records;
- generated ``UpdatedOn`` (the spec's ``monotonic_key``) ascends with the index, so a range
  filter on it (``updatedOn=gt:…``, the incremental pull) is a binary search plus the few
  stored rows, instead of a scan;
- a query's matching indices are cached until the next write, so the following pages (and
  pages fetched in parallel once ``TotalCount`` is known) are a slice.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from sandbox.data import Dataset, Record, TouchFn
from sandbox.imis.filter import (
    RANGE_OPS,
    Filter,
    FilterError,
    Kind,
    Predicate,
    bounds,
    compile_predicate,
    infer_kind,
    normalize,
)
from sandbox.imis.records import EntitySpec, Field, extract, find_property

CACHE_ENTRIES = 32
BUILT_ENTRIES = 50_000  # generated records kept built (a few KB each)
# (value of a stored row, value of a generated row, predicate)
Test = tuple[Callable[[int, dict[str, Any]], Any], Callable[[int], Any], Predicate]


class Table:
    def __init__(self, spec: EntitySpec, size: int, seed: int) -> None:
        self.spec = spec
        self.size = size  # generated rows are 0 .. size-1
        self.data = Dataset(spec.name, size, seed, lambda _rng, i: self._built(i))
        self._built_cache: OrderedDict[int, Record] = OrderedDict()
        self.version = 0
        self._flat: dict[int, dict[str, Any]] = {}  # every stored (not generated) live row
        self._deleted: set[int] = set()
        self._deleted_sorted: list[int] = []
        self._cache: OrderedDict[Hashable, list[int]] = OrderedDict()

    def _built(self, index: int) -> Record:
        """A generated row, built once: it is a pure function of its index, and building
        a Party costs more than serving it (written rows live in the dataset instead)."""
        found = self._built_cache.get(index)
        if found is None:
            found = self._built_cache[index] = self.spec.build(index)
            if len(self._built_cache) > BUILT_ENTRIES:
                self._built_cache.popitem(last=False)
        return found

    # --- rows ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.data)

    def get(self, index: int | None) -> Record | None:
        return None if index is None else self.data.get(index)

    def value(self, index: int, key: str) -> Any:
        row = self._flat.get(index)
        return row[key] if row is not None else self._generated(key)(index)

    def put(self, index: int, record: Record) -> None:
        self.data.put(index, record)
        self._stored(index)

    def add(self, build: Callable[[int], Record]) -> int:
        index = self.data.add(build)
        self._stored(index)
        return index

    def delete(self, index: int) -> Record | None:
        record = self.data.get(index)
        if record is None:
            return None
        self.data.delete(index)
        self._forget(index)
        return record

    def mutate(
        self, touch: TouchFn, *, change: float, delete: float, add: int, seed: int
    ) -> tuple[dict[str, list[int]], dict[int, Record]]:
        """``Dataset.mutate``, keeping the flat rows in step; also returns deleted records."""
        before = {i: self.data.get(i) for i in self._flat}  # the dataset drops deleted ones
        touched = self.data.mutate(touch, change=change, delete=delete, add=add, seed=seed)
        for i in touched["changed"] + touched["added"]:
            self._stored(i)
        deleted: dict[int, Record] = {}
        for i in touched["deleted"]:
            deleted[i] = before.get(i) or self.spec.build(i)
            self._forget(i)
        return touched, deleted

    def _stored(self, index: int) -> None:
        record = self.data.get(index)
        assert record is not None
        self._flat[index] = self.spec.flatten(record)
        self._changed()

    def _forget(self, index: int) -> None:
        self._flat.pop(index, None)
        if index not in self._deleted:
            self._deleted.add(index)
            insort(self._deleted_sorted, index)
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()

    def _generated(self, key: str) -> Callable[[int], Any]:
        gen = self.spec.gens.get(key)
        if gen is not None:
            return gen
        f = self.spec.by_key[key]
        offset = self.spec.ctx.utc_offset_min
        return lambda i: normalize(extract(self.spec.build(i), f.path), f.kind, offset)

    # --- listing ------------------------------------------------------------------------------
    def live_slice(self, offset: int, limit: int) -> list[int]:
        """Live indices at ranks ``offset .. offset+limit-1``, in id order, without a scan."""
        deleted = self._deleted_sorted
        top = len(self.data) + len(deleted)  # one past the highest index ever used
        if offset >= top:
            return []
        start = bisect_left(range(top), offset + 1, key=lambda x: x + 1 - bisect_right(deleted, x))
        out: list[int] = []
        i = start
        while i < top and len(out) < limit:
            if i not in self._deleted:
                out.append(i)
            i += 1
        return out

    def query(
        self,
        filters: list[Filter],
        order: tuple[str, bool] | None = None,
        *,
        post: Callable[[list[int]], list[int]] | None = None,
        cache_extra: Hashable = None,
    ) -> list[int]:
        """Indices of live rows passing every filter, ordered by id (or ``order``)."""
        key = (tuple(filters), order, cache_extra)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        tests = [self._test(f) for f in filters]
        sort_key = self._sort_key(order[0]) if order else None
        candidates = self._candidates(filters)
        if len(tests) == 1:  # the common case, without the per-row loop over tests
            stored_value, generated_value, predicate = tests[0]
            rows = self._flat
            matched = [
                i
                for i in candidates
                if predicate(stored_value(i, rows[i]) if i in rows else generated_value(i))
            ]
        else:
            matched = [i for i in candidates if self._passes(i, tests)]
        if post is not None:
            matched = post(matched)
        if sort_key is not None and order is not None:
            matched.sort(key=sort_key, reverse=order[1])
        self._cache[key] = matched
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return matched

    def field_for(self, prop: str) -> Field | None:
        return self.spec.by_name.get(prop.casefold())

    def _passes(self, index: int, tests: list[Test]) -> bool:
        row = self._flat.get(index)
        for stored, generated, predicate in tests:
            value = stored(index, row) if row is not None else generated(index)
            if not predicate(value):
                return False
        return True

    def _test(self, flt: Filter) -> Test:
        f = self.field_for(flt.prop)
        offset = self.spec.ctx.utc_offset_min
        if f is not None:
            key = f.key
            pred = compile_predicate(flt, f.kind, offset)
            return (lambda _i, row: row[key]), self._generated(key), pred
        # A property the spec does not declare: read it from full records (slow, rare).
        by_kind: dict[Kind, Predicate] = {}

        def predicate(raw: Any) -> bool:
            kind = infer_kind(raw)
            test = by_kind.get(kind)
            if test is None:
                try:
                    test = compile_predicate(flt, kind, offset)
                except FilterError:
                    test = _never
                by_kind[kind] = test
            try:
                return test(normalize(raw, kind, offset))
            except FilterError:
                return False

        def stored(i: int, _row: dict[str, Any]) -> Any:
            return find_property(self.data.get(i) or {}, flt.prop)

        def generated(i: int) -> Any:
            return find_property(self.spec.build(i), flt.prop)

        return stored, generated, predicate

    def _candidates(self, filters: list[Filter]) -> Iterator[int]:
        """Live indices that may match, ascending: generated ones narrowed by any range
        filter on the monotonic field, merged with every stored row."""
        lo, hi = 0, self.size
        mono = self.spec.monotonic_key
        if mono is not None:
            gen = self.spec.gens[mono]
            f = self.spec.by_key[mono]
            every = range(self.size)
            for flt in filters:
                if flt.op not in RANGE_OPS or self.field_for(flt.prop) is not f:
                    continue
                low, low_inc, high, high_inc = bounds(flt, f.kind, self.spec.ctx.utc_offset_min)
                if low is not None:
                    cut = bisect_left if low_inc else bisect_right
                    lo = max(lo, cut(every, low, key=gen))
                if high is not None:
                    cut = bisect_right if high_inc else bisect_left
                    hi = min(hi, cut(every, high, key=gen))
        stored, deleted = self._flat, self._deleted
        if not stored and not deleted:
            return iter(range(lo, hi))
        generated = (i for i in range(lo, hi) if i not in stored and i not in deleted)
        return heapq.merge(generated, sorted(stored))

    def _sort_key(self, prop: str) -> Callable[[int], Any]:
        f = self.field_for(prop)
        if f is None:
            raise FilterError(f"cannot order {self.spec.name} by '{prop}'")
        key = f.key

        def sort_key(i: int) -> tuple[bool, Any]:
            v = self.value(i, key)
            return (v is not None, v.casefold() if isinstance(v, str) else v)

        return sort_key


def _never(_value: Any) -> bool:
    return False
