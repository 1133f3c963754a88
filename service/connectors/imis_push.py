"""iMIS push bodies: plain staged-style rows → the ``$type``-tagged JSON iMIS requires, and
the vendor's validation messages out of a 400/422 body."""

from __future__ import annotations

import json

from service.connectors.imis_query import unwrap
from service.models import JSON

# Push: entity → (.NET $type of the body, key property for PUT).
PUSH: dict[str, tuple[str, str]] = {
    "Party": ("Asi.Soa.Membership.DataContracts.PersonData, Asi.Contracts", "PartyId"),
    "Activity": ("Asi.Soa.Core.DataContracts.GenericEntityData, Asi.Contracts", "SEQN"),
}
_CORE = "Asi.Soa.Core.DataContracts."
_M = "Asi.Soa.Membership.DataContracts."
COLLECTIONS = {
    "Emails": "EmailData",
    "Phones": "PhoneData",
    "Addresses": "FullAddressData",
    "AlternateIds": "AlternateIdData",
    "AdditionalAttributes": "GenericPropertyData",
}


def typed_body(entity: str, payload: JSON) -> JSON:
    """A plain row → the ``$type``-tagged body iMIS requires (typed rows pass as they are)."""
    body = dict(payload)
    body.setdefault("$type", PUSH[entity][0])
    for name, value in body.items():
        if isinstance(value, list):  # a plain collection → the .NET-typed one
            item = COLLECTIONS.get(name, "GenericEntityData")
            body[name] = {"$type": f"{_M}{item}Collection, Asi.Contracts", "$values": value}
    props = body.get("Properties")
    if isinstance(props, dict) and "$values" not in props:
        body["Properties"] = {
            "$type": _CORE + "GenericPropertyDataCollection, Asi.Contracts",
            "$values": [
                {"$type": _CORE + "GenericPropertyData, Asi.Contracts", "Name": k, "Value": v}
                for k, v in props.items()
            ],
        }
    return body


def validation_message(text: str) -> str:
    """The vendor's validation messages from a 400/422 body, or its start."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or "rejected by iMIS"
    if not isinstance(body, dict):
        return text[:300]
    errors = unwrap(body.get("ValidationResults") or {}).get("Errors") or []
    messages = [str(e.get("Message")) for e in errors if isinstance(e, dict) and e.get("Message")]
    return "; ".join(messages) or str(body.get("Message") or "rejected by iMIS")[:300]
