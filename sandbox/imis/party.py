"""The iMIS contact contracts: Party (and its Person view), PartyDeleteLog and ChangeLog.

Party records follow ``ComboPartyData`` as the Postman collection shows it: ``PartyId``/``Id``
(numeric strings from 101, the vendor demo's first id), ``PersonName``, ``Emails.$values``,
``Addresses.$values``, ``Phones.$values``, ``Status``, ``UpdateInformation``, ``UniformId``,
``Name``, ``Sort``. About one party in ten is an organisation (``OrganizationName``, no
``PersonName``); ``/api/Person`` lists and edits the others.
"""

from __future__ import annotations

from typing import Any

from sandbox.data import Record, guid_for
from sandbox.imis.filter import format_local
from sandbox.imis.records import (
    ASI,
    SYSTEM_USER,
    Context,
    EntitySpec,
    Field,
    GuidIds,
    Stamp,
    collection,
    extract,
    identity,
)

PARTY_TYPE = ASI.format("Membership", "ComboPartyData")
PERSON_TYPE = ASI.format("Membership", "PersonData")
ORGANIZATION_TYPE = ASI.format("Membership", "OrganizationData")
PARTY_DATA = ASI.format("Membership", "PartyData")
_M = "Asi.Soa.Membership.DataContracts."

FIRST = ("Alice", "Art", "Bea", "Carlos", "Chen", "Dana", "Douglas", "Elena", "Farah", "Grace",
         "Hiro", "Ines", "Jamal", "Kevin", "Lena", "Marta", "Nathan", "Olu", "Priya", "Quinn",
         "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoe")  # fmt: skip
LAST = ("Abingdon", "Baker", "Chowdhury", "Dubois", "Evans", "Fischer", "Garcia", "Hunt",
        "Ito", "Johnson", "Kowalski", "Lauzier", "Martin", "Nguyen", "Okafor", "Parker",
        "Quist", "Rossi", "Smith", "Smithers", "Tanaka", "Ullman", "Varga", "Williams",
        "Xu", "Young", "Zimmer")  # fmt: skip
ORG_A = ("Prodigy", "Versaton", "Northwind", "Bluefield", "Keystone", "Harbor", "Summit")
ORG_B = ("Makers International", "Global", "Associates", "Society", "Partners", "Institute")
CITIES = (
    ("Chicago", "IL", "Illinois", "US", "60601"),
    ("Newark", "NJ", "New Jersey", "US", "07107"),
    ("Alexandria", "VA", "Virginia", "US", "22314"),
    ("Austin", "TX", "Texas", "US", "73301"),
    ("Seattle", "WA", "Washington", "US", "98101"),
    ("Toronto", "ON", "Ontario", "CA", "M5H 2N2"),
    ("Vancouver", "BC", "British Columbia", "CA", "V6B 1A1"),
    ("Denver", "CO", "Colorado", "US", "80202"),
)
STATUS_NAMES = {"A": "Active", "I": "Inactive"}


class PartySpec(EntitySpec):
    name = "Party"
    item_type = PARTY_TYPE
    list_type = _M + "PartyData"
    accepts = frozenset({PARTY_TYPE, PERSON_TYPE, ORGANIZATION_TYPE, PARTY_DATA})
    id_key = "PartyId"
    id_base = 101
    fields = (
        Field("PartyId", "str", ("PartyId",), ("id", "partyid")),
        Field("UniformId", "str", ("UniformId",)),
        Field("FirstName", "str", ("PersonName", "FirstName"), ("firstname",)),
        Field("LastName", "str", ("PersonName", "LastName"), ("lastname",)),
        Field("OrganizationName", "str", ("OrganizationName",)),
        Field("Name", "str", ("Name",)),
        Field("Sort", "str", ("Sort",)),
        Field("Email", "str", ("Emails", "$values", 0, "Address"), ("email", "emails.address")),
        Field("CityName", "str", ("Addresses", "$values", 0, "Address", "CityName")),
        Field(
            "CountrySubEntityName",
            "str",
            ("Addresses", "$values", 0, "Address", "CountrySubEntityName"),
        ),
        Field("CountryCode", "str", ("Addresses", "$values", 0, "Address", "CountryCode")),
        Field("Status", "str", ("Status", "PartyStatusId"), ("partystatusid",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
        Field("_IsPerson", "bool", ()),
    )

    # One hash per row feeds every choice, so a filter pays one hash per row it tests.
    def is_org(self, i: int) -> bool:
        return self.pick("row", i) % 10 == 0

    def first(self, i: int) -> str | None:
        h = self.pick("row", i)
        return None if h % 10 == 0 else FIRST[(h >> 8) % len(FIRST)]

    def last(self, i: int) -> str | None:
        h = self.pick("row", i)
        return None if h % 10 == 0 else LAST[(h >> 16) % len(LAST)]

    def org(self, i: int) -> str | None:
        h = self.pick("row", i)
        if h % 10:
            return None
        return f"{ORG_A[(h >> 24) % len(ORG_A)]} {ORG_B[(h >> 32) % len(ORG_B)]}"

    def display_name(self, i: int) -> str:
        return self.org(i) or f"{self.first(i)} {self.last(i)}"

    def sort_name(self, i: int) -> str:
        org = self.org(i)
        return org if org else f"{self.last(i)}, {self.first(i)}".upper()

    def email(self, i: int) -> str:
        h = self.pick("row", i)
        if h % 10 == 0:
            return f"info{i + self.id_base}@example.com"
        first, last = FIRST[(h >> 8) % len(FIRST)], LAST[(h >> 16) % len(LAST)]
        return f"{first}.{last}{i + self.id_base}@example.org".lower()

    def city(self, i: int) -> tuple[str, str, str, str, str]:
        return CITIES[(self.pick("row", i) >> 40) % len(CITIES)]

    def created(self, i: int) -> int:
        return self.stamp(i) - self.pick("age", i) % (3 * 365 * 86_400_000)

    def generators(self) -> dict[str, Any]:
        return {
            "PartyId": self.id_of,
            "UniformId": lambda i: guid_for(self.ctx.seed, "Party", i),
            "FirstName": self.first,
            "LastName": self.last,
            "OrganizationName": self.org,
            "Name": self.display_name,
            "Sort": self.sort_name,
            "Email": self.email,
            "CityName": lambda i: self.city(i)[0],
            "CountrySubEntityName": lambda i: self.city(i)[2],
            "CountryCode": lambda i: self.city(i)[3],
            "Status": lambda i: "I" if (self.pick("row", i) >> 48) % 20 == 0 else "A",
            "UpdatedOn": self.stamp,
            "CreatedOn": self.created,
            "_IsPerson": lambda i: not self.is_org(i),
        }

    def build(self, i: int) -> Record:
        pid = self.id_of(i)
        city, state_code, state, country, postal = self.city(i)
        status = self.gens["Status"](i)
        street = f"{100 + self.pick('street', i) % 9000} Main Street"
        record: Record = {"$type": PARTY_TYPE}
        if self.is_org(i):
            record["OrganizationName"] = self.org(i)
        else:
            first, last = self.first(i), self.last(i)
            record["PersonName"] = {
                "$type": _M + "PersonNameData, Asi.Contracts",
                "FirstName": first,
                "LastName": last,
                "FullName": f"{first} {last}",
            }
        record["Addresses"] = collection(
            _M + "FullAddressDataCollection, Asi.Contracts",
            [
                {
                    "$type": _M + "FullAddressData, Asi.Contracts",
                    "Address": {
                        "$type": _M + "AddressData, Asi.Contracts",
                        "AddressId": pid,
                        "AddressLines": collection(
                            _M + "AddressLineDataCollection, Asi.Contracts", [street]
                        ),
                        "CityName": city,
                        "CountryCode": country,
                        "CountrySubEntityCode": state_code,
                        "CountrySubEntityName": state,
                        "PostalCode": postal,
                    },
                    "AddressPurpose": "Address",
                    "FullAddressId": pid,
                }
            ],
        )
        record["AlternateIds"] = collection(
            ASI.format("Core", "AlternateIdDataCollection"),
            [{"$type": ASI.format("Core", "AlternateIdData"), "Id": pid, "IdType": "Id"}],
        )
        record["Emails"] = _emails(self.email(i))
        record["Phones"] = collection(
            _M + "PhoneDataCollection, Asi.Contracts",
            [
                {
                    "$type": _M + "PhoneData, Asi.Contracts",
                    "Number": f"(555) {self.pick('phone', i) % 900 + 100}-{i % 10000:04d}",
                    "PhoneType": "_Work Phone",
                }
            ],
        )
        record["UpdateInformation"] = {
            "$type": ASI.format("Core", "EntityUpdateInformationData"),
            "CreatedBy": SYSTEM_USER,
            "CreatedOn": format_local(self.created(i)),
            "UpdatedBy": SYSTEM_USER,
            "UpdatedOn": format_local(self.stamp(i)),
        }
        record["PartyId"] = pid
        record["Id"] = pid
        record["UniformId"] = guid_for(self.ctx.seed, "Party", i)
        record["Status"] = party_status(status)
        record["Name"] = self.display_name(i)
        record["Sort"] = self.sort_name(i)
        return record

    def flatten(self, record: Record) -> dict[str, Any]:
        flat = super().flatten(record)
        flat["_IsPerson"] = is_person(record)
        return flat

    def validate(self, body: Record) -> list[str]:
        errors = []
        if not (
            extract(body, ("OrganizationName",))
            or extract(body, ("PersonName", "LastName"))
            or extract(body, ("PersonName", "FirstName"))
        ):
            errors.append("A party needs PersonName.LastName or OrganizationName.")
        emails = body.get("Emails")
        if emails is not None:
            values = emails.get("$values") if isinstance(emails, dict) else None
            if not isinstance(values, list):
                errors.append("Emails must be a collection with $type and $values.")
            else:
                for item in values:
                    address = item.get("Address") if isinstance(item, dict) else None
                    if not isinstance(address, str) or "@" not in address:
                        errors.append(f"'{address}' is not a valid email address.")
        status = extract(body, ("Status", "PartyStatusId"))
        if status is not None and status not in STATUS_NAMES:
            errors.append(f"'{status}' is not a valid party status.")
        return errors

    def prepare(self, body: Record, index: int, existing: Record | None, stamp: Stamp) -> Record:
        record = super().prepare(body, index, existing, stamp)
        record["Id"] = record["PartyId"]
        record["UniformId"] = (existing or {}).get("UniformId") or guid_for(
            self.ctx.seed, "Party", index
        )
        org = record.get("OrganizationName")
        name = record.get("PersonName")
        if isinstance(name, dict):
            name.setdefault("$type", _M + "PersonNameData, Asi.Contracts")
            full = " ".join(str(name[k]) for k in ("FirstName", "LastName") if name.get(k))
            name.setdefault("FullName", full)
        if not record.get("Name"):
            record["Name"] = org or (name or {}).get("FullName", "")
        if not record.get("Sort"):
            sort = ", ".join(
                str(name[k]) for k in ("LastName", "FirstName") if name and name.get(k)
            )
            record["Sort"] = org or sort.upper()
        if not isinstance(record.get("Status"), dict):
            record["Status"] = party_status("A")
        return record

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        name = record.get("PersonName") or {}
        local = ".".join(str(name[k]) for k in ("FirstName", "LastName") if name.get(k))
        record["Emails"] = _emails(f"{local or 'info'}.{salt % 100000}@example.net".lower())
        return super().touch(record, salt, stamp)


def is_person(record: Record) -> bool:
    """Persons carry no ``OrganizationName`` (organisations do)."""
    return not record.get("OrganizationName")


def _emails(address: str) -> Record:
    return collection(
        _M + "EmailDataCollection, Asi.Contracts",
        [{"$type": _M + "EmailData, Asi.Contracts", "Address": address, "EmailType": "_Email"}],
    )


def party_status(code: str) -> Record:
    label = STATUS_NAMES.get(code, code)
    return {
        "$type": _M + "PartyStatusData, Asi.Contracts",
        "PartyStatusId": code,
        "Name": label,
        "Description": label,
    }


class PartyDeleteLogSpec(EntitySpec):
    """Read-only log of deleted parties; it starts empty and grows with every delete."""

    name = "PartyDeleteLog"
    item_type = ASI.format("Core", "PartyDeleteLogData")
    list_type = "Asi.Soa.Core.DataContracts.PartyDeleteLogData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET"})
    id_key = "PartyDeleteLogId"
    updated_key = None
    monotonic_key = None
    fields = (
        Field("PartyDeleteLogId", "str", ("PartyDeleteLogId",), ("id",)),
        Field("PartyId", "str", ("PartyId",)),
        Field("UniformId", "str", ("UniformId",), ("contactkey",)),
        Field("Name", "str", ("Name",)),
        Field("DeletedBy", "str", ("DeletedBy",)),
        Field("DeletedOn", "dt", ("DeletedOn",)),
    )

    def entry(self, index: int, party: Record, stamp: Stamp) -> Record:
        return {
            "$type": self.item_type,
            "PartyDeleteLogId": self.id_of(index),
            "PartyId": party.get("PartyId"),
            "UniformId": party.get("UniformId"),
            "Name": party.get("Name"),
            "DeletedBy": stamp.user,
            "DeletedOn": stamp.text,
        }


class ChangeLogSpec(GuidIds, EntitySpec):
    """Read-only contact change log: one ``Add`` per generated party, then every write."""

    name = "ChangeLog"
    item_type = ASI.format("Core", "ChangeLogData")
    list_type = "Asi.Soa.Core.DataContracts.ChangeLogData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET"})
    id_key = "ChangeLogId"
    updated_key = None
    monotonic_key = None
    fields = (
        Field("ChangeLogId", "str", ("ChangeLogId",), ("id",)),
        Field("ChangeType", "str", ("ChangeType",)),
        Field("ChangeDate", "dt", ("ChangeDate",)),
        Field("UserName", "str", ("UserName",)),
        Field("EntityTypeName", "str", ("Identity", "EntityTypeName")),
        Field(
            "IdentityElement",
            "str",
            ("Identity", "IdentityElements", "$values", 0),
            ("partyid", "identity"),
        ),
    )

    def __init__(self, ctx: Context, party: PartySpec) -> None:
        self.party = party
        super().__init__(ctx)

    def build(self, index: int) -> Record:
        stamp = Stamp(self.party.created(index))
        changes = [("Name", None, self.party.display_name(index))]
        return self.entry(index, "Party", self.party.id_of(index), "Add", changes, stamp)

    def entry(
        self,
        index: int,
        entity: str,
        ident: str,
        change_type: str,
        changes: list[tuple[str, Any, Any]],
        stamp: Stamp,
    ) -> Record:
        items = [
            {
                "$type": ASI.format("Core", "ChangeLogItemData"),
                "PropertyName": prop,
                "OriginalValue": old,
                "NewValue": new,
            }
            for prop, old, new in changes
        ]
        return {
            "$type": self.item_type,
            "ChangeLogId": self.id_of(index),
            "ChangeType": change_type,
            "ChangeDate": stamp.text,
            "UserName": stamp.user,
            "Identity": identity(entity, ident),
            "Changes": collection(ASI.format("Core", "ChangeLogItemDataCollection"), items),
        }
