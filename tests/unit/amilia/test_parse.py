"""Pure Amilia parsing and policy on recorded page shapes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from service.connectors.amilia import (
    parse_v2,
    parse_v3,
    unstable,
    validate_row,
    window_start,
)
from service.connectors.paging import Page
from service.errors import ParseError

NEXT = "http://127.0.0.1:1/amilia/api/v3/en/org/8008/accounts?perPage=2&page=2"


def test_v3_page_with_total_and_next() -> None:
    page = parse_v3({"Items": [{"Id": 1}, {"Id": 2}], "Paging": {"TotalCount": 5, "Next": NEXT}})
    assert (page.items, page.total, page.next) == ([{"Id": 1}, {"Id": 2}], 5, NEXT)


def test_v3_last_page_and_bare_array() -> None:
    last = parse_v3({"Items": [], "Paging": {"TotalCount": 0, "Next": None}})
    assert (last.items, last.total, last.next) == ([], 0, None)
    bare = parse_v3([{"Id": 3}])
    assert (bare.items, bare.total, bare.next) == ([{"Id": 3}], None, None)


@pytest.mark.parametrize(
    "body",
    [{"Paging": {}}, {"Items": {}}, {"Items": [1]}, {"Items": [], "Paging": []}, "x", None],
)
def test_v3_shapes_we_do_not_understand(body: object) -> None:
    with pytest.raises(ParseError):
        parse_v3(body)


def test_v2_page() -> None:
    page = parse_v2({"Items": [{"Id": 7}], "Page": {"NextId": 8, "Next": "http://x/?idStart=8"}})
    assert (page.items, page.next, page.total) == ([{"Id": 7}], "http://x/?idStart=8", None)
    assert parse_v2({"Items": [], "Page": {"NextId": None, "Next": None}}).next is None
    with pytest.raises(ParseError):
        parse_v2({"Items": [], "Paging": {}} | {"Items": None})


def pages(*ids: list[int], total: int = 6) -> list[Page[dict[str, int]]]:
    return [Page([{"Id": i} for i in chunk], total=total) for chunk in ids]


def test_stable_walk() -> None:
    assert not unstable(pages([1, 2], [3, 4], [5, 6]), 6, "Id", "accounts")


def test_changed_total_or_overlap_is_a_shift() -> None:
    moved = [*pages([1, 2], [3, 4]), Page([{"Id": 5}], total=5)]
    assert unstable(moved, 6, "Id", "accounts")
    assert unstable(pages([1, 2], [2, 3], [4, 5]), 6, "Id", "accounts")  # an insertion


def test_item_without_integer_id() -> None:
    with pytest.raises(ParseError):
        unstable([Page([{"Id": "x"}], total=1)], 1, "Id", "accounts")


def start(saved: str | None, since: datetime | None = None, full: bool = False) -> date:
    return window_start(saved, overlap_days=3, since=since, full=full, first=date(2000, 1, 1))


def test_window_start_overlap_since_full_and_floor() -> None:
    saved = "2026-12-02T10:27:32"
    assert start(None) == date(2000, 1, 1)
    assert start(saved) == date(2026, 11, 29)
    assert start(saved, since=datetime(2026, 6, 1, tzinfo=UTC)) == date(2026, 6, 1)
    assert start(saved, full=True) == date(2000, 1, 1)
    assert start("1999-01-02") == date(2000, 1, 1)


def test_push_rows_checked_before_sending() -> None:
    assert validate_row("accounts", {"Owners": []})
    assert validate_row("accounts", {"Owners": [{"FirstName": "A"}]})
    assert validate_row("accounts", {"Owners": [{"Email": "a@b.org"}]}) is None
    assert validate_row("persons", {"FirstName": "x"})
    assert validate_row("persons", {"Id": 3000000}) is None
    assert validate_row("programs", {})
