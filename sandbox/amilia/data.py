"""Amilia sandbox data: lazily generated accounts, persons, registrations, scans, programs.

Sizes: ``records`` accounts, registrations and access scans; two persons per generated
account (an owner and a member); ``records // 50`` programs (2 .. 2,000) with ten
activities each. Ids ascend with the row index (``Id = base + index``), so "ordered by
Id" is index order.

Filters read cheap per-row *facts* (archived, created day, activity, person) from
formulas for rows nobody edited and from the stored record otherwise, so scanning a
million rows never builds a million records. Dates spread before ``anchor`` (the day the
data describes, by default the clock's day when the simulator starts).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from math import gcd
from typing import Any

from sandbox.data import Dataset, Record

PROGRAM_BASE = 40_000
ACTIVITY_BASE = 700_000
ACCOUNT_BASE = 1_000_000
PERSON_BASE = 3_000_000
REGISTRATION_BASE = 10_000_000
SCAN_BASE = 50_000_000
SKILL_BASE = 90_000_000

ACTIVITIES_PER_PROGRAM = 10
REGISTRATION_SPAN_DAYS = 365  # registrations were created over the year up to the anchor
SCAN_SPAN_DAYS = 30  # access scans cover the last 30 days up to the anchor
REGISTRATIONS_PER_PERSON = 3  # registrations go to a pool of records // 3 persons
GENDERS = ("NotSpecified", "Male", "Female", "PreferNotToSay")
MASK64 = (1 << 64) - 1

# Salts keep the per-row hashes of different facts independent.
S_ARCHIVED, S_CORPORATE, S_REG_ACTIVITY, S_REG_TIME, S_SCAN_TIME = 1, 2, 3, 4, 5
S_SCAN_PERSON, S_ACT_START, S_ACT_LEN, S_ACT_FLAGS, S_POOL, S_PROGRAM = 6, 7, 8, 9, 10, 11

FIRST_NAMES = (
    "Olivier", "Emma", "Liam", "Léa", "William", "Alice", "Noah", "Florence", "Thomas",
    "Charlotte", "Jacob", "Rosalie", "Nathan", "Juliette", "Samuel", "Zoé", "Félix", "Chloé",
    "Gabriel", "Maëlle", "Louis", "Béatrice", "Raphaël", "Camille", "Mia", "Ethan", "Amira",
)  # fmt: skip
LAST_NAMES = (
    "Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin",
    "Gagné", "Ouellet", "Pelletier", "Bélanger", "Lévesque", "Bergeron", "Leblanc", "Girard",
    "Simard", "Boucher", "Smith", "Nguyen", "Martin", "Brown", "Singh", "Chen", "Haddad",
)  # fmt: skip
STREETS = (
    "rue Saint-Denis", "avenue du Parc", "boulevard Saint-Laurent", "rue Wellington",
    "rue Sherbrooke Est", "avenue Laurier Ouest", "rue Fleury", "chemin Sainte-Foy",
)  # fmt: skip
CITIES = (
    ("Montréal", "QC", 45.50, -73.57), ("Laval", "QC", 45.57, -73.69),
    ("Longueuil", "QC", 45.53, -73.52), ("Québec", "QC", 46.81, -71.21),
    ("Gatineau", "QC", 45.48, -75.70),
)  # fmt: skip
PROGRAMS = (
    ("Swimming lessons", "Aquatics", "Swimming"), ("Day camp", "Camps", "Day camp"),
    ("Soccer league", "Sports", "Soccer"), ("Gymnastics", "Sports", "Gymnastics"),
    ("Climbing club", "Outdoor", "Climbing"), ("Nature explorers", "Outdoor", "Nature"),
    ("Art workshop", "Arts", "Visual arts"), ("Skating school", "Sports", "Skating"),
    ("Kayak initiation", "Aquatics", "Kayak"), ("Chess club", "Leisure", "Games"),
)  # fmt: skip
SEASONS = ("Winter", "Spring", "Summer", "Fall")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
LOCATIONS = ((1, "Main entrance"), (2, "Pool"), (3, "Gym A"), (4, "Climbing wall"))
MEMBERSHIPS = ("Family membership", "Individual membership", "Pool pass")


def mix(*parts: int) -> int:
    """A fast, stable 64-bit hash of integers (splitmix64 steps): facts without a Random."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & MASK64)) & MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        x ^= x >> 31
    return x


def ascii_slug(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", plain.lower())


def iso_day(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


def iso_datetime(ordinal: int, seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{iso_day(ordinal)}T{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def public(record: Record) -> Record:
    """The record as the API shows it: internal ``_`` keys (links, flags) dropped."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


class Table(Dataset):
    """A Dataset that knows which rows were edited (their facts come from the record)."""

    def __init__(
        self, entity: str, size: int, seed: int, make: Callable[[random.Random, int], Record],
        id_base: int,
    ) -> None:  # fmt: skip
        super().__init__(entity, size, seed, make)
        self.generated = size
        self.id_base = id_base
        self.edited: set[int] = set()
        self.version = 0  # bumps on every write; list caches compare it
        self._added: list[int] = []  # ascending: new rows always take the next index

    def id_of(self, index: int) -> int:
        return self.id_base + index

    def index_of(self, ident: object) -> int | None:
        """The live row index for an API id (int or digit string), else None."""
        try:
            index = int(str(ident)) - self.id_base
        except ValueError:
            return None
        return index if index in self else None

    def put(self, index: int, record: Record) -> None:
        super().put(index, record)
        self.edited.add(index)
        self.version += 1

    def add(self, build: Callable[[int], Record]) -> int:
        index = super().add(build)
        self._added.append(index)
        self.edited.add(index)
        self.version += 1
        return index

    def delete(self, index: int) -> bool:
        done = super().delete(index)
        if done:
            self.edited.discard(index)
            self.version += 1
        return done

    def added(self) -> Iterator[int]:
        """Live rows added after generation, ascending."""
        yield from (i for i in self._added if i in self)


@dataclass(frozen=True)
class Layout:
    """Sizes and the index formulas every generated row is built from."""

    seed: int
    records: int
    anchor: int  # date ordinal of the day the data describes

    @property
    def persons(self) -> int:
        return 2 * self.records

    @property
    def programs(self) -> int:
        return min(2_000, max(2, self.records // 50))

    @property
    def activities(self) -> int:
        return self.programs * ACTIVITIES_PER_PROGRAM

    @cached_property
    def pool(self) -> int:
        return max(1, self.records // REGISTRATIONS_PER_PERSON)

    @cached_property
    def stride(self) -> int:
        """A multiplier coprime with the person count: registration → person is invertible."""
        a = 1_000_003
        while gcd(a, self.persons) != 1:
            a += 2
        return a

    @cached_property
    def offset(self) -> int:
        return self.h(S_POOL, 0) % self.persons

    def h(self, salt: int, index: int) -> int:
        return mix(self.seed, salt, index)

    # accounts
    def account_archived(self, i: int) -> bool:
        return self.h(S_ARCHIVED, i) % 25 == 0

    def account_corporate(self, i: int) -> bool:
        return self.h(S_CORPORATE, i) % 20 == 0

    # registrations: created days ascend with the id, as they would in a real system
    def registration_day(self, r: int) -> int:
        span = REGISTRATION_SPAN_DAYS
        return self.anchor - span + (r * (span + 1)) // self.records

    def registration_seconds(self, r: int) -> int:
        return 8 * 3600 + self.h(S_REG_TIME, r) % (13 * 3600)

    def registration_activity(self, r: int) -> int:
        return self.h(S_REG_ACTIVITY, r) % self.activities

    def registration_person(self, r: int) -> int:
        return ((r % self.pool) * self.stride + self.offset) % self.persons

    def registrations_of_person(self, p: int) -> list[int]:
        """Generated registration indices whose person is ``p`` (inverse of the above)."""
        x = ((p - self.offset) * pow(self.stride, -1, self.persons)) % self.persons
        if x >= self.pool:
            return []
        return list(range(x, self.records, self.pool))

    # access scans
    def scan_day(self, s: int) -> int:
        return self.anchor - SCAN_SPAN_DAYS + 1 + (s * SCAN_SPAN_DAYS) // self.records

    # activities
    def activity_start(self, a: int) -> int:
        return self.anchor - 360 + self.h(S_ACT_START, a) % 420

    def activity_end(self, a: int) -> int:
        return self.activity_start(a) + 28 + self.h(S_ACT_LEN, a) % 113

    def activity_hidden(self, a: int) -> bool:
        return self.h(S_ACT_FLAGS, a) % 15 == 0

    def activity_cancelled(self, a: int) -> bool:
        return self.h(S_ACT_FLAGS, a) % 31 == 1

    def program_hidden(self, p: int) -> bool:
        return self.h(S_PROGRAM, p) % 10 == 0

    def program_archived(self, p: int) -> bool:
        return self.h(S_PROGRAM, p) % 9 == 1


def phone(rng: random.Random) -> str:
    return f"{rng.choice((514, 438, 450, 418))}-555-{rng.randrange(10_000):04d}"


def family_rng(seed: int, account: int) -> random.Random:
    """Members of one account share a last name and an address."""
    return random.Random(f"{seed}:family:{account}")


def make_address(fam: random.Random) -> Record:
    city, province, lat, lon = fam.choice(CITIES)
    return {
        "Address1": f"{fam.randrange(10, 9999)} {fam.choice(STREETS)}",
        "Address2": None,
        "City": city,
        "StateProvince": province,
        "Country": "Canada",
        "ZipPostalCode": f"H{fam.randrange(10)}{chr(65 + fam.randrange(26))} "
        f"{fam.randrange(10)}{chr(65 + fam.randrange(26))}{fam.randrange(10)}",
        "Latitude": round(lat + fam.uniform(-0.05, 0.05), 6),
        "Longitude": round(lon + fam.uniform(-0.05, 0.05), 6),
    }


def blank_person() -> Record:
    return {
        "Id": 0, "FirstName": "", "LastName": "", "FullName": "", "Gender": "NotSpecified",
        "DateOfBirth": None, "Email": None, "Address": None, "Telephone": None,
        "TelephoneMobile": None, "TelephoneWork": None, "TelephoneWorkExtension": None,
        "IsChild": False,
    }  # fmt: skip


def build_person(
    layout: Layout, rng: random.Random, p: int, account: int, owner: bool
) -> Record:  # fmt: skip
    fam = family_rng(layout.seed, account)
    last = fam.choice(LAST_NAMES)
    address = make_address(fam)
    first = rng.choice(FIRST_NAMES)
    is_child = not owner and rng.random() < 0.7
    age_years = rng.randrange(3, 17) if is_child else rng.randrange(25, 66)
    born = layout.anchor - age_years * 365 - rng.randrange(365)
    pid = PERSON_BASE + p
    record = blank_person()
    record.update(
        Id=pid,
        FirstName=first,
        LastName=last,
        FullName=f"{first} {last}",
        Gender=rng.choice(GENDERS),
        DateOfBirth=iso_day(born),
        # The id in the address keeps generated emails unique and lets the owner-email
        # filter find a generated person without scanning.
        Email=None if is_child else f"{ascii_slug(first)}.{ascii_slug(last)}.{pid}@example.org",
        Address=address,
        Telephone=phone(fam),
        TelephoneMobile=None if is_child else phone(rng),
        TelephoneWork=phone(rng) if owner and rng.random() < 0.4 else None,
        IsChild=is_child,
        _account=account,
    )
    if record["TelephoneWork"]:
        record["TelephoneWorkExtension"] = str(rng.randrange(100, 999))
    return record


def make_membership(rng: random.Random, start: int) -> Record:
    return {
        "Id": rng.randrange(1, 9_999_999),
        "Name": rng.choice(MEMBERSHIPS),
        "StartDate": iso_day(start),
        "EndDate": iso_day(start + 364),
    }


def email_person_hint(email: str) -> int | None:
    """The person id a generated email carries (``first.last.<id>@…``), if any."""
    found = re.search(r"\.(\d+)@", email)
    return int(found.group(1)) if found else None


def make_program(layout: Layout, p: int) -> Record:
    name, category, sub = PROGRAMS[p % len(PROGRAMS)]
    acts = range(p * ACTIVITIES_PER_PROGRAM, (p + 1) * ACTIVITIES_PER_PROGRAM)
    start = min(layout.activity_start(a) for a in acts)
    end = max(layout.activity_end(a) for a in acts)
    season = SEASONS[(date.fromordinal(start).month - 1) // 3]
    return {
        "Id": PROGRAM_BASE + p,
        "Name": f"{name} – {season} {date.fromordinal(start).year}",
        "Category": category,
        "SubCategory": sub,
        "StartDate": iso_day(start),
        "EndDate": iso_day(end),
        "IsHidden": layout.program_hidden(p),
        "IsArchived": layout.program_archived(p),
    }


def make_activity(layout: Layout, a: int) -> Record:
    program = a // ACTIVITIES_PER_PROGRAM
    name, category, sub = PROGRAMS[program % len(PROGRAMS)]
    rng = random.Random(f"{layout.seed}:activity:{a}")
    hour = rng.randrange(8, 20)
    return {
        "Id": ACTIVITY_BASE + a,
        "Name": f"{name} – {rng.choice(WEEKDAYS)} {hour:02d}:{rng.choice((0, 30)):02d}",
        "ProgramId": PROGRAM_BASE + program,
        "Category": category,
        "SubCategory": sub,
        "StartDate": iso_day(layout.activity_start(a)),
        "EndDate": iso_day(layout.activity_end(a)),
        "Price": float(rng.randrange(40, 400)),
        "Capacity": rng.randrange(8, 40),
        "IsHidden": layout.activity_hidden(a),
        "IsCancelled": layout.activity_cancelled(a),
    }


def day_of(timestamp: str) -> int:
    return date.fromisoformat(timestamp[:10]).toordinal()


def today_ordinal(epoch_s: float) -> int:
    """The UTC calendar day of a clock reading (the simulator's "today")."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).date().toordinal()


def person_skill(skill_id: int, person_id: int, fields: dict[str, Any]) -> Record:
    return {"Id": skill_id, "PersonId": person_id, **fields}
