"""Aimsio's pure parts: listing stubs, change detection, push validation, import results."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.connectors.aimsio import (
    Stub,
    changed_stubs,
    parse_import_result,
    parse_stubs,
    validate_row,
)
from service.errors import ParseError

# As the vendor documents it: a bare array of {dtype, guid|id, updatedAt}.
LISTING = [
    {
        "dtype": "JobOrder",
        "guid": "4b3f8eef-4307-4068-ba88-9ef491945122",
        "updatedAt": 1746815305412,
    },
    {"dtype": "Invoice", "id": 17, "updatedAt": 1746815305999},
]
RESULT = {
    "dtype": "IntegrationImportResult",
    "id": 0,
    "guid": "4b3f8eef-4307-4068-ba88-9ef491945122",
    "importConfiguration": None,
    "numberOfEntitiesCreated": 1,
    "numberOfEntitiesEdited": 0,
    "numberOfEntitiesEditedWithErrors": 0,
    "numberOfEntitiesNotImportedDueToErrors": 1,
    "extra": None,
    "notices": [{"entityKey": "b@x", "message": "Unknown role name 'X'", "severity": "ERROR"}],
    "updatedAt": 1746815305412,
    "importResultType": None,
    "numberOfEntitiesImported": 1,
}


def user(**over: Any) -> dict[str, Any]:
    row = {
        "userName": "a@x",
        "userFirstName": "A",
        "userLastName": "B",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
    }
    row.update(over)
    return {k: v for k, v in row.items() if v is not None}


def test_parse_stubs_takes_guid_or_id() -> None:
    assert parse_stubs("X", LISTING) == [
        Stub("4b3f8eef-4307-4068-ba88-9ef491945122", 1746815305412),
        Stub("17", 1746815305999),
    ]
    assert parse_stubs("X", []) == []


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        [1, 2],
        [{"dtype": "User", "updatedAt": 1}],
        [{"guid": "g", "updatedAt": "1746815305412"}],
        [{"guid": "g", "updatedAt": True}],
        [{"guid": "g"}],
    ],
)
def test_parse_stubs_refuses_shapes_it_does_not_know(body: Any) -> None:
    with pytest.raises(ParseError):
        parse_stubs("User", body)


def test_changed_stubs_compares_updated_at_as_integers() -> None:
    stubs = [Stub("a", 10), Stub("b", 20), Stub("c", 30), Stub("d", 40)]
    staged = {"a": "10", "b": "19", "c": None, "x": "5"}
    assert [s.key for s in changed_stubs(stubs, staged)] == ["b", "c", "d"]
    assert changed_stubs(stubs, {"a": "010"}) == stubs[1:]  # "010" is 10


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 2**53), max_size=30))
def test_nothing_changes_against_its_own_cursors(stamps: dict[str, int]) -> None:
    stubs = [Stub(k, v) for k, v in stamps.items()]
    assert changed_stubs(stubs, {k: str(v) for k, v in stamps.items()}) == []
    assert changed_stubs(stubs, {}) == stubs


@pytest.mark.parametrize(
    ("entity", "row", "reason"),
    [
        ("User", user(), None),
        ("User", user(userRoleNames=None, userRoleGuids=["r-1"]), None),
        ("User", user(userShortCode="ABC"), None),
        ("User", user(userShortCode="ABCD"), "userShortCode"),
        ("User", user(userRoleNames=None), "userRoleNames or userRoleGuids"),
        ("User", user(userRoleNames=[]), "userRoleNames or userRoleGuids"),
        ("User", user(userLastName=None), "userLastName"),
        ("User", user(userLastName=""), "userLastName"),
        ("User", user(userIsActive="yes"), "userIsActive"),
        ("Invoice", {"invoiceNumber": "1"}, "does not accept pushes"),
        (
            "Employee",
            {
                "employeeCode": "E1",
                "employmentType": "DIRECT_HIRE",
                "employeeStatusUname": "active_employee_status",
                "employeeFirstName": "A",
                "employeeLastName": "B",
                "employeeTradeCode": "LAB",
            },
            None,
        ),
        (
            "Employee",
            {
                "employeeCode": "E1",
                "employmentType": "CONTRACTOR",
                "employeeStatusUname": "active_employee_status",
                "employeeFirstName": "A",
                "employeeLastName": "B",
                "employeeTradeCode": "LAB",
            },
            "employmentType",
        ),
    ],
)
def test_validate_row(entity: str, row: dict[str, Any], reason: str | None) -> None:
    got = validate_row(entity, row)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


def test_import_result_maps_notices_to_rows() -> None:
    outcomes = parse_import_result("User", ["a@x", "b@x"], RESULT)
    assert [(o.record_key, o.status, o.message) for o in outcomes] == [
        ("a@x", "created", None),
        ("b@x", "rejected", "Unknown role name 'X'"),
    ]


def test_import_result_warnings_do_not_reject() -> None:
    body = {**RESULT, "numberOfEntitiesNotImportedDueToErrors": 0, "notices": [
        {"entityKey": "b@x", "message": "status ignored", "severity": "WARNING"}
    ], "numberOfEntitiesCreated": 0, "numberOfEntitiesEdited": 2}  # fmt: skip
    assert {o.status for o in parse_import_result("User", ["a@x", "b@x"], body)} == {"edited"}


def test_unattributed_rejections_are_retried_not_guessed() -> None:
    body = {**RESULT, "notices": []}
    outcomes = parse_import_result("User", ["a@x", "b@x"], body)
    assert {o.status for o in outcomes} == {"retry"}


def test_import_result_shape_is_checked() -> None:
    with pytest.raises(ParseError):
        parse_import_result("User", ["a@x"], {"dtype": "Something"})
