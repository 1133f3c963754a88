"""Aqua parsing on recorded bodies: job answers, and exports fed in arbitrary pieces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.connectors.aqua import KeyHashes
from service.connectors.aqua_parse import (
    CsvRows,
    JsonRows,
    excel_rows,
    parse_job,
    parse_status,
    response_links,
    row_key,
)
from service.errors import ParseError

CSV = (
    "\ufeffOrder No,Customer Name,Note\r\n"
    'SO1,"Blue ""The Label"", Inc.","two\r\nlines"\r\n'
    "SO2,Café Mode,\r\n"
    'SO3,"O\'Neil & Sons, Ltd.",x'  # no final line break
).encode()
ROWS = [
    {"Order No": "SO1", "Customer Name": 'Blue "The Label", Inc.', "Note": "two\r\nlines"},
    {"Order No": "SO2", "Customer Name": "Café Mode", "Note": ""},
    {"Order No": "SO3", "Customer Name": "O'Neil & Sons, Ltd.", "Note": "x"},
]


def feed_all(parser: Any, body: bytes, step: int) -> list[dict[str, Any]]:
    out = []
    for i in range(0, len(body), step):
        out.extend(parser.feed(body[i : i + step]))
    out.extend(parser.close())
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_csv_in_any_pieces(step: int) -> None:
    assert feed_all(CsvRows(("Order No",)), CSV, step) == ROWS


def test_csv_hands_out_a_record_only_once_its_line_ended() -> None:
    parser = CsvRows()
    assert parser.feed(b"a,b\r\n1,2") == []  # "1,2" may still grow: "1,23"
    assert parser.feed(b"3\r\n") == [{"a": "1", "b": "23"}]


def test_csv_cut_inside_a_row_or_a_quote_is_an_error() -> None:
    parser = CsvRows()
    parser.feed(b"a,b,c\r\n1,2,3\r\n4,5")
    with pytest.raises(ParseError, match="has 2 fields, the header 3"):
        parser.close()
    parser = CsvRows()
    parser.feed(b'a,b\r\n1,"unfinished\r\n')
    with pytest.raises(ParseError, match="inside a quoted field"):
        parser.close()


def test_csv_header_problems() -> None:
    with pytest.raises(ParseError, match="no header"):
        CsvRows().close()
    with pytest.raises(ParseError, match=r"key column\(s\) \['Id'\] not in the export"):
        CsvRows(("Id",)).feed(b"a,b\r\n")
    with pytest.raises(ParseError, match="not UTF-8"):
        CsvRows().feed(b"a,b\r\n\xff\xfe,1\r\n")


JSON_OBJECTS = json.dumps(ROWS, ensure_ascii=False).encode()
JSON_ARRAYS = json.dumps(
    [list(ROWS[0])] + [list(r.values()) for r in ROWS], ensure_ascii=False
).encode()


@pytest.mark.parametrize("body", [JSON_OBJECTS, JSON_ARRAYS], ids=["objects", "arrays"])
@pytest.mark.parametrize("step", [1, 5, 64, 10_000])
def test_json_in_any_pieces(body: bytes, step: int) -> None:
    assert feed_all(JsonRows(("Order No",)), body, step) == ROWS


def test_json_empty_and_typed() -> None:
    assert feed_all(JsonRows(), b" [ ] ", 1) == []
    assert feed_all(JsonRows(), b'[{"n": 12, "f": 1.5, "z": null}]', 3) == [
        {"n": 12, "f": 1.5, "z": None}
    ]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'[{"a":1},<!-- not json -->{"a":2}]', "malformed JSON export after 1 rows"),
        (b'[{"a":1},{"a":', "malformed JSON export after 1 rows"),
        (b'[{"a":1}', "truncated"),
        (b'{"a":1}', "not a JSON array"),
        (b'[{"a":1}] x', "trailing data"),
        (b"[1, 2]", "a row is not an object"),
        (b'[["a","b"],[1]]', "does not match the header"),
    ],
)
def test_json_problems(body: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        feed_all(JsonRows(), body, 4)


def test_excel_rows_pad_skip_and_convert() -> None:
    import datetime as dt

    sheet = [
        ("Style", "Price", None),
        ("ST-1", 1.5, None),
        (None, None, None),
        ("ST-2",),
        ("ST-3", dt.datetime(2025, 1, 2, 3, 4, 5)),
    ]
    assert list(excel_rows(iter(sheet), ("Style",))) == [
        {"Style": "ST-1", "Price": 1.5},
        {"Style": "ST-2", "Price": None},
        {"Style": "ST-3", "Price": "2025-01-02T03:04:05"},
    ]


STATUS = {
    "@odata.context": "https://x/$metadata#backgroundjob",
    "value": [
        {
            "jobID": "j-1",
            "jobStatus": "Completed",
            "jobStatusText": "done",
            "publishLink": None,
            "canReRun": "Yes",
            "response": json.dumps([{"documentName": "x.csv", "DownloadLink": "https://dl/1"}]),
        }
    ],
}


def test_status_reads_jobID_and_the_link_inside_the_response_string() -> None:
    info = parse_status(STATUS, "j-1")
    assert info is not None
    assert (info.job_id, info.status, info.publish_link, info.can_rerun) == (
        "j-1",
        "completed",
        "https://dl/1",
        True,
    )
    assert parse_status({"value": []}, "j-1") is None
    single = parse_status({"jobId": "j-2", "jobStatus": "Inprogress"}, "j-2")
    assert single is not None
    assert single.status == "inprogress"


def test_job_answers() -> None:
    info = parse_job(
        {
            "jobId": "j",
            "jobStatus": "Queued",
            "publishLink": "https://l",
            "publishLinkAccessScope": "PUBLIC",
        },
        what="export",
    )
    assert (info.job_id, info.status, info.publish_link) == ("j", "queued", "https://l")
    with pytest.raises(ParseError, match="no jobId/jobStatus"):
        parse_job({"message": "x"}, what="export")
    assert response_links("not json") == []
    assert response_links({"DownloadLink": "https://a"}) == ["https://a"]


def test_keys() -> None:
    row = {"Order No": "SO1", "Line": 2, "x": "y"}
    assert row_key(row, ("Order No", "Line")) == "SO1|2"
    assert row_key(row, ()) == row_key(dict(reversed(row.items())), ())  # order-blind hash
    assert row_key(row, ()) != row_key({**row, "x": "z"}, ())
    with pytest.raises(ParseError, match="no value in key column 'Missing'"):
        row_key(row, ("Missing",))
    hashes = KeyHashes()
    for key in ("a", "b", "a", "c", "a"):
        hashes.add(key)
    assert hashes.repeats() == 2
