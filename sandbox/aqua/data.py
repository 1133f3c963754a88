"""AIMS360 grid data for the Aqua simulator: sources, views, columns and row generators.

Rows are keyed by grid column caption (what the real export writes as CSV header and,
we assume, as JSON object keys). Each source has a stable key column ("Order No",
"Invoice No", "Customer Code", "Style") and a "Last Modified" column. Generated dates
hang off a fixed anchor, not the clock, so the same seed always gives the same rows;
mutations stamp "Last Modified" with the simulator clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sandbox.data import Dataset, MakeFn, Record

ANCHOR_EPOCH_S = 1_767_225_600  # 2026-01-01T00:00:00Z: generated dates lie before it
DAY_S = 86_400
# Date strings are looked up, not formatted per row: generation speed matters at 1M rows.
_DATES = [time.strftime("%Y-%m-%d", time.gmtime(ANCHOR_EPOCH_S - d * DAY_S)) for d in range(1200)]
_FUTURE = [time.strftime("%Y-%m-%d", time.gmtime(ANCHOR_EPOCH_S + d * DAY_S)) for d in range(200)]

# Customer names exercise CSV quoting (commas, quotes) and UTF-8 on purpose.
_NAME_A = ["Blue", "Urban", "Café", "Müller", "North", "O'Neil", "Sunset", "Coast", "Røde", "Metro"]
_NAME_B = ["Apparel", "Threads", "Mode", "Outfitters", "Boutique", "Denim", "Knits", "Wear"]
_NAME_C = ["Inc.", "LLC", '"The Label"', "& Sons, Ltd.", "Co.", "Group"]
_CITIES = [
    ("Los Angeles", "CA", "900"),
    ("New York", "NY", "100"),
    ("Dallas", "TX", "752"),
    ("Miami", "FL", "331"),
    ("Chicago", "IL", "606"),
    ("Seattle", "WA", "981"),
]
_STREETS = ["Main St", "Fashion Ave", "Market St", "Broadway", "Sunset Blvd", "Elm St"]
_DIVISIONS = ["WOMENS", "MENS", "KIDS", "ACCESS"]
_SEASONS = ["SP25", "SU25", "FA25", "HO25", "SP26"]
_REPS = ["JDOE", "MLOPEZ", "KCHEN", "HOUSE", "TNGUYEN"]
_TERMS = ["NET 30", "NET 60", "COD", "CREDIT CARD", "NET 45"]
_SHIP_VIA = ["UPS GROUND", "FEDEX", "WILL CALL", "LTL TRUCK"]
_WAREHOUSES = ["MAIN", "EAST", "WEST"]
_CATEGORIES = ["TOPS", "BOTTOMS", "DRESSES", "OUTERWEAR", "DENIM", "KNITS"]
_ORDER_STATUS = ["Open", "Open", "Open", "Hold", "Shipped", "Shipped", "Cancelled"]


def date_back(days: int) -> str:
    return _DATES[days % len(_DATES)]


def iso_ms(epoch_s: float) -> str:
    """The API's timestamp format (also "Last Modified"): ``2019-08-20T14:56:31.887Z``."""
    ms = round(epoch_s * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _generated_stamp(rng: random.Random) -> str:
    secs = int(rng.random() * 700 * DAY_S)
    day, rest = divmod(secs, DAY_S)
    h, rest = divmod(rest, 3600)
    return f"{date_back(day + 1)}T{h:02d}:{rest // 60:02d}:{rest % 60:02d}.000Z"


@dataclass(frozen=True)
class KeyFormat:
    """A key column's format; reversible, so a key maps to its dataset index without a table."""

    prefix: str
    offset: int
    width: int = 0

    def of(self, index: int) -> str:
        return f"{self.prefix}{index + self.offset:0{self.width}d}"

    def index(self, key: object) -> int | None:
        text = str(key)
        digits = text[len(self.prefix) :]
        if not text.startswith(self.prefix) or not digits.isdigit():
            return None
        index = int(digits) - self.offset
        return index if index >= 0 and self.of(index) == text else None


ORDER_NO = KeyFormat("SO", 100001)
INVOICE_NO = KeyFormat("IN", 500001)
CUSTOMER_CODE = KeyFormat("C", 1, 6)
STYLE_NO = KeyFormat("ST-", 1, 6)


def customer_name(index: int) -> str:
    a = _NAME_A[index % len(_NAME_A)]
    b = _NAME_B[(index // len(_NAME_A)) % len(_NAME_B)]
    c = _NAME_C[(index // 7) % len(_NAME_C)]
    return f"{a} {b} {c}"


# --- row generators: one factory per source, closed over the dataset size -----------------
def _orders(size: int) -> MakeFn:
    customers = max(1, size)

    def make(rng: random.Random, i: int) -> Record:
        r = rng.random
        ci = int(r() * customers)
        age = int(r() * 700)
        status = _ORDER_STATUS[int(r() * len(_ORDER_STATUS))]
        units = 12 * (1 + int(r() * 80))
        amount = round(units * (8 + r() * 40), 2)
        open_units = units if status in ("Open", "Hold") else 0
        return {
            "Order No": ORDER_NO.of(i),
            "Customer Code": CUSTOMER_CODE.of(ci),
            "Customer Name": customer_name(ci),
            "PO No": f"PO{int(r() * 900000) + 100000}",
            "Order Date": date_back(age + 30),
            "Start Date": date_back(age),
            "Cancel Date": _FUTURE[int(r() * len(_FUTURE))],
            "Status": status,
            "Division": _DIVISIONS[i % len(_DIVISIONS)],
            "Season": _SEASONS[int(r() * len(_SEASONS))],
            "Sales Rep": _REPS[ci % len(_REPS)],
            "Terms": _TERMS[ci % len(_TERMS)],
            "Ship Via": _SHIP_VIA[int(r() * len(_SHIP_VIA))],
            "Warehouse": _WAREHOUSES[int(r() * len(_WAREHOUSES))],
            "Total Units": units,
            "Total Amount": amount,
            "Open Units": open_units,
            "Open Amount": amount if open_units else 0.0,
            "Last Modified": _generated_stamp(rng),
        }

    return make


def _invoices(size: int) -> MakeFn:
    customers = max(1, size)

    def make(rng: random.Random, i: int) -> Record:
        r = rng.random
        ci = int(r() * customers)
        age = int(r() * 700)
        units = 12 * (1 + int(r() * 60))
        amount = round(units * (8 + r() * 40), 2)
        paid = amount if r() < 0.7 else round(amount * r(), 2)
        return {
            "Invoice No": INVOICE_NO.of(i),
            "Invoice Date": date_back(age),
            "Order No": ORDER_NO.of(int(r() * customers)),
            "Customer Code": CUSTOMER_CODE.of(ci),
            "Customer Name": customer_name(ci),
            "Due Date": date_back(max(0, age - 30)),
            "Terms": _TERMS[ci % len(_TERMS)],
            "Division": _DIVISIONS[i % len(_DIVISIONS)],
            "Sales Rep": _REPS[ci % len(_REPS)],
            "Total Units": units,
            "Invoice Amount": amount,
            "Amount Paid": paid,
            "Balance": round(amount - paid, 2),
            "Last Modified": _generated_stamp(rng),
        }

    return make


def _customers(size: int) -> MakeFn:
    def make(rng: random.Random, i: int) -> Record:
        r = rng.random
        city, state, zip3 = _CITIES[int(r() * len(_CITIES))]
        code = CUSTOMER_CODE.of(i)
        return {
            "Customer Code": code,
            "Customer Name": customer_name(i),
            "Status": "Active" if r() < 0.85 else "Inactive",
            "Address": f"{int(r() * 9000) + 100} {_STREETS[int(r() * len(_STREETS))]}",
            "City": city,
            "State": state,
            "Zip": f"{zip3}{int(r() * 90) + 10}",
            "Country": "USA",
            "Phone": f"({int(r() * 800) + 200}) 555-{int(r() * 9000) + 1000}",
            "Email": f"buyer.{code.lower()}@example.com",
            "Terms": _TERMS[i % len(_TERMS)],
            "Sales Rep": _REPS[i % len(_REPS)],
            "Credit Limit": 5000 * (1 + int(r() * 40)),
            "Last Modified": _generated_stamp(rng),
        }

    return make


def _styles(size: int) -> MakeFn:
    def make(rng: random.Random, i: int) -> Record:
        r = rng.random
        cost = round(4 + r() * 40, 2)
        category = _CATEGORIES[int(r() * len(_CATEGORIES))]
        return {
            "Style": STYLE_NO.of(i),
            "Description": f"{_NAME_A[i % len(_NAME_A)]} {category.title()} {i % 97}",
            "Division": _DIVISIONS[i % len(_DIVISIONS)],
            "Season": _SEASONS[int(r() * len(_SEASONS))],
            "Category": category,
            "Color Count": 1 + int(r() * 8),
            "Wholesale Price": round(cost * 2.2, 2),
            "Retail Price": round(cost * 4.4, 2),
            "Cost": cost,
            "Status": "Active" if r() < 0.8 else "Inactive",
            "Last Modified": _generated_stamp(rng),
        }

    return make


@dataclass(frozen=True)
class Source:
    """One AIMS360 grid: its key column, columns and named views (None = every row)."""

    name: str
    key: str
    key_format: KeyFormat
    columns: tuple[str, ...]
    factory: Callable[[int], MakeFn]
    views: dict[str, Callable[[Record], bool] | None]

    def view(self, name: str) -> str | None:
        """The canonical view name for ``name`` (matched case-insensitively), or None."""
        wanted = name.strip().casefold()
        return next((v for v in self.views if v.casefold() == wanted), None)


def _status_is(*values: str) -> Callable[[Record], bool]:
    return lambda rec: rec.get("Status") in values


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "Orders",
            "Order No",
            ORDER_NO,
            tuple(_orders(1)(random.Random(0), 0)),
            _orders,
            {
                "Open Orders": _status_is("Open"),
                "Open/Hold Orders": _status_is("Open", "Hold"),
                "All orders": None,
            },
        ),
        Source(
            "Invoices",
            "Invoice No",
            INVOICE_NO,
            tuple(_invoices(1)(random.Random(0), 0)),
            _invoices,
            {"All Invoices": None, "Balance Owing": lambda rec: float(rec["Balance"]) > 0},
        ),
        Source(
            "Customers",
            "Customer Code",
            CUSTOMER_CODE,
            tuple(_customers(1)(random.Random(0), 0)),
            _customers,
            {"Active Customers": _status_is("Active"), "All Customers": None},
        ),
        Source(
            "Styles",
            "Style",
            STYLE_NO,
            tuple(_styles(1)(random.Random(0), 0)),
            _styles,
            {"Active Styles": _status_is("Active"), "All Styles": None},
        ),
    )
}


def find_source(name: str) -> Source | None:
    wanted = name.strip().casefold()
    return next((s for s in SOURCES.values() if s.name.casefold() == wanted), None)


def touch_fn(
    source: Source, now_s: Callable[[], float]
) -> Callable[[Record, random.Random], Record]:
    """How a mutation changes one row of ``source``: a business field, plus Last Modified."""

    def touch(rec: Record, rng: random.Random) -> Record:
        if source.name == "Orders":
            rec["Status"] = rng.choice(["Open", "Hold", "Shipped", "Cancelled"])
            open_now = rec["Status"] in ("Open", "Hold")
            rec["Open Units"] = rec["Total Units"] if open_now else 0
            rec["Open Amount"] = rec["Total Amount"] if open_now else 0.0
        elif source.name == "Invoices":
            rec["Amount Paid"] = rec["Invoice Amount"]
            rec["Balance"] = 0.0
        elif source.name == "Customers":
            rec["Credit Limit"] = int(rec["Credit Limit"]) + 5000
            rec["Phone"] = f"(555) 555-{rng.randrange(1000, 10000)}"
        else:
            rec["Wholesale Price"] = round(float(rec["Wholesale Price"]) * 1.05, 2)
            rec["Status"] = rng.choice(["Active", "Inactive"])
        rec["Last Modified"] = iso_ms(now_s())
        return rec

    return touch


class AquaDataset(Dataset):
    """A Dataset that can freeze its current state: what an export job reads."""

    def frozen_copy(self) -> AquaDataset:
        """A copy sharing the generator but not the overlay, so later edits do not leak in.

        Costs O(edits), not O(rows): generated rows are rebuilt on demand from the seed.
        """
        copy = AquaDataset(self.entity, self._size, self.seed, self._make)
        copy._next = self._next
        copy._overrides = dict(self._overrides)
        copy._deleted = set(self._deleted)
        copy.version = self.version
        return copy

    def fingerprint(self) -> tuple[str, int, int, int]:
        """Equal for two copies holding the same rows (a frozen copy and its source)."""
        return (self.entity, self.seed, self._size, self.version)


def new_dataset(source: Source, size: int, seed: int) -> AquaDataset:
    return AquaDataset(source.name, size, seed, source.factory(size))


def view_rows(data: Dataset, source: Source, view: str) -> Iterator[Record]:
    """The rows of one view, in key order, generated one at a time."""
    keep = source.views[view]
    for _, rec in data.records():
        if keep is None or keep(rec):
            yield rec
