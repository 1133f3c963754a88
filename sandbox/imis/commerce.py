"""Item, Invoice and Country: the commerce contracts the sync reads, and the seed's
``/api/country`` reference list. Shapes follow the Advsol Postman collection's
``ItemData`` / ``InvoiceData`` (trimmed to what a sync stages) and ``CountryData``.
"""

from __future__ import annotations

from typing import Any

from sandbox.data import Record
from sandbox.imis.filter import format_local
from sandbox.imis.party import PartySpec
from sandbox.imis.records import (
    ASI,
    Context,
    EntitySpec,
    Field,
    Stamp,
    boxed,
    generated_update_info,
)

_C = "Asi.Soa.Commerce.DataContracts."
_DAY_MS = 86_400_000


class ItemSpec(EntitySpec):
    name = "Item"
    item_type = ASI.format("Commerce", "ItemData")
    list_type = _C + "ItemData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET", "POST", "PUT"})
    id_key = "ItemId"
    fields = (
        Field("ItemId", "str", ("ItemId",), ("id",)),
        Field("ItemCode", "str", ("ItemCode",)),
        Field("Name", "str", ("Name",)),
        Field("ItemClass", "str", ("ItemClass", "ItemClassId"), ("itemclassid",)),
        Field("Price", "num", ("Price",)),
        Field("IsActive", "bool", ("IsActive",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
    )
    CLASSES = (("DUES", "Dues"), ("MERCH", "Merchandise"), ("PUB", "Publication"))

    def id_of(self, index: int) -> str:
        return f"ITEM-{index + 1:06d}"

    def index_of(self, ident: str) -> int | None:
        head, _, num = ident.upper().partition("ITEM-")
        return int(num) - 1 if not head and num.isdigit() and int(num) > 0 else None

    def generators(self) -> dict[str, Any]:
        return {
            "ItemId": self.id_of,
            "ItemCode": self.id_of,
            "Name": lambda i: f"{self.choice('class', i, self.CLASSES)[1]} {i + 1}",
            "ItemClass": lambda i: self.choice("class", i, self.CLASSES)[0],
            "Price": lambda i: (self.pick("price", i) % 50000) / 100,
            "IsActive": lambda i: self.pick("active", i) % 10 != 0,
            "UpdatedOn": self.stamp,
            "CreatedOn": lambda i: self.stamp(i) - self.pick("age", i) % (90 * _DAY_MS),
        }

    def build(self, i: int) -> Record:
        g = self.gens
        cls, label = self.choice("class", i, self.CLASSES)
        return {
            "$type": self.item_type,
            "ItemId": self.id_of(i),
            "ItemCode": self.id_of(i),
            "Name": g["Name"](i),
            "ItemClass": {
                "$type": _C + "ItemClassSummaryData, Asi.Contracts",
                "ItemClassId": cls,
                "Name": label,
            },
            "Price": boxed("System.Decimal", g["Price"](i)),
            "IsActive": g["IsActive"](i),
            "UpdateInformation": generated_update_info(g["CreatedOn"](i), self.stamp(i)),
        }

    def validate(self, body: Record) -> list[str]:
        if not isinstance(body.get("Name"), str) or not body["Name"].strip():
            return ["Name is required."]
        return []

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        record["Price"] = boxed("System.Decimal", (salt % 50000) / 100)
        return super().touch(record, salt, stamp)


class InvoiceSpec(EntitySpec):
    name = "Invoice"
    item_type = ASI.format("Commerce", "InvoiceData")
    list_type = _C + "InvoiceData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET"})
    id_key = "InvoiceId"
    fields = (
        Field("InvoiceId", "str", ("InvoiceId",), ("id",)),
        Field("InvoiceNumber", "int", ("InvoiceNumber",)),
        Field("BillToPartyId", "str", ("BillToParty", "PartyId"), ("partyid",)),
        Field("InvoiceDate", "dt", ("InvoiceDate",)),
        Field("Balance", "num", ("Balance",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
    )

    def __init__(self, ctx: Context, party: PartySpec) -> None:
        self.party = party
        super().__init__(ctx)

    def generators(self) -> dict[str, Any]:
        return {
            "InvoiceId": self.id_of,
            "InvoiceNumber": lambda i: i + 1,
            "BillToPartyId": lambda i: self.party.id_of(
                self.pick("party", i) % max(self.ctx.size, 1)
            ),
            "InvoiceDate": lambda i: self.stamp(i) - self.pick("age", i) % (10 * _DAY_MS),
            "Balance": lambda i: (self.pick("balance", i) % 100000) / 100,
            "UpdatedOn": self.stamp,
            "CreatedOn": lambda i: self.gens["InvoiceDate"](i),
        }

    def build(self, i: int) -> Record:
        g = self.gens
        party_id = g["BillToPartyId"](i)
        return {
            "$type": self.item_type,
            "InvoiceId": self.id_of(i),
            "InvoiceNumber": i + 1,
            "BillToParty": {
                "$type": ASI.format("Membership", "PartySummaryData"),
                "PartyId": party_id,
            },
            "InvoiceDate": format_local(g["InvoiceDate"](i)),
            "Balance": boxed("System.Decimal", g["Balance"](i)),
            "UpdateInformation": generated_update_info(g["CreatedOn"](i), self.stamp(i)),
        }

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        record["Balance"] = boxed("System.Decimal", (salt % 100000) / 100)
        return super().touch(record, salt, stamp)


COUNTRIES = (
    ("AU", "Australia"),
    ("CA", "Canada"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("GB", "United Kingdom"),
    ("MX", "Mexico"),
    ("NZ", "New Zealand"),
    ("AE", "United Arab Emirates"),
    ("US", "United States"),
)


class CountrySpec(EntitySpec):
    """``/api/country`` (the seed's example, ``?countryname=contains:united``): read-only."""

    name = "Country"
    item_type = ASI.format("Core", "CountryData")
    list_type = "Asi.Soa.Core.DataContracts.CountryData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET"})
    id_key = "CountryCode"
    updated_key = None
    monotonic_key = None
    fields = (
        Field("CountryCode", "str", ("CountryCode",), ("id",)),
        Field("CountryName", "str", ("CountryName",), ("name",)),
    )

    def id_of(self, index: int) -> str:
        return COUNTRIES[index][0] if index < len(COUNTRIES) else f"X{index:03d}"

    def index_of(self, ident: str) -> int | None:
        codes = [c for c, _ in COUNTRIES]
        return codes.index(ident.upper()) if ident.upper() in codes else None

    def generators(self) -> dict[str, Any]:
        return {
            "CountryCode": self.id_of,
            "CountryName": lambda i: COUNTRIES[i][1] if i < len(COUNTRIES) else f"Land {i}",
        }

    def build(self, i: int) -> Record:
        return {
            "$type": self.item_type,
            "CountryCode": self.id_of(i),
            "CountryName": self.gens["CountryName"](i),
        }
