"""The other iMIS contracts the sync needs: Activity, Event, EventRegistration, GroupMember.

Activity and GroupMember are defined here; Event and EventRegistration live in
``sandbox.imis.event`` and are re-exported. Shapes follow the Advsol Postman collection
(``GenericEntityData`` for Activity, ``GroupMemberData``). GroupMember carries
``UpdateInformation`` as Party does; Activity has no modification stamp (its
``TRANSACTION_DATE`` is when the activity happened), so a sync walks it in full.
"""

from __future__ import annotations

from typing import Any

from sandbox.data import Record
from sandbox.imis.event import EventRegistrationSpec, EventSpec
from sandbox.imis.filter import format_local
from sandbox.imis.party import PartySpec, party_status
from sandbox.imis.records import (
    ASI,
    GENERIC_PROPERTIES,
    GENERIC_PROPERTY,
    Context,
    EntitySpec,
    Field,
    GuidIds,
    Stamp,
    boxed,
    check_date,
    collection,
    extract,
    generated_update_info,
    identity,
    prop_path,
    set_path,
)

__all__ = [
    "GENERIC_ENTITY",
    "ActivitySpec",
    "EventRegistrationSpec",
    "EventSpec",
    "GroupMemberSpec",
]

GENERIC_ENTITY = ASI.format("Core", "GenericEntityData")
_M = "Asi.Soa.Membership.DataContracts."
_DAY_MS = 86_400_000


class ActivitySpec(EntitySpec):
    name = "Activity"
    item_type = GENERIC_ENTITY
    list_type = "Asi.Soa.Core.DataContracts.GenericEntityData"
    accepts = frozenset({GENERIC_ENTITY})
    id_key = "SEQN"
    updated_key = None
    monotonic_key = "TRANSACTION_DATE"
    fields = (
        Field("SEQN", "int", prop_path("SEQN"), ("activityid",)),
        Field("PartyId", "str", prop_path("PartyId")),
        Field("ACTIVITY_TYPE", "str", prop_path("ACTIVITY_TYPE"), ("activitytype",)),
        Field("TRANSACTION_DATE", "dt", prop_path("TRANSACTION_DATE"), ("transactiondate",)),
        Field("DESCRIPTION", "str", prop_path("DESCRIPTION"), ("description",)),
        Field("AMOUNT", "num", prop_path("AMOUNT"), ("amount",)),
    )
    TYPES = ("MEETING", "ORDER", "DUES", "EMAIL", "NOTE", "ONLINEAPP")

    def __init__(self, ctx: Context, party: PartySpec) -> None:
        self.party = party
        super().__init__(ctx)

    def generators(self) -> dict[str, Any]:
        return {
            "SEQN": lambda i: i + 1,
            "PartyId": lambda i: self.party.id_of(self.pick("party", i) % max(self.ctx.size, 1)),
            "ACTIVITY_TYPE": lambda i: self.choice("type", i, self.TYPES),
            "TRANSACTION_DATE": self.stamp,
            "DESCRIPTION": lambda i: f"{self.choice('type', i, self.TYPES).title()} {i + 1}",
            "AMOUNT": lambda i: (self.pick("amount", i) % 50000) / 100,
        }

    def build(self, i: int) -> Record:
        g = self.gens
        party_id = g["PartyId"](i)
        props = [
            ("PartyId", party_id),
            ("SEQN", boxed("System.Int32", i + 1)),
            ("ACTIVITY_TYPE", g["ACTIVITY_TYPE"](i)),
            ("TRANSACTION_DATE", boxed("System.DateTime", format_local(self.stamp(i)))),
            ("DESCRIPTION", g["DESCRIPTION"](i)),
            ("AMOUNT", boxed("System.Decimal", g["AMOUNT"](i))),
        ]
        return {
            "$type": GENERIC_ENTITY,
            "EntityTypeName": "Activity",
            "PrimaryParentEntityTypeName": "Party",
            "Identity": identity("Activity", str(i + 1)),
            "PrimaryParentIdentity": identity("Party", party_id),
            "Properties": collection(
                GENERIC_PROPERTIES,
                [{"$type": GENERIC_PROPERTY, "Name": n, "Value": v} for n, v in props],
            ),
        }

    def validate(self, body: Record) -> list[str]:
        props = body.get("Properties")
        if not isinstance(props, dict) or not isinstance(props.get("$values"), list):
            return ["Properties must be a GenericPropertyDataCollection with $values."]
        errors = []
        if not extract(body, prop_path("ACTIVITY_TYPE")):
            errors.append("ACTIVITY_TYPE is required.")
        party = extract(body, prop_path("PartyId"))
        if not party:
            errors.append("PartyId is required.")
        elif not self.exists("Party", party):
            errors.append(f"Party '{party}' does not exist.")
        amount = extract(body, prop_path("AMOUNT"))
        if amount is not None and not isinstance(amount, int | float):
            try:
                float(amount)
            except (TypeError, ValueError):
                errors.append(f"AMOUNT '{amount}' is not a number.")
        check_date(body, "TRANSACTION_DATE", prop_path("TRANSACTION_DATE"), errors)
        return errors

    def prepare(self, body: Record, index: int, existing: Record | None, stamp: Stamp) -> Record:
        record = super().prepare(body, index, existing, stamp)
        set_path(record, prop_path("SEQN"), boxed("System.Int32", index + 1))
        if extract(record, prop_path("TRANSACTION_DATE")) is None:
            set_path(record, prop_path("TRANSACTION_DATE"), boxed("System.DateTime", stamp.text))
        record["EntityTypeName"] = "Activity"
        record["PrimaryParentEntityTypeName"] = "Party"
        record["Identity"] = identity("Activity", self.id_of(index))
        record["PrimaryParentIdentity"] = identity(
            "Party", str(extract(record, prop_path("PartyId")))
        )
        return record

    def fresh(self, index: int, stamp: Stamp) -> Record:
        record = self.build(index)
        set_path(record, prop_path("TRANSACTION_DATE"), boxed("System.DateTime", stamp.text))
        return self.prepare(record, index, None, stamp)

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        set_path(record, prop_path("DESCRIPTION"), f"Follow-up {salt % 1000}")
        set_path(record, prop_path("AMOUNT"), boxed("System.Decimal", (salt % 50000) / 100))
        return record


class GroupMemberSpec(GuidIds, EntitySpec):
    name = "GroupMember"
    item_type = ASI.format("Membership", "GroupMemberData")
    list_type = _M + "GroupMemberData"
    accepts = frozenset({item_type})
    methods = frozenset({"GET", "POST", "PUT"})
    id_key = "GroupMemberId"
    fields = (
        Field("GroupMemberId", "str", ("GroupMemberId",), ("id",)),
        Field("PartyId", "str", ("Party", "PartyId")),
        Field("GroupId", "str", ("Group", "GroupId")),
        Field("IsActive", "bool", ("IsActive",)),
        Field("JoinDate", "dt", ("JoinDate",)),
        Field("UpdatedOn", "dt", ("UpdateInformation", "UpdatedOn")),
        Field("CreatedOn", "dt", ("UpdateInformation", "CreatedOn")),
    )
    GROUPS = (
        ("BOARD", "Board of Directors"),
        ("CHAPTER-EAST", "East Chapter"),
        ("CHAPTER-WEST", "West Chapter"),
        ("COMMITTEE-FIN", "Finance Committee"),
        ("VOLUNTEERS", "Volunteers"),
    )

    def __init__(self, ctx: Context, party: PartySpec) -> None:
        self.party = party
        super().__init__(ctx)

    def party_index(self, i: int) -> int:
        return self.pick("party", i) % max(self.ctx.size, 1)

    def generators(self) -> dict[str, Any]:
        return {
            "GroupMemberId": self.id_of,
            "PartyId": lambda i: self.party.id_of(self.party_index(i)),
            "GroupId": lambda i: self.choice("group", i, self.GROUPS)[0],
            "IsActive": lambda i: self.pick("active", i) % 8 != 0,
            "JoinDate": lambda i: self.stamp(i) - self.pick("join", i) % (720 * _DAY_MS),
            "UpdatedOn": self.stamp,
            "CreatedOn": lambda i: self.gens["JoinDate"](i),
        }

    def build(self, i: int) -> Record:
        g = self.gens
        j = self.party_index(i)
        party, party_id = self.party, self.party.id_of(j)
        group_id, group_name = self.choice("group", i, self.GROUPS)
        join = format_local(g["JoinDate"](i))
        active = g["IsActive"](i)
        return {
            "$type": self.item_type,
            "GroupMemberId": self.id_of(i),
            "MembershipDetails": collection(
                _M + "GroupMemberDetailDataCollection, Asi.Contracts",
                [
                    {
                        "$type": _M + "GroupMemberDetailData, Asi.Contracts",
                        "GroupMemberDetailId": f"{group_id}:{party_id}",
                        "EffectiveDate": join,
                        "IsActive": active,
                        "Role": {
                            "$type": _M + "GroupRoleData, Asi.Contracts",
                            "RoleId": "MEMBER",
                            "Name": "Member",
                        },
                    }
                ],
            ),
            "Group": {
                "$type": _M + "GroupSummaryData, Asi.Contracts",
                "GroupId": group_id,
                "Name": group_name,
            },
            "Party": {
                "$type": _M + "PartySummaryData, Asi.Contracts",
                "PartyId": party_id,
                "Id": party_id,
                "Email": party.email(j),
                "Status": party_status("A"),
                "Name": party.display_name(j),
                "Sort": party.sort_name(j),
            },
            "JoinDate": join,
            "IsActive": active,
            "UpdateInformation": generated_update_info(g["CreatedOn"](i), self.stamp(i)),
        }

    def validate(self, body: Record) -> list[str]:
        errors = []
        if not extract(body, ("Group", "GroupId")):
            errors.append("Group.GroupId is required.")
        party = extract(body, ("Party", "PartyId"))
        if not party:
            errors.append("Party.PartyId is required.")
        elif not self.exists("Party", party):
            errors.append(f"Party '{party}' does not exist.")
        check_date(body, "JoinDate", ("JoinDate",), errors)
        return errors

    def touch(self, record: Record, salt: int, stamp: Stamp) -> Record:
        record["IsActive"] = not record.get("IsActive", True)
        return super().touch(record, salt, stamp)
