"""IQA queries: ``GET /api/iqa?QueryName=$/Path&parameter=…`` (also ``/api/query``).

A query is a projection of one table: each row an ``ExpandoObject`` with flat keys, in a
``PagedResult``. ``parameter`` values fill the query's declared prompts in order (each
``operator:value`` like a filter); other query parameters filter on the projected columns
(named as the table's filterable properties), so ``limit``/``offset``/``orderby`` and every
operator work as on ``/api/{Entity}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.data import Record
from sandbox.imis.filter import Filter, FilterError, paged_result, parse_filter, parse_orderby
from sandbox.imis.records import PathPart, extract
from sandbox.imis.store import Table

EXPANDO = "System.Dynamic.ExpandoObject, System.Core"
RESERVED = frozenset({"limit", "offset", "orderby", "queryname", "parameter"})


@dataclass(frozen=True)
class Query:
    path: str  # "$/ContactManagement/DefaultSystemQueries/Members"
    table: str  # the entity it reads
    columns: Mapping[str, tuple[PathPart, ...]]  # column → path in the entity's record
    prompts: tuple[str, ...] = ()  # properties the positional parameters filter
    base: tuple[Filter, ...] = ()

    def row(self, record: Record) -> Record:
        out: Record = {"$type": EXPANDO}
        for column, path in self.columns.items():
            out[column] = extract(record, path)
        return out


QUERIES: tuple[Query, ...] = (
    Query(
        "$/ContactManagement/DefaultSystemQueries/Members",
        "Party",
        {
            "ID": ("PartyId",),
            "FullName": ("Name",),
            "LastName": ("PersonName", "LastName"),
            "Email": ("Emails", "$values", 0, "Address"),
            "City": ("Addresses", "$values", 0, "Address", "CityName"),
            "Status": ("Status", "PartyStatusId"),
            "LastUpdated": ("UpdateInformation", "UpdatedOn"),
        },
        prompts=("LastName",),
    ),
    Query(
        "$/EventManagement/Registrations",
        "EventRegistration",
        {
            "RegistrationID": ("EventRegistrationId",),
            "EventID": ("EventId",),
            "PartyID": ("PartyId",),
            "Status": ("Status",),
            "LastUpdated": ("UpdateInformation", "UpdatedOn"),
        },
        prompts=("EventId",),
    ),
)
# Projected column → the table property it filters/sorts as.
ALIASES = {"id": "PartyId", "fullname": "Name", "city": "CityName", "lastupdated": "UpdatedOn"}


def find_query(name: str) -> Query | None:
    wanted = name.strip().casefold()
    return next((q for q in QUERIES if q.path.casefold() == wanted), None)


def run_query(
    query: Query,
    table: Table,
    params: list[tuple[str, str]],
    paging: Callable[[str | None, str | None], tuple[int, int]],
) -> dict[str, Any]:
    """The ``PagedResult`` of one IQA request (``params``: the query string, in order)."""
    filters = list(query.base)
    prompts = iter(query.prompts)
    reserved: dict[str, str] = {}
    for key, raw in params:
        folded = key.casefold()
        if folded == "parameter":
            prop = next(prompts, None)
            if prop is None:
                raise FilterError(f"query '{query.path}' takes {len(query.prompts)} parameter(s)")
            filters.append(parse_filter(prop, raw))
        elif folded in RESERVED:
            reserved.setdefault(folded, raw)
        else:
            filters.append(parse_filter(ALIASES.get(folded, key), raw))
    limit, offset = paging(reserved.get("limit"), reserved.get("offset"))
    order = None
    if reserved.get("orderby"):
        name, desc = parse_orderby(reserved["orderby"])
        order = (ALIASES.get(name.casefold(), name), desc)
    matched = table.query(filters, order)
    rows = [query.row(r) for r in map(table.get, matched[offset : offset + limit]) if r]
    return paged_result("System.Dynamic.ExpandoObject", rows, offset, limit, len(matched))
