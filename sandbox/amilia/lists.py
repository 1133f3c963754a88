"""Filtered Amilia lists: the rows a list endpoint pages through, as row indices in id order.

Each list is built by one pass over cheap per-row *facts* (formulas for untouched rows, the
record for edited ones) and cached per filter until any table changes, so walking a large
list page by page costs one scan, not one per page.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any, Protocol

from sandbox.amilia.data import (
    ACTIVITIES_PER_PROGRAM,
    PERSON_BASE,
    Layout,
    Table,
    day_of,
    email_person_hint,
)

MAX_CACHED_LISTS = 16


class ListedTables(Protocol):
    """What the lists read of their store (a :class:`~sandbox.amilia.store.Store`)."""

    layout: Layout
    accounts: Table
    persons: Table
    registrations: Table
    scans: Table


class Lists:
    """The filtered lists over one store's tables (``Store.lists``)."""

    def __init__(self, store: ListedTables) -> None:
        self.store = store
        self._tables = (store.accounts, store.persons, store.registrations, store.scans)
        self._lists: OrderedDict[tuple[Any, ...], tuple[tuple[int, ...], array[int]]] = (
            OrderedDict()
        )

    # --- facts: formulas for untouched rows, the record for edited ones ----------------------
    def _account_archived(self, a: int) -> bool:
        if a in self.store.accounts.edited:
            rec = self.store.accounts.get(a)
            return rec is not None and bool(rec["_archived"])
        return self.store.layout.account_archived(a)

    def _registration_facts(self, r: int) -> tuple[int, int]:
        """(created day ordinal, activity index)."""
        if r in self.store.registrations.edited:
            rec = self.store.registrations.get(r)
            assert rec is not None
            return day_of(rec["DateCreated"]), rec["_activity"]
        L = self.store.layout
        return L.registration_day(r), L.registration_activity(r)

    # --- filtered lists (row indices in id order) ---------------------------------------------
    def _cached(self, key: tuple[Any, ...], build: Callable[[], Iterable[int]]) -> array[int]:
        stamp = tuple(t.version for t in self._tables)
        hit = self._lists.get(key)
        if hit is not None and hit[0] == stamp:
            self._lists.move_to_end(key)
            return hit[1]
        rows = array("q", build())
        self._lists[key] = (stamp, rows)
        if len(self._lists) > MAX_CACHED_LISTS:
            self._lists.popitem(last=False)
        return rows

    def accounts(self, show_archived: bool, owner_email: str | None) -> array[int]:
        if owner_email is not None:
            found = sorted(self._accounts_by_owner_email(owner_email))
            return array("q", (a for a in found if show_archived or not self._account_archived(a)))
        return self._cached(
            ("accounts", show_archived),
            lambda: (
                a
                for a in self.store.accounts.indices()
                if show_archived or not self._account_archived(a)
            ),
        )

    def _accounts_by_owner_email(self, email: str) -> set[int]:
        wanted = email.strip().lower()
        candidates = set(self.store.persons.edited)
        hint = email_person_hint(wanted)
        if hint is not None:
            candidates.add(hint - PERSON_BASE)
        found: set[int] = set()
        for p in candidates:
            person = self.store.persons.get(p)
            if person is None or (person["Email"] or "").lower() != wanted:
                continue
            account = self.store.accounts.get(person["_account"])
            if account is not None and p in account["_owners"]:
                found.add(person["_account"])
        return found

    def persons(self) -> array[int]:
        return self._cached(("persons",), self.store.persons.indices)

    def _registration_kept(
        self, r: int, today: int, show_ended: bool, first: int | None, last: int | None
    ) -> bool:
        day, activity = self._registration_facts(r)
        if first is not None and day < first:
            return False
        if last is not None and day > last:
            return False
        return show_ended or self.store.layout.activity_end(activity) >= today

    def _window(
        self, table: Table, day: Callable[[int], int], first: int, last: int
    ) -> Iterator[int]:
        """Live rows created in [first, last]. Generated rows' days ascend with the index and
        edits never move them, so a bisection finds their range; added rows are checked."""
        generated = range(table.generated)
        lo = bisect_left(generated, first, key=day)
        hi = bisect_right(generated, last, key=day)
        yield from (i for i in range(lo, hi) if i in table)
        yield from (i for i in table.added() if first <= self._day_of_added(table, i) <= last)

    def _day_of_added(self, table: Table, i: int) -> int:
        rec = table.get(i)
        assert rec is not None
        return day_of(rec["DateCreated"] if table is self.store.registrations else rec["ScanDate"])

    def registrations(
        self, today: int, show_ended: bool, first: int | None, last: int | None
    ) -> array[int]:
        def build() -> Iterator[int]:
            rows = self.store.registrations.indices()
            if first is not None or last is not None:
                lo, hi = first or 1, last or date.max.toordinal()
                rows = self._window(
                    self.store.registrations, self.store.layout.registration_day, lo, hi
                )
            return (r for r in rows if self._registration_kept(r, today, show_ended, first, last))

        return self._cached(("registrations", today, show_ended, first, last), build)

    def person_registrations(self, p: int, today: int, show_ended: bool) -> list[int]:
        """Found by inverting the generated person formula, plus rows added later."""
        table = self.store.registrations
        rows = [r for r in self.store.layout.registrations_of_person(p) if r in table]
        for r in table.added():
            rec = table.get(r)
            if rec is not None and rec["_person"] == p:
                rows.append(r)
        return [r for r in rows if self._registration_kept(r, today, show_ended, None, None)]

    def scans(self, first: int, last: int) -> array[int]:
        return self._cached(
            ("accessscans", first, last),
            lambda: self._window(self.store.scans, self.store.layout.scan_day, first, last),
        )

    def programs(self, show_hidden: bool, show_archived: bool) -> list[int]:
        L = self.store.layout
        return [
            p
            for p in range(L.programs)
            if (show_hidden or not L.program_hidden(p))
            and (show_archived or not L.program_archived(p))
        ]

    def activities(self, program: int, show_hidden: bool, show_cancelled: bool) -> list[int]:
        L = self.store.layout
        first = program * ACTIVITIES_PER_PROGRAM
        return [
            a
            for a in range(first, first + ACTIVITIES_PER_PROGRAM)
            if (show_hidden or not L.activity_hidden(a))
            and (show_cancelled or not L.activity_cancelled(a))
        ]
