"""Every connector's pure parsing functions against random and adversarial payloads.

Wrong types, missing ids, huge and NUL-laden strings, deep nesting, duplicate keys in a
page, bytes that are not UTF-8: the answer is parsed data or a typed ``ParseError``, never
another exception (which would surface as "internal error" and stop a whole run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.connectors import aimms, aimms_tasks, aimsio, amilia, aqua_parse, imis_query
from service.errors import ParseError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\x00", "$", '"']),
    max_size=12,
)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | st.just("x" * 100_000)
)
KEYS = st.sampled_from(
    ["Id", "id", "guid", "updatedAt", "Items", "Paging", "TotalCount", "Next", "Page",
     "NextId", "$type", "$values", "$value", "HasNext", "NextOffset", "Limit", "Name",
     "Value", "jobId", "jobID", "jobStatus", "publishLink", "response", "canReRun",
     "dtype", "notices", "entityKey", "severity", "numberOfEntitiesCreated",
     "numberOfEntitiesEdited", "numberOfEntitiesNotImportedDueToErrors", "state",
     "versions", "items", "errorMessage", "value", "RegistrationId", "rows"]
) | TEXT  # fmt: skip
JSONISH = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)


def deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(levels):
        value = [value] if i % 2 else {"Items": value, "$values": value}
    return value


def typed_or_parsed(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ParseError:
        return None


# --- Aimsio -----------------------------------------------------------------------------------
@FUZZ
@given(JSONISH)
def test_aimsio_listing_and_import_result(body: Any) -> None:
    typed_or_parsed(lambda: aimsio.parse_stubs("User", body))
    typed_or_parsed(lambda: aimsio.parse_import_result("User", ["a", "b"], body))


@FUZZ
@given(st.lists(st.fixed_dictionaries({"guid": TEXT, "updatedAt": st.integers()}), max_size=8))
def test_aimsio_duplicate_keys_in_a_listing_are_kept_in_order(items: list[Any]) -> None:
    stubs = aimsio.parse_stubs("User", items + items)
    assert [s.key for s in stubs] == [str(i["guid"]) for i in items + items]


@FUZZ
@given(
    st.fixed_dictionaries(
        {"dtype": st.just("IntegrationImportResult")},
        optional={
            "numberOfEntitiesCreated": SCALAR,
            "numberOfEntitiesEdited": SCALAR,
            "numberOfEntitiesNotImportedDueToErrors": SCALAR,
            "notices": JSONISH,
        },
    )
)
def test_aimsio_import_result_with_odd_counters(body: Any) -> None:
    outcomes = typed_or_parsed(lambda: aimsio.parse_import_result("User", ["a", "b"], body))
    if outcomes is not None:
        assert [o.record_key for o in outcomes] == ["a", "b"]


# --- Amilia -----------------------------------------------------------------------------------
@FUZZ
@given(JSONISH)
def test_amilia_pages(body: Any) -> None:
    for parse in (amilia.parse_v3, amilia.parse_v2):
        page = typed_or_parsed(lambda p=parse: p(body))  # type: ignore[misc]
        if page is not None:
            ids = typed_or_parsed(lambda pg=page: amilia.page_ids(pg.items, "Id", "accounts"))
            if ids is not None:
                typed_or_parsed(lambda pg=page: amilia.unstable([pg, pg], pg.total, "Id", "x"))


@FUZZ
@given(st.lists(st.integers(), max_size=30), st.integers(min_value=0, max_value=40))
def test_amilia_a_page_repeated_or_overlapping_is_unstable(ids: list[int], total: int) -> None:
    items = [{"Id": i} for i in sorted(ids)]
    page = amilia.parse_v3({"Items": items, "Paging": {"TotalCount": total, "Next": None}})
    if items:
        assert amilia.unstable([page, page], total, "Id", "accounts")  # the same page twice


# --- iMIS -------------------------------------------------------------------------------------
@FUZZ
@given(JSONISH)
def test_imis_paged_result_and_unwrap(body: Any) -> None:
    page = typed_or_parsed(lambda: imis_query.parse_page(body, "Party"))
    if page is not None and page.next is not None:
        assert int(page.next) >= 0  # the walk turns it into an offset
    imis_query.unwrap(body)  # total: anything JSON unwraps
    imis_query.page_limit(body, 100)


def test_imis_unwrap_of_deep_nesting_does_not_recurse() -> None:
    assert imis_query.unwrap(deep(20_000)) is not None


@pytest.mark.parametrize("offset", ["x", None, -5, 1.5, True, [1], {"$value": 3}])
def test_imis_a_next_offset_that_is_no_offset_is_a_parse_error(offset: Any) -> None:
    with pytest.raises(ParseError, match="NextOffset"):
        imis_query.parse_page({"Items": [], "HasNext": True, "NextOffset": offset}, "Party")


# --- Aqua -------------------------------------------------------------------------------------
@FUZZ
@given(JSONISH, TEXT)
def test_aqua_job_answers(body: Any, job_id: str) -> None:
    typed_or_parsed(lambda: aqua_parse.parse_job(body, what="job"))
    typed_or_parsed(lambda: aqua_parse.parse_status(body, job_id))
    aqua_parse.response_links(body)
    if isinstance(body, dict):
        typed_or_parsed(lambda: aqua_parse.row_key(body, ()))


@FUZZ
@given(st.lists(st.binary(max_size=40) | st.sampled_from([b'"', b"\r\n", b",", b"\xef\xbb\xbf"])))
def test_aqua_csv_bytes_in_any_chunks(chunks: list[bytes]) -> None:
    rows = aqua_parse.CsvRows(("a",))
    try:
        for chunk in chunks:
            rows.feed(chunk)
        rows.close()
    except ParseError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=40) | st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"a"'])))
def test_aqua_json_bytes_in_any_chunks(chunks: list[bytes]) -> None:
    rows = aqua_parse.JsonRows()
    try:
        for chunk in chunks:
            rows.feed(chunk)
        rows.close()
    except ParseError:
        pass


def test_aqua_deeply_nested_json_rows_are_a_parse_error_or_rows() -> None:
    rows = aqua_parse.JsonRows()
    text = ("[" * 5000 + "]" * 5000).encode()
    try:
        rows.feed(text)
        rows.close()
    except ParseError:
        pass


# --- AIMMS PRO --------------------------------------------------------------------------------
@FUZZ
@given(JSONISH, st.sampled_from([None, "rows", "data.rows", "", "$values"]))
def test_aimms_listings_tasks_and_responses(body: Any, rows_path: str | None) -> None:
    for stream in ("applications", "tasks", "users"):
        items = typed_or_parsed(lambda s=stream: aimms.parse_listing(s, body))  # type: ignore[misc]
        if items is not None:
            typed_or_parsed(lambda s=stream, i=items: aimms.keyed(s, i))  # type: ignore[misc]
    typed_or_parsed(lambda: aimms_tasks.parse_task(body))
    typed_or_parsed(lambda: aimms_tasks.parse_created(body))
    typed_or_parsed(lambda: aimms_tasks.response_rows(body, rows_path))


@FUZZ
@given(st.lists(TEXT, max_size=6))
def test_aimms_csv_lines(lines: list[str]) -> None:
    parsed = typed_or_parsed(lambda: aimms_tasks.csv_rows(None, [f"{line}\n" for line in lines]))
    if parsed is not None:
        header, rows = parsed
        assert all(set(r) <= set(header) for r in rows)


async def test_imis_a_next_offset_pointing_back_is_a_loop_not_an_endless_walk() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from service.config import Settings
    from service.connectors.imis import ImisConnector
    from service.engine.runtime import Runtime

    page = {"Items": {"$values": [{"PartyId": "1"}]}, "HasNext": True, "NextOffset": 0}
    calls = 0

    async def party(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(page)

    app = web.Application()
    app.router.add_get("/api/Party", party)
    async with TestServer(app, host="127.0.0.1") as server:
        settings = Settings.model_validate(
            {
                "database": {"url": "sqlite+aiosqlite:///:memory:"},
                "vendors": {
                    "imis": {
                        "base_url": str(server.make_url("")),
                        "auth": {"kind": "bearer", "token": "t"},
                        "streams": {"Party": {}},
                    }
                },
            }
        )
        async with Runtime(settings, require_schema=False) as rt:
            connector = rt.connector("imis")
            assert isinstance(connector, ImisConnector)
            with pytest.raises(ParseError, match="pagination loop"):
                async for _ in connector.walk("/api/Party", []):
                    pass
    assert calls == 1


# --- what the fuzzers found, pinned ------------------------------------------------------------
def test_an_import_counter_in_superscript_digits_is_a_parse_error() -> None:
    body = {"dtype": "IntegrationImportResult", "numberOfEntitiesCreated": "¹"}
    with pytest.raises(ParseError, match="not a count"):
        aimsio.parse_import_result("User", ["a"], body)


def test_a_json_export_ending_inside_a_utf8_sequence_is_a_parse_error() -> None:
    rows = aqua_parse.JsonRows()
    rows.feed(b'[{"a": "\xc3')
    with pytest.raises(ParseError, match="not UTF-8"):
        rows.close()
