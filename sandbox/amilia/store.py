"""The Amilia sandbox's records: tables, joins into the API's shapes, edits.

The filtered lists the list endpoints page through (row indices in id order, cached per
filter) are ``Store.lists``, a :class:`~sandbox.amilia.lists.Lists`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from sandbox.amilia.data import (
    ACCOUNT_BASE,
    ACTIVITIES_PER_PROGRAM,
    ACTIVITY_BASE,
    LOCATIONS,
    PERSON_BASE,
    PROGRAM_BASE,
    REGISTRATION_BASE,
    S_SCAN_PERSON,
    S_SCAN_TIME,
    SCAN_BASE,
    SKILL_BASE,
    Layout,
    Table,
    blank_person,
    build_person,
    iso_datetime,
    make_activity,
    make_membership,
    make_program,
    public,
)
from sandbox.amilia.lists import Lists
from sandbox.data import Record

STAFF = (None, None, None, {"Id": 501, "FullName": "Marie Dubé"}, {"Id": 502, "FullName": "Sam Li"})


class Store:
    def __init__(self, layout: Layout) -> None:
        n, seed = layout.records, layout.seed
        self.layout = layout
        self.accounts = Table("accounts", n, seed, self._make_account, ACCOUNT_BASE)
        self.persons = Table("persons", layout.persons, seed, self._make_person, PERSON_BASE)
        self.registrations = Table(
            "registrations", n, seed, self._make_registration, REGISTRATION_BASE
        )
        self.scans = Table("accessscans", n, seed, self._make_scan, SCAN_BASE)
        self.programs = Table(
            "programs", layout.programs, seed, lambda _r, i: make_program(layout, i), PROGRAM_BASE
        )
        self.activities = Table(
            "activities",
            layout.activities,
            seed,
            lambda _r, i: make_activity(layout, i),
            ACTIVITY_BASE,
        )
        self.skills: dict[int, list[Record]] = {}
        self._tables = (
            self.accounts, self.persons, self.registrations, self.scans, self.programs,
            self.activities,
        )  # fmt: skip
        self._skill_count = 0
        self.lists = Lists(self)

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever any row any list renders changes (skills are never listed)."""
        return tuple(t.version for t in self._tables)

    # --- generation ---------------------------------------------------------------------
    def _make_account(self, rng: random.Random, i: int) -> Record:
        L = self.layout
        memberships = [
            make_membership(rng, L.anchor - rng.randrange(300))
            for _ in range(rng.choice((0, 1, 1, 2)))
        ]
        return {
            "Id": ACCOUNT_BASE + i,
            "_owners": [2 * i],
            "_members": [2 * i + 1],
            "Corporate": L.account_corporate(i),
            "AccountMemberships": memberships,
            "_archived": L.account_archived(i),
        }

    def _make_person(self, rng: random.Random, p: int) -> Record:
        return build_person(self.layout, rng, p, account=p // 2, owner=p % 2 == 0)

    def _make_registration(self, rng: random.Random, r: int) -> Record:
        L = self.layout
        return {
            "RegistrationId": REGISTRATION_BASE + r,
            "_activity": L.registration_activity(r),
            "_person": L.registration_person(r),
            "DateCreated": iso_datetime(L.registration_day(r), L.registration_seconds(r)),
            "DropIn": rng.random() < 0.1,
            "Group": rng.choice((None, "Group A", "Group B")),
            "Staff": rng.choice(STAFF),
        }

    def _make_scan(self, rng: random.Random, s: int) -> Record:
        L = self.layout
        seconds = 6 * 3600 + L.h(S_SCAN_TIME, s) % (16 * 3600)
        loc_id, loc_name = rng.choice(LOCATIONS)
        return {
            "Id": SCAN_BASE + s,
            "_person": L.h(S_SCAN_PERSON, s) % L.persons,
            "ScanDate": iso_datetime(L.scan_day(s), seconds),
            "Location": {"Id": loc_id, "Name": loc_name},
            "Result": "Refused" if rng.random() < 0.05 else "Accepted",
        }

    # --- joins into API shapes -------------------------------------------------------------
    def person(self, p: int) -> Record | None:
        rec = self.persons.get(p)
        return None if rec is None else public(rec)

    def _person_ref(self, p: int) -> Record:
        rec = self.persons.get(p)
        get = (lambda k: rec[k]) if rec is not None else (lambda _k: None)
        return {
            "Id": PERSON_BASE + p,
            "FirstName": get("FirstName"),
            "LastName": get("LastName"),
            "FullName": get("FullName"),
        }

    def account(self, a: int) -> Record | None:
        rec = self.accounts.get(a)
        if rec is None:
            return None
        return {
            "Id": rec["Id"],
            "Owners": self._live_persons(rec["_owners"]),
            "Members": self._live_persons(rec["_members"]),
            "Corporate": rec["Corporate"],
            "AccountMemberships": rec["AccountMemberships"],
        }

    def _live_persons(self, indices: Iterable[int]) -> list[Record]:
        return [p for p in (self.person(i) for i in indices) if p is not None]

    def contacts(self, a: int) -> list[Record] | None:
        rec = self.accounts.get(a)
        if rec is None:
            return None
        return self._live_persons(sorted(rec["_owners"] + rec["_members"]))

    def _account_owner(self, p: int) -> Record | None:
        person = self.persons.get(p)
        account = None if person is None else self.accounts.get(person["_account"])
        if account is None:
            return None
        for o in account["_owners"]:
            owner = self.persons.get(o)
            if owner is not None:
                return {"Id": owner["Id"], "FullName": owner["FullName"], "Email": owner["Email"]}
        return None

    def registration(self, r: int) -> Record | None:
        rec = self.registrations.get(r)
        if rec is None:
            return None
        a = rec["_activity"]
        act = make_activity(self.layout, a)
        program = make_program(self.layout, a // ACTIVITIES_PER_PROGRAM)
        return {
            "RegistrationId": rec["RegistrationId"],
            "Program": {"Id": program["Id"], "Name": program["Name"]},
            "Activity": {"Id": act["Id"], "Name": act["Name"]},
            "Category": act["Category"],
            "SubCategory": act["SubCategory"],
            "Group": rec["Group"],
            "DropIn": rec["DropIn"],
            "DateCreated": rec["DateCreated"],
            "Person": self._person_ref(rec["_person"]),
            "AccountOwner": self._account_owner(rec["_person"]),
            "Staff": rec["Staff"],
        }

    def scan(self, s: int) -> Record | None:
        rec = self.scans.get(s)
        if rec is None:
            return None
        ref = self._person_ref(rec["_person"])
        return {
            "Id": rec["Id"],
            "PersonId": ref["Id"],
            "FullName": ref["FullName"],
            "ScanDate": rec["ScanDate"],
            "Location": rec["Location"],
            "Result": rec["Result"],
        }

    # --- edits ---------------------------------------------------------------------------
    def add_person(self, account: int, fields: Record | None, owner: bool) -> int:
        """A new person in ``account``: from client ``fields``, or generated when None."""

        def build(p: int) -> Record:
            if fields is None:
                return build_person(self.layout, self.persons.rng(p), p, account, owner)
            rec = blank_person()
            rec.update(fields)
            rec["Id"] = PERSON_BASE + p
            rec["FullName"] = f"{rec['FirstName']} {rec['LastName']}"
            rec["_account"] = account
            return rec

        return self.persons.add(build)

    def add_account(
        self, owners: list[Record | None], members: list[Record | None], corporate: bool
    ) -> int:
        a = self.accounts.add(lambda i: {"Id": ACCOUNT_BASE + i})  # completed below
        record = {
            "Id": ACCOUNT_BASE + a,
            "_owners": [self.add_person(a, f, owner=True) for f in owners],
            "_members": [self.add_person(a, f, owner=False) for f in members],
            "Corporate": corporate,
            "AccountMemberships": [],
            "_archived": False,
        }
        self.accounts.put(a, record)
        return a

    def add_member(self, a: int) -> int:
        account = self.accounts.get(a)
        if account is None:
            raise KeyError(a)
        p = self.add_person(a, None, owner=False)
        self.accounts.put(a, {**account, "_members": [*account["_members"], p]})
        return p

    def update_person(self, p: int, fields: Record) -> Record:
        current = self.persons.get(p)
        if current is None:
            raise KeyError(p)
        rec = dict(current)
        for key, value in fields.items():
            if key == "Address" and isinstance(value, dict) and isinstance(rec["Address"], dict):
                rec["Address"] = {**rec["Address"], **value}  # a partial address edits in place
            else:
                rec[key] = value
        rec["FullName"] = f"{rec['FirstName']} {rec['LastName']}"
        self.persons.put(p, rec)
        return public(rec)

    def update_record(self, table: Table, index: int, fields: Record) -> None:
        current = table.get(index)
        if current is None:
            raise KeyError(index)
        table.put(index, {**current, **fields})

    def delete_account(self, a: int) -> list[int]:
        """Deletes the account and its persons; returns the persons deleted."""
        rec = self.accounts.get(a)
        if rec is None:
            return []
        gone = [p for p in rec["_owners"] + rec["_members"] if self.persons.delete(p)]
        self.accounts.delete(a)
        return gone

    def add_registration(self, p: int, activity: int, created: str) -> int:
        def build(r: int) -> Record:
            return {
                "RegistrationId": REGISTRATION_BASE + r,
                "_activity": activity,
                "_person": p,
                "DateCreated": created,
                "DropIn": False,
                "Group": None,
                "Staff": None,
            }

        return self.registrations.add(build)

    def add_skill(self, p: int, fields: Record) -> Record:
        self._skill_count += 1
        skill = {"Id": SKILL_BASE + self._skill_count, "PersonId": PERSON_BASE + p, **fields}
        self.skills.setdefault(p, []).append(skill)
        return skill
