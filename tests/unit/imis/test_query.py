"""iMIS pure parts: config filters, site-local time across DST, pages and unwrapping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from yarl import URL

from service.config import ConfigProblems, Settings
from service.connectors.imis_push import typed_body, validation_message
from service.connectors.imis_query import (
    cursor_text,
    local_to_utc,
    page_limit,
    parse_cursor,
    parse_filter,
    parse_page,
    unwrap,
    utc_to_local,
    zone,
)
from service.engine.runtime import check_streams
from service.errors import ParseError


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("ge:2024-05-01", "ge:2024-05-01"),
        (">=:2024-05-01", "ge:2024-05-01"),
        ("GreaterThanOrEqual:5", "ge:5"),
        ("!=:x", "ne:x"),
        ("between:a|b", "between:a|b"),
        ("In:A|B|C", "in:A|B|C"),
        ("contains:smith", "contains:smith"),
        ("startsWith:Sm", "startsWith:Sm"),
        ("isEmpty:", "isEmpty:"),
        ("!empty:", "notEmpty:"),
        ("eq:a:b", "eq:a:b"),
    ],
)
def test_filters_take_every_documented_operator_and_alias(raw: str, want: str) -> None:
    assert parse_filter("LastName", raw) == ("LastName", want)


@pytest.mark.parametrize(
    "raw",
    ["like:smith", "smith", "eq:a&limit=1", "eq:x=y", "eq:a#b", "between:a", "in:", "isEmpty:x"],
)
def test_bad_filters_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="filter"):
        parse_filter("LastName", raw)


@pytest.mark.parametrize("prop", ["limit", "Offset", "a&b", "x=y", "", "QueryName"])
def test_filter_property_must_be_a_plain_name(prop: str) -> None:
    with pytest.raises(ValueError, match="plain property name"):
        parse_filter(prop, "eq:1")


def test_values_are_url_encoded_not_split() -> None:
    url = URL("http://x/api/Party").with_query([("lastName", "contains:o'brien+co|x y")])
    assert url.query["lastName"] == "contains:o'brien+co|x y"
    assert len(url.query) == 1


def test_config_error_names_the_key() -> None:
    settings = Settings(
        vendors={
            "imis": {
                "base_url": "http://127.0.0.1:1/imis",
                "auth": {"kind": "password_grant", "username": "u", "password": "p"},
                "streams": {
                    "Party": {"options": {"filters": {"lastName": "like:smith"}}},
                    "q": {"options": {"query": "$/Q", "key": "ID", "filters": {"a": "eq:1&x=2"}}},
                },
            }
        }
    )
    with pytest.raises(ConfigProblems) as caught:
        check_streams(settings)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "vendors.imis.streams.Party.options.filters" in text
    assert "like" in text
    assert "vendors.imis.streams.q.options.filters" in text


def test_site_local_time_to_utc_across_dst() -> None:
    ny = zone("America/New_York")
    # Before and after the spring change (2024-03-10 02:00 → 03:00 local).
    assert local_to_utc("2024-03-10T01:30:00", ny) == datetime(2024, 3, 10, 6, 30, tzinfo=UTC)
    assert local_to_utc("2024-03-10T03:30:00", ny) == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)
    # The repeated hour in the autumn: the earlier instant (a re-read, never a skip).
    assert local_to_utc("2024-11-03T01:30:00", ny) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert local_to_utc("2013-08-22T17:30:50.15", zone("UTC")) == datetime(
        2013, 8, 22, 17, 30, 50, 150000, tzinfo=UTC
    )
    start = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    assert utc_to_local(start, ny) == "2024-07-01T08:00:00.000"
    assert utc_to_local(datetime(2024, 1, 1, 12, 0, tzinfo=UTC), ny) == "2024-01-01T07:00:00.000"


def test_cursor_text_round_trips_and_sorts() -> None:
    a = datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
    b = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert parse_cursor(cursor_text(a)) == a
    assert cursor_text(a) < cursor_text(b)
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")
    with pytest.raises(ParseError):
        local_to_utc("yesterday", zone("UTC"))


PAGE: dict[str, Any] = {
    "$type": "Asi.Soa.Core.DataContracts.PagedResult`1[[X, Asi.Contracts]], Asi.Contracts",
    "Items": {
        "$type": "System.Collections.Generic.List`1[[X]], mscorlib",
        "$values": [{"$type": "X", "PartyId": "101"}],
    },
    "Offset": 0,
    "Limit": 500,
    "Count": 1,
    "TotalCount": 5306,
    "NextPageLink": None,
    "HasNext": True,
    "NextOffset": 1,
}


def test_parse_page() -> None:
    page = parse_page(PAGE, "Party")
    assert page.total == 5306
    assert page.next == "1"
    assert page.items[0]["PartyId"] == "101"
    assert parse_page({**PAGE, "HasNext": False}, "Party").next is None
    assert page_limit(PAGE, 1000) == 500
    assert page_limit({}, 100) == 100
    with pytest.raises(ParseError):
        parse_page({"Items": {"$values": [1]}}, "Party")
    with pytest.raises(ParseError):
        parse_page([], "Party")


def test_unwrap_gives_plain_json() -> None:
    raw = {
        "$type": "GenericEntityData",
        "Properties": {
            "$type": "GenericPropertyDataCollection",
            "$values": [
                {
                    "$type": "GenericPropertyData",
                    "Name": "SEQN",
                    "Value": {"$type": "System.Int32", "$value": 7},
                },
                {"$type": "GenericPropertyData", "Name": "PartyId", "Value": "101"},
            ],
        },
        "Emails": {"$type": "EmailDataCollection", "$values": [{"$type": "E", "Address": "a@b"}]},
        "Empty": {"$type": "C", "$values": []},
    }
    assert unwrap(raw) == {
        "Properties": {"SEQN": 7, "PartyId": "101"},
        "Emails": [{"Address": "a@b"}],
        "Empty": [],
    }
    deep: Any = 1
    for _ in range(5000):
        deep = {"$type": "x", "a": deep}
    assert unwrap(deep) is not None  # no recursion limit


def test_typed_body_and_validation_message() -> None:
    body = typed_body("Activity", {"Properties": {"ACTIVITY_TYPE": "NOTE"}})
    assert body["$type"].endswith("GenericEntityData, Asi.Contracts")
    assert body["Properties"]["$values"][0]["Name"] == "ACTIVITY_TYPE"
    party = typed_body("Party", {"Emails": [{"Address": "a@b"}]})
    assert party["Emails"]["$values"] == [{"Address": "a@b"}]
    assert "$type" in party["Emails"]
    text = (
        '{"Message": "Validation failed.", "ValidationResults": {"$type": "V", "Errors": '
        '{"$type": "C", "$values": [{"$type": "R", "Message": "Bad email."}]}}}'
    )
    assert validation_message(text) == "Bad email."
    assert validation_message("oops") == "oops"
