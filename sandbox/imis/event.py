"""The iMIS events contracts: Event and EventRegistration.

Shapes follow the Advsol Postman collection (``EventData``, ``EventRegistrationData``). Both
carry ``UpdateInformation`` as Party does, so a sync can walk them by ``UpdatedOn``.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.data import Record
from sandbox.imis.filter import format_local
from sandbox.imis.party import PartySpec
from sandbox.imis.records import (
    ASI,
    GENERIC_PROPERTIES,
    Context,
    EntitySpec,
    Field,
    Stamp,
    check_date,
    collection,
    generated_update_info,
)

_EV = "Asi.Soa.Events.DataContracts."
_M = "Asi.Soa.Membership.DataContracts."
_DAY_MS = 86_400_000


class EventSpec(EntitySpec):
    name = "Event"
    item_type = ASI.format("Events", "EventData")
    list_type = _EV + "EventData"
    accepts = frozenset({item_type})
    id_key = "EventId"
    fields = (
        Field("EventId", "str", ("EventId",), ("id",)),
        Field("EventCode", "str", ("EventCode",)),
        Field("Name", "str", ("Name",)),
        Field("Status", "str", ("Status",)),
        Field("StartDateTime", "dt", ("StartDateTime",), ("startdate",)),
        Field("EndDateTime", "dt", ("EndDateTime",), ("enddate",)),
        Field("Capacity", "int", ("Capacity",)),
        Field("Category", "str", ("Category", "EventCategoryId"), ("eventcategoryid",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
    )
    TOPICS = ("Annual Conference", "Chapter Meeting", "Webinar", "Board Retreat", "Gala")
    CATEGORIES = (("CONF", "Conference"), ("MEET", "Meeting"), ("WEB", "Webinar"))
    _ID = re.compile(r"EV(\d{7,})", re.IGNORECASE)

    def id_of(self, index: int) -> str:
        return f"EV{index + 1:07d}"

    def index_of(self, ident: str) -> int | None:
        found = self._ID.fullmatch(ident)
        return int(found.group(1)) - 1 if found else None

    def start(self, i: int) -> int:
        return self.stamp(i) + self.pick("start", i) % (180 * _DAY_MS)

    def generators(self) -> dict[str, Any]:
        return {
            "EventId": self.id_of,
            "EventCode": self.id_of,
            "Name": lambda i: f"{self.choice('topic', i, self.TOPICS)} {i + 1}",
            "Status": lambda i: "C" if self.pick("status", i) % 4 == 0 else "A",
            "StartDateTime": self.start,
            "EndDateTime": lambda i: self.start(i) + (1 + self.pick("days", i) % 3) * _DAY_MS,
            "Capacity": lambda i: (1 + self.pick("capacity", i) % 50) * 10,
            "Category": lambda i: self.choice("category", i, self.CATEGORIES)[0],
            "UpdatedOn": self.stamp,
            "CreatedOn": lambda i: self.stamp(i) - self.pick("age", i) % (30 * _DAY_MS),
        }

    def build(self, i: int) -> Record:
        g = self.gens
        category, label = self.choice("category", i, self.CATEGORIES)
        return {
            "$type": self.item_type,
            "EventId": self.id_of(i),
            "EventCode": self.id_of(i),
            "Name": g["Name"](i),
            "Description": "",
            "Status": g["Status"](i),
            "StartDateTime": format_local(g["StartDateTime"](i)),
            "EndDateTime": format_local(g["EndDateTime"](i)),
            "Capacity": g["Capacity"](i),
            "Category": {
                "$type": _EV + "EventCategoryData, Asi.Contracts",
                "EventCategoryId": category,
                "Description": label,
            },
            "Location": {"$type": _M + "LocationPartyAddressData, Asi.Contracts", "Name": ""},
            "AddGuests": True,
            "RegisterOthers": True,
            "Functions": collection(_EV + "EventFunctionDataCollection, Asi.Contracts", []),
            "RegistrationOptions": collection(
                _EV + "OptionEventFunctionDataCollection, Asi.Contracts", []
            ),
            "UpdateInformation": generated_update_info(g["CreatedOn"](i), self.stamp(i)),
        }

    def validate(self, body: Record) -> list[str]:
        errors = []
        if not isinstance(body.get("Name"), str) or not body["Name"].strip():
            errors.append("Name is required.")
        start = check_date(body, "StartDateTime", ("StartDateTime",), errors)
        end = check_date(body, "EndDateTime", ("EndDateTime",), errors)
        if start is not None and end is not None and end < start:
            errors.append("EndDateTime must not be before StartDateTime.")
        capacity = body.get("Capacity")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 0):
            errors.append("Capacity must be a whole number, zero or more.")
        return errors

    def prepare(self, body: Record, index: int, existing: Record | None, stamp: Stamp) -> Record:
        record = super().prepare(body, index, existing, stamp)
        record.setdefault("EventCode", record["EventId"])
        record.setdefault("Status", "A")
        return record

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        record["Capacity"] = int(record.get("Capacity") or 0) + 10
        return super().touch(record, salt, stamp)


class EventRegistrationSpec(EntitySpec):
    name = "EventRegistration"
    item_type = ASI.format("Events", "EventRegistrationData")
    list_type = _EV + "EventRegistrationData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET", "POST", "PUT"})
    id_key = "EventRegistrationId"
    fields = (
        Field("EventRegistrationId", "str", ("EventRegistrationId",), ("id",)),
        Field("EventId", "str", ("EventId",)),
        Field("PartyId", "str", ("PartyId",)),
        Field("RegistrationDate", "dt", ("RegistrationDate",)),
        Field("Status", "str", ("Status",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
    )

    def __init__(self, ctx: Context, party: PartySpec, event: EventSpec) -> None:
        self.party, self.event = party, event
        super().__init__(ctx)

    def generators(self) -> dict[str, Any]:
        size = max(self.ctx.size, 1)
        return {
            "EventRegistrationId": self.id_of,
            "EventId": lambda i: self.event.id_of(self.pick("event", i) % size),
            "PartyId": lambda i: self.party.id_of(self.pick("party", i) % size),
            "RegistrationDate": lambda i: self.stamp(i) - self.pick("reg", i) % (7 * _DAY_MS),
            "Status": lambda i: "Cancelled" if self.pick("status", i) % 10 == 0 else "Registered",
            "UpdatedOn": self.stamp,
            "CreatedOn": lambda i: self.gens["RegistrationDate"](i),
        }

    def build(self, i: int) -> Record:
        g = self.gens
        return {
            "$type": self.item_type,
            "EventRegistrationId": self.id_of(i),
            "EventId": g["EventId"](i),
            "PartyId": g["PartyId"](i),
            "RegistrationDate": format_local(g["RegistrationDate"](i)),
            "Status": g["Status"](i),
            "Functions": collection(
                _EV + "EventFunctionRegistrationDataCollection, Asi.Contracts", []
            ),
            "AdditionalAttributes": collection(GENERIC_PROPERTIES, []),
            "UpdateInformation": generated_update_info(g["CreatedOn"](i), self.stamp(i)),
        }

    def validate(self, body: Record) -> list[str]:
        errors = []
        for entity, key in (("Event", "EventId"), ("Party", "PartyId")):
            value = body.get(key)
            if not value:
                errors.append(f"{key} is required.")
            elif not self.exists(entity, value):
                errors.append(f"{entity} '{value}' does not exist.")
        check_date(body, "RegistrationDate", ("RegistrationDate",), errors)
        return errors

    def prepare(self, body: Record, index: int, existing: Record | None, stamp: Stamp) -> Record:
        record = super().prepare(body, index, existing, stamp)
        record.setdefault("RegistrationDate", stamp.text)
        record.setdefault("Status", "Registered")
        return record

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        record["Status"] = "Registered" if record.get("Status") == "Cancelled" else "Cancelled"
        return super().touch(record, salt, stamp)
