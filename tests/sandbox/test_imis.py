"""The iMIS simulator, driven over real HTTP on 127.0.0.1 (contract items 1-5 of vendor-apis.md §3.8)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.clock import FakeClock
from sandbox.imis.entities import ActivitySpec, EventRegistrationSpec, EventSpec, GroupMemberSpec
from sandbox.imis.filter import (
    FilterError,
    format_local,
    in_restore_window,
    paged_result,
    parse_filter,
    parse_local,
    parse_orderby,
    parse_paging,
)
from sandbox.imis.party import ChangeLogSpec, PartySpec
from sandbox.imis.records import Context, EntitySpec

DAY_S = 86_400
JAN_2 = 1_767_225_600 + DAY_S  # 2026-01-02T00:00:00Z
NOW_TEXT = "2026-01-01T00:00:00"  # the FakeClock's default start, as the server writes it
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?$")
PARTY = "Asi.Soa.Membership.DataContracts.ComboPartyData, Asi.Contracts"
PERSON = "Asi.Soa.Membership.DataContracts.PersonData, Asi.Contracts"
GENERIC = "Asi.Soa.Core.DataContracts.GenericEntityData, Asi.Contracts"
PROP = "Asi.Soa.Core.DataContracts.GenericPropertyData, Asi.Contracts"
ENTITIES = (
    "Party",
    "Person",
    "Activity",
    "Event",
    "EventRegistration",
    "GroupMember",
    "PartyDeleteLog",
    "ChangeLog",
)


# --- helpers --------------------------------------------------------------------------------
async def start(
    sandbox_factory: Any, records: int = 60, clock: FakeClock | None = None, **settings: Any
) -> tuple[str, FakeClock]:
    clock = clock or FakeClock()
    sandbox = await sandbox_factory(
        "imis", records=records, clock=clock, vendors={"imis": settings} if settings else {}
    )
    return sandbox.url("imis"), clock


async def token_response(
    http: aiohttp.ClientSession, base: str, **form: str
) -> tuple[int, dict[str, Any]]:
    form = form or {"grant_type": "password", "username": "demo", "password": "demo-secret"}
    async with http.post(f"{base}/token", data=form) as resp:
        return resp.status, await resp.json()


async def login(http: aiohttp.ClientSession, base: str) -> dict[str, str]:
    status, body = await token_response(http, base)
    assert status == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    json: Any = None,
    **params: Any,
) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, json=json, params=params) as resp:
        text = await resp.text()
        return resp.status, (await resp.json()) if text else None


async def everything(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], entity: str, **params: Any
) -> list[dict[str, Any]]:
    """Every row of a filtered list, following NextOffset (bounded)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    for _ in range(100):
        status, page = await call(
            http, "GET", f"{base}/api/{entity}", auth, limit=500, offset=offset, **params
        )
        assert status == 200, page
        rows += page["Items"]["$values"]
        if not page["HasNext"]:
            return rows
        offset = page["NextOffset"]
    raise AssertionError("paging did not end")


async def mutate(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> dict[str, Any]:
    status, result = await call(http, "POST", f"{base}/_sandbox/mutate", json=body)
    assert status == 200, result
    return result  # type: ignore[no-any-return]


async def faults(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> None:
    status, result = await call(http, "POST", f"{base}/_sandbox/faults", json=body)
    assert status == 200, result


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def updated(record: dict[str, Any]) -> datetime:
    return ts(record["UpdateInformation"]["UpdatedOn"])


def new_party(last: str = "Newman", email: str = "new.man@example.org") -> dict[str, Any]:
    m = "Asi.Soa.Membership.DataContracts."
    return {
        "$type": PARTY,
        "PersonName": {
            "$type": m + "PersonNameData, Asi.Contracts",
            "FirstName": "Nora",
            "LastName": last,
        },
        "Emails": {
            "$type": m + "EmailDataCollection, Asi.Contracts",
            "$values": [{"$type": m + "EmailData, Asi.Contracts", "Address": email}],
        },
    }


# --- 1. token -------------------------------------------------------------------------------
async def test_token_password_grant_returns_owin_token(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory)
    status, body = await token_response(http, base)
    assert status == 200
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "userName",
        ".issued",
        ".expires",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1199
    assert body["userName"] == "demo"
    assert body[".issued"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert body[".expires"] == "Thu, 01 Jan 2026 00:19:59 GMT"


async def test_token_accepts_the_collections_capitalised_keys(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory)
    form = {"Username": "demo", "Password": "demo-secret", "Grant_type": "password"}
    status, body = await token_response(http, base, **form)
    assert status == 200
    assert body["access_token"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "username": "demo", "password": "wrong"}, "invalid_grant"),
        ({"grant_type": "password", "username": "nobody", "password": "x"}, "invalid_grant"),
        ({"grant_type": "client_credentials", "username": "demo"}, "unsupported_grant_type"),
        ({"username": "demo", "password": "demo-secret"}, "unsupported_grant_type"),
    ],
)
async def test_token_bad_grant_is_400(
    sandbox_factory: Any, http: Any, form: dict[str, str], error: str
) -> None:
    base, _ = await start(sandbox_factory)
    status, body = await token_response(http, base, **form)
    assert status == 400
    assert body["error"] == error
    if error == "invalid_grant":
        assert body == {
            "error": "invalid_grant",
            "error_description": "The user name or password is incorrect.",
        }


async def test_token_expires_on_the_sandbox_clock(sandbox_factory: Any, http: Any) -> None:
    base, clock = await start(sandbox_factory, token_expires_in_s=60)
    _status, body = await token_response(http, base)
    assert body["expires_in"] == 60
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    clock.advance(59)
    assert (await call(http, "GET", f"{base}/api/Party", auth, limit=1))[0] == 200
    clock.advance(2)
    async with http.get(f"{base}/api/Party", headers=auth) as resp:
        assert resp.status == 401
        assert await resp.json() == {"Message": "Authorization has been denied for this request."}
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await call(http, "GET", f"{base}/api/Party", await login(http, base)))[0] == 200


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic ZGVtbzpkZW1v"])
async def test_missing_or_unknown_bearer_is_401(
    sandbox_factory: Any, http: Any, header: str | None
) -> None:
    base, _ = await start(sandbox_factory)
    headers = {"Authorization": header} if header else {}
    status, body = await call(http, "GET", f"{base}/api/Party/101", headers)
    assert status == 401
    assert body == {"Message": "Authorization has been denied for this request."}


async def test_fault_token_expire_now_expires_issued_tokens_once(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory)
    auth = await login(http, base)
    await faults(http, base, {"extra": {"token_expire_now": True}})
    assert (await call(http, "GET", f"{base}/api/Party/101", auth))[0] == 401
    fresh = await login(http, base)
    assert (await call(http, "GET", f"{base}/api/Party/101", fresh))[0] == 200
    assert (await call(http, "GET", f"{base}/api/Party/101", fresh))[0] == 200


# --- 2. entity router -----------------------------------------------------------------------
async def test_get_party_has_the_documented_shape(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory)
    auth = await login(http, base)
    status, party = await call(http, "GET", f"{base}/api/party/101", auth)  # the seed's URL
    assert status == 200
    assert party["$type"] == PARTY
    assert party["PartyId"] == party["Id"] == "101"
    assert party.get("PersonName") or party.get("OrganizationName")
    emails = party["Emails"]
    assert emails["$type"].endswith("EmailDataCollection, Asi.Contracts")
    assert "@" in emails["$values"][0]["Address"]
    assert party["Status"]["PartyStatusId"] in ("A", "I")
    info = party["UpdateInformation"]
    assert info["$type"] == "Asi.Soa.Core.DataContracts.EntityUpdateInformationData, Asi.Contracts"
    assert LOCAL_TIME.match(info["CreatedOn"])
    assert LOCAL_TIME.match(info["UpdatedOn"])
    assert ts(info["CreatedOn"]) <= ts(info["UpdatedOn"])
    assert re.fullmatch(r"[0-9a-f-]{36}", party["UniformId"])
    assert party["Name"]
    assert party["Sort"]


async def test_list_envelope_is_exact(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=30)
    auth = await login(http, base)
    status, page = await call(http, "GET", f"{base}/api/Party", auth, limit=10, offset=5)
    assert status == 200
    item = "[[Asi.Soa.Membership.DataContracts.PartyData, Asi.Contracts]]"
    assert page == {
        "$type": f"Asi.Soa.Core.DataContracts.PagedResult`1{item}, Asi.Contracts",
        "Items": {
            "$type": f"System.Collections.Generic.List`1{item}, mscorlib",
            "$values": page["Items"]["$values"],
        },
        "Offset": 5,
        "Limit": 10,
        "Count": 10,
        "TotalCount": 30,
        "NextPageLink": None,
        "HasNext": True,
        "NextOffset": 15,
    }
    assert [p["PartyId"] for p in page["Items"]["$values"]] == [str(i) for i in range(106, 116)]


@pytest.mark.parametrize("entity", ENTITIES)
async def test_every_entity_lists_and_gets_by_id(
    sandbox_factory: Any, http: Any, entity: str
) -> None:
    base, _ = await start(sandbox_factory, records=20)
    auth = await login(http, base)
    if entity == "PartyDeleteLog":  # it starts empty: deleting a party fills it
        assert (await call(http, "DELETE", f"{base}/api/Party/103", auth))[0] == 200
    status, page = await call(http, "GET", f"{base}/api/{entity.lower()}", auth, limit=3)
    assert status == 200
    items = page["Items"]["$values"]
    assert items
    assert all(i["$type"].endswith("Data, Asi.Contracts") for i in items)
    id_key = {
        "Party": "PartyId",
        "Person": "PartyId",
        "Event": "EventId",
        "EventRegistration": "EventRegistrationId",
        "GroupMember": "GroupMemberId",
        "PartyDeleteLog": "PartyDeleteLogId",
        "ChangeLog": "ChangeLogId",
    }.get(entity)
    if id_key is None:  # Activity: GenericEntityData, id in Identity
        ident = items[0]["Identity"]["IdentityElements"]["$values"][0]
    else:
        ident = items[0][id_key]
    status, one = await call(http, "GET", f"{base}/api/{entity}/{ident}", auth)
    assert status == 200
    assert one == items[0]


@pytest.mark.parametrize(
    "path",
    ["/api/Nope", "/api/Party/99999999", "/api/Party/abc", "/api/Event/EV9999999",
     "/api/GroupMember/00000000-0000-0000-0000-000000000001", "/api/Activity/0"],
)  # fmt: skip
async def test_unknown_entity_or_id_is_404(sandbox_factory: Any, http: Any, path: str) -> None:
    base, _ = await start(sandbox_factory, records=10)
    status, body = await call(http, "GET", base + path, await login(http, base))
    assert status == 404
    assert set(body) == {"Message"}


async def test_post_party_creates_with_201_and_server_fields(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    status, created = await call(http, "POST", f"{base}/api/Party", auth, json=new_party())
    assert status == 201
    assert created["PartyId"] == created["Id"] == "111"  # ids continue after 101..110
    assert created["Name"] == "Nora Newman"
    assert created["Sort"] == "NEWMAN, NORA"
    assert created["Status"]["PartyStatusId"] == "A"
    info = created["UpdateInformation"]
    assert info["CreatedOn"] == info["UpdatedOn"] == NOW_TEXT
    assert info["CreatedBy"] == "DEMO"
    assert (await call(http, "GET", f"{base}/api/Party/111", auth))[1] == created
    status, page = await call(http, "GET", f"{base}/api/Party", auth, limit=1)
    assert page["TotalCount"] == 11


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"PersonName": {"LastName": "X"}}, "$type is required"),
        ({"$type": "Asi.Soa.Events.DataContracts.EventData, Asi.Contracts"}, "is not valid"),
        ([1, 2], "JSON object"),
    ],
)
async def test_post_without_a_valid_type_is_400(
    sandbox_factory: Any, http: Any, body: Any, message: str
) -> None:
    base, _ = await start(sandbox_factory, records=10)
    status, error = await call(
        http, "POST", f"{base}/api/Party", await login(http, base), json=body
    )
    assert status == 400
    assert message in error["Message"]


async def test_post_invalid_json_is_400(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10)
    headers = {**await login(http, base), "Content-Type": "application/json"}
    async with http.post(f"{base}/api/Party", data=b"{not json", headers=headers) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["Message"]


async def test_validation_failure_is_422_with_validation_results(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=10)
    body = new_party(last="", email="not-an-email")
    body["PersonName"]["FirstName"] = ""
    status, error = await call(
        http, "POST", f"{base}/api/Party", await login(http, base), json=body
    )
    assert status == 422
    assert set(error) == {"Message", "ValidationResults"}
    results = error["ValidationResults"]
    assert results["$type"] == "Asi.Soa.Core.DataContracts.ValidationResultsData, Asi.Contracts"
    values = results["Errors"]["$values"]
    assert results["Errors"]["$type"].endswith("ValidationResultDataCollection, Asi.Contracts")
    messages = [v["Message"] for v in values]
    assert len(messages) == 2
    assert "LastName" in messages[0]
    assert messages[1] == "'not-an-email' is not a valid email address."


async def test_validation_status_setting_gives_400(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10, validation_status=400)
    body = {"$type": GENERIC, "Properties": {"$type": "x", "$values": []}}
    status, error = await call(
        http, "POST", f"{base}/api/Activity", await login(http, base), json=body
    )
    assert status == 400
    assert [e["Message"] for e in error["ValidationResults"]["Errors"]["$values"]] == [
        "ACTIVITY_TYPE is required.",
        "PartyId is required.",
    ]


async def test_put_replaces_the_whole_object(sandbox_factory: Any, http: Any) -> None:
    base, clock = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    _, before = await call(http, "GET", f"{base}/api/Party/102", auth)
    assert before["Phones"]["$values"]
    clock.advance(90)
    body = new_party(last="Replaced")
    body["PartyId"] = "102"
    status, after = await call(http, "PUT", f"{base}/api/Party/102", auth, json=body)
    assert status == 200
    assert "Phones" not in after  # full replace: what the body leaves out is gone
    assert after["PersonName"]["LastName"] == "Replaced"
    assert after["UniformId"] == before["UniformId"]
    info = after["UpdateInformation"]
    assert info["CreatedOn"] == before["UpdateInformation"]["CreatedOn"]
    assert info["UpdatedOn"] == "2026-01-01T00:01:30"
    assert (await call(http, "GET", f"{base}/api/Party/102", auth))[1] == after
    logged = await everything(http, base, auth, "ChangeLog", ChangeType="Change", partyId="102")
    assert len(logged) == 1
    changes = {c["PropertyName"]: c for c in logged[0]["Changes"]["$values"]}
    assert changes["LastName"]["NewValue"] == "Replaced"
    assert changes["LastName"]["OriginalValue"] == before["PersonName"]["LastName"]
    assert logged[0]["ChangeDate"] == "2026-01-01T00:01:30"


async def test_put_failures(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    body = new_party()
    body["PartyId"] = "105"
    status, error = await call(http, "PUT", f"{base}/api/Party/102", auth, json=body)
    assert status == 400
    assert "does not match" in error["Message"]
    assert (await call(http, "PUT", f"{base}/api/Party/999", auth, json=new_party()))[0] == 404
    bad = new_party(email="nope")
    assert (await call(http, "PUT", f"{base}/api/Party/102", auth, json=bad))[0] == 422
    del bad["$type"]
    assert (await call(http, "PUT", f"{base}/api/Party/102", auth, json=bad))[0] == 400


async def test_delete_party_logs_the_deletion(sandbox_factory: Any, http: Any) -> None:
    base, clock = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    _, party = await call(http, "GET", f"{base}/api/Party/104", auth)
    clock.advance(5)
    assert (await call(http, "DELETE", f"{base}/api/Party/104", auth)) == (200, None)
    assert (await call(http, "GET", f"{base}/api/Party/104", auth))[0] == 404
    assert (await call(http, "DELETE", f"{base}/api/Party/104", auth))[0] == 404
    logs = await everything(http, base, auth, "PartyDeleteLog")
    assert len(logs) == 1
    assert logs[0]["PartyId"] == "104"
    assert logs[0]["UniformId"] == party["UniformId"]
    assert logs[0]["DeletedOn"] == "2026-01-01T00:00:05"
    deletes = await everything(http, base, auth, "ChangeLog", ChangeType="Delete")
    assert [d["Identity"]["IdentityElements"]["$values"] for d in deletes] == [["104"]]
    _, page = await call(http, "GET", f"{base}/api/Party", auth)
    assert page["TotalCount"] == 9


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/EventRegistration/1"), ("POST", "/api/ChangeLog"),
     ("PUT", "/api/PartyDeleteLog/1"), ("PATCH", "/api/Party/101")],
)  # fmt: skip
async def test_unsupported_methods_are_405(
    sandbox_factory: Any, http: Any, method: str, path: str
) -> None:
    base, _ = await start(sandbox_factory, records=10)
    status, body = await call(
        http, method, base + path, await login(http, base), json={"$type": "x"}
    )
    assert status == 405
    assert body == {"Message": f"The requested resource does not support http method '{method}'."}


async def test_person_is_a_view_of_party_without_organisations(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=60)
    auth = await login(http, base)
    parties = await everything(http, base, auth, "Party")
    persons = await everything(http, base, auth, "Person")
    orgs = [p for p in parties if p.get("OrganizationName")]
    assert orgs, "the seed should give some organisations"
    assert len(persons) == len(parties) - len(orgs)
    assert all(p["$type"] == PERSON and p["PersonName"]["LastName"] for p in persons)
    assert (await call(http, "GET", f"{base}/api/Person/{orgs[0]['PartyId']}", auth))[0] == 404
    status, created = await call(
        http, "POST", f"{base}/api/Person", auth, json={**new_party(), "$type": PERSON}
    )
    assert status == 201
    assert created["$type"] == PERSON
    _, as_party = await call(http, "GET", f"{base}/api/Party/{created['PartyId']}", auth)
    assert as_party["$type"] == PARTY
    assert as_party["Name"] == "Nora Newman"


async def test_activity_post_takes_the_documented_generic_entity(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    body = {
        "$type": GENERIC,
        "Properties": {
            "$type": "Asi.Soa.Core.DataContracts.GenericPropertyDataCollection, Asi.Contracts",
            "$values": [
                {"$type": PROP, "Name": "ACTIVITY_TYPE", "Value": "ONLINEAPP"},
                {"$type": PROP, "Name": "PartyId", "Value": "105"},
            ],
        },
    }
    status, created = await call(http, "POST", f"{base}/api/Activity", auth, json=body)
    assert status == 201
    assert created["Identity"]["IdentityElements"]["$values"] == ["11"]
    assert created["PrimaryParentIdentity"]["IdentityElements"]["$values"] == ["105"]
    props = {p["Name"]: p["Value"] for p in created["Properties"]["$values"]}
    assert props["SEQN"] == {"$type": "System.Int32", "$value": 11}
    assert props["TRANSACTION_DATE"]["$value"] == NOW_TEXT
    listed = await everything(http, base, auth, "Activity", PartyId="105")
    assert created in listed
    body["Properties"]["$values"][1]["Value"] = "99999"
    status, error = await call(http, "POST", f"{base}/api/Activity", auth, json=body)
    assert status == 422
    assert error["ValidationResults"]["Errors"]["$values"][0]["Message"] == (
        "Party '99999' does not exist."
    )


async def test_event_registration_filters_by_event_and_party(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=40)
    auth = await login(http, base)
    first = (await everything(http, base, auth, "EventRegistration"))[0]
    rows = await everything(
        http, base, auth, "EventRegistration", EventId=first["EventId"], PartyId=first["PartyId"]
    )
    assert first in rows
    assert all(r["EventId"] == first["EventId"] and r["PartyId"] == first["PartyId"] for r in rows)


# --- 3. paging ------------------------------------------------------------------------------
async def test_paging_follows_next_offset_to_the_end(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=250)
    auth = await login(http, base)
    seen: list[str] = []
    offset, pages = 0, []
    for _ in range(10):
        status, page = await call(http, "GET", f"{base}/api/Party", auth, offset=offset)
        assert status == 200
        pages.append((page["Offset"], page["Count"], page["HasNext"], page["NextOffset"]))
        seen += [p["PartyId"] for p in page["Items"]["$values"]]
        if not page["HasNext"]:
            break
        offset = page["NextOffset"]
    assert pages == [(0, 100, True, 100), (100, 100, True, 200), (200, 50, False, 0)]
    assert seen == [str(101 + i) for i in range(250)]
    _, past = await call(http, "GET", f"{base}/api/Party", auth, offset=400)
    assert (past["Count"], past["TotalCount"], past["HasNext"]) == (0, 250, False)


async def test_limit_defaults_to_100_and_is_capped(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=600)
    auth = await login(http, base)
    _, page = await call(http, "GET", f"{base}/api/Party", auth)
    assert (page["Limit"], page["Count"]) == (100, 100)
    _, page = await call(http, "GET", f"{base}/api/Party", auth, Limit=1000)
    assert (page["Limit"], page["Count"], page["NextOffset"]) == (500, 500, 500)
    base, _ = await start(sandbox_factory, records=100, max_limit=30)
    _, page = await call(http, "GET", f"{base}/api/Party", await login(http, base), limit=50)
    assert (page["Limit"], page["Count"]) == (30, 30)


@pytest.mark.parametrize("params", [{"limit": "x"}, {"offset": "-1"}, {"orderby": "Name sideways"}])
async def test_bad_paging_is_400(sandbox_factory: Any, http: Any, params: dict[str, str]) -> None:
    base, _ = await start(sandbox_factory, records=10)
    status, body = await call(http, "GET", f"{base}/api/Party", await login(http, base), **params)
    assert status == 400
    assert set(body) == {"Message"}


# --- 4. filters -----------------------------------------------------------------------------
SEED_OPERATORS = {  # the seed's table: every spelling, and what it means
    "between": ("Between", "between"),
    "contains": ("Contains", "contains"),
    "endswith": ("EndsWith", "endsWith"),
    "eq": ("Equal", "eq", "==", "equal"),
    "gt": ("GreaterThan", "gt", ">", "greaterThan"),
    "ge": ("GreaterThanOrEqual", "ge", ">=", "greaterThanOrEqual"),
    "in": ("In", "in"),
    "isempty": ("IsEmpty", "isEmpty", "empty"),
    "isfalse": ("IsFalse", "isFalse", "false"),
    "istrue": ("IsTrue", "isTrue", "true"),
    "lt": ("LessThan", "lt", "<", "lessThan"),
    "le": ("LessThanOrEqual", "le", "<=", "lessThanOrEqual"),
    "notcontain": ("NotContain", "notContain", "!contain"),
    "notempty": ("NotEmpty", "notEmpty", "!empty"),
    "ne": ("NotEqual", "ne", "!=", "notEqual"),
    "startswith": ("StartsWith", "startsWith"),
}
ALL_ALIASES = [(op, alias) for op, aliases in SEED_OPERATORS.items() for alias in aliases]


@pytest.mark.parametrize(("op", "alias"), ALL_ALIASES)
def test_parse_filter_knows_every_alias(op: str, alias: str) -> None:
    value = (
        "a|b"
        if op == "between"
        else ("" if op.startswith(("is", "not")) and "empty" in op else "v")
    )
    flt = parse_filter("Prop", f"{alias}:{value}")
    assert flt.op == op
    assert parse_filter("Prop", f"{alias.upper()}:{value}").op == op  # names in any case


def test_parse_filter_plain_values_and_arguments() -> None:
    assert parse_filter("UniformId", "87ead15e").args == ("87ead15e",)
    assert parse_filter("updatedOn", "2024-05-01T00:00:00").op == "eq"  # colons, no operator
    assert parse_filter("x", "in:a|b|c").args == ("a", "b", "c")
    assert parse_filter("x", "between:1|2").args == ("1", "2")
    assert parse_filter("x", "isEmpty:").args == ()
    with pytest.raises(FilterError):
        parse_filter("x", "between:1")


def _party_cases(parties: list[dict[str, Any]]) -> list[tuple[str, str, str, Callable[..., bool]]]:
    """(operator, property, value, expected test on a record) over real data."""
    stamps = sorted(p["UpdateInformation"]["UpdatedOn"] for p in parties)
    created = sorted(p["UpdateInformation"]["CreatedOn"] for p in parties)
    lo, mid, hi = stamps[10], stamps[30], stamps[45]
    cmid = created[25]
    first0 = next(p["PersonName"]["FirstName"] for p in parties if "PersonName" in p)

    def last(p: dict[str, Any]) -> str | None:
        return (p.get("PersonName") or {}).get("LastName")

    def email(p: dict[str, Any]) -> str:
        return str(p["Emails"]["$values"][0]["Address"])

    def made(p: dict[str, Any]) -> datetime:
        return ts(p["UpdateInformation"]["CreatedOn"])

    return [
        ("between", "updatedOn", f"{lo}|{hi}", lambda p: ts(lo) <= updated(p) <= ts(hi)),
        ("contains", "lastName", "SMI", lambda p: "smi" in (last(p) or "").lower()),
        ("endswith", "email", ".COM", lambda p: email(p).endswith(".com")),
        ("eq", "firstName", first0.upper(), lambda p: (p.get("PersonName") or {}).get("FirstName") == first0),
        ("gt", "updatedOn", mid, lambda p: updated(p) > ts(mid)),
        ("ge", "updatedOn", mid, lambda p: updated(p) >= ts(mid)),
        ("in", "partyId", "101|105|110|99999", lambda p: p["PartyId"] in ("101", "105", "110")),
        ("isempty", "OrganizationName", "", lambda p: not p.get("OrganizationName")),
        ("lt", "createdOn", cmid, lambda p: made(p) < ts(cmid)),
        ("le", "createdOn", cmid, lambda p: made(p) <= ts(cmid)),
        ("notcontain", "lastName", "a", lambda p: last(p) is not None and "a" not in last(p).lower()),
        ("notempty", "OrganizationName", "", lambda p: bool(p.get("OrganizationName"))),
        ("ne", "firstName", first0, lambda p: last(p) is not None and p["PersonName"]["FirstName"] != first0),
        ("startswith", "Name", "a", lambda p: p["Name"].lower().startswith("a")),
    ]  # fmt: skip


async def test_every_operator_and_alias_filters_party(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=60)
    auth = await login(http, base)
    parties = await everything(http, base, auth, "Party")
    assert len(parties) == 60
    checked = set()
    for op, prop, value, test in _party_cases(parties):
        expected = [p["PartyId"] for p in parties if test(p)]
        assert 0 < len(expected) < 60, (op, "pick a value that splits the data")
        for alias in SEED_OPERATORS[op]:
            rows = await everything(http, base, auth, "Party", **{prop: f"{alias}:{value}"})
            assert [p["PartyId"] for p in rows] == expected, (op, alias)
            checked.add((op, alias))
    members = await everything(http, base, auth, "GroupMember")
    for op, want in (("istrue", True), ("isfalse", False)):
        expected = [m["GroupMemberId"] for m in members if m["IsActive"] is want]
        assert 0 < len(expected) < len(members)
        for alias in SEED_OPERATORS[op]:
            rows = await everything(http, base, auth, "GroupMember", IsActive=f"{alias}:")
            assert [m["GroupMemberId"] for m in rows] == expected, (op, alias)
            checked.add((op, alias))
    assert checked == set(ALL_ALIASES)


async def test_property_names_are_case_insensitive_and_nested(
    sandbox_factory: Any, http: Any
) -> None:
    base, _ = await start(sandbox_factory, records=60)
    auth = await login(http, base)
    parties = await everything(http, base, auth, "Party")
    stamp = sorted(p["UpdateInformation"]["UpdatedOn"] for p in parties)[40]
    expected = [p["PartyId"] for p in parties if updated(p) >= ts(stamp)]
    for name in (
        "updatedOn",
        "UPDATEDON",
        "UpdateInformation.UpdatedOn",
        "updateinformation.updatedon",
    ):
        rows = await everything(http, base, auth, "Party", **{name: f"ge:{stamp}"})
        assert [p["PartyId"] for p in rows] == expected, name
    smith = [
        p["PartyId"] for p in parties if (p.get("PersonName") or {}).get("LastName") == "Smith"
    ]
    for name in ("lastname", "LastName", "PersonName.LastName"):
        rows = await everything(http, base, auth, "Party", **{name: "smith"})  # plain value: eq
        assert [p["PartyId"] for p in rows] == smith
    uniform = parties[7]["UniformId"]
    rows = await everything(http, base, auth, "party", UniformId=uniform)  # the seed's example
    assert [p["PartyId"] for p in rows] == [parties[7]["PartyId"]]
    city = parties[3]["Addresses"]["$values"][0]["Address"]["CityName"]
    rows = await everything(http, base, auth, "Party", cityName=f"eq:{city}", orderby="Name")
    assert rows
    assert all(r["Addresses"]["$values"][0]["Address"]["CityName"] == city for r in rows)
    # A property the simulator does not index is read from the records themselves.
    postal = parties[3]["Addresses"]["$values"][0]["Address"]["PostalCode"]
    rows = await everything(http, base, auth, "Party", PostalCode=postal)
    assert parties[3] in rows
    assert all(postal in str(r) for r in rows)


async def test_filters_combine_and_order(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=60)
    auth = await login(http, base)
    parties = await everything(http, base, auth, "Party")
    rows = await everything(
        http, base, auth, "Party", lastName="notEmpty:", status="eq:A", orderby="LastName desc"
    )
    expected = [p for p in parties if p.get("PersonName") and p["Status"]["PartyStatusId"] == "A"]
    assert sorted(r["PartyId"] for r in rows) == sorted(p["PartyId"] for p in expected)
    names = [r["PersonName"]["LastName"].lower() for r in rows]
    assert names == sorted(names, reverse=True)


@pytest.mark.parametrize(
    "params",
    [{"updatedOn": "gt:not-a-date"}, {"updatedOn": "contains:2020"}, {"lastName": "between:a"},
     {"orderby": "NoSuchProperty"}],
)  # fmt: skip
async def test_bad_filters_are_400(sandbox_factory: Any, http: Any, params: dict[str, str]) -> None:
    base, _ = await start(sandbox_factory, records=10)
    status, body = await call(http, "GET", f"{base}/api/Party", await login(http, base), **params)
    assert status == 400
    assert set(body) == {"Message"}


async def test_flaky_updated_on_hides_recent_rows_until_an_overlap_reread(
    sandbox_factory: Any, http: Any
) -> None:
    base, clock = await start(sandbox_factory, records=60, flaky_window_s=600)
    clock.advance(3600)
    auth = await login(http, base)
    changed = (await mutate(http, base, {"entity": "Party", "change": 0.5, "seed": 3}))["changed"]
    assert len(changed) == 30
    since = {"updatedOn": "gt:2026-01-01T00:30:00"}
    assert len(await everything(http, base, auth, "Party", **since)) == 30
    await faults(http, base, {"extra": {"flaky_updated_on": True}})
    first = await everything(http, base, auth, "Party", **since)
    assert 0 < len(first) < 30  # some matching rows are missing
    cursor = max(r["UpdateInformation"]["UpdatedOn"] for r in first)
    clock.advance(601)  # the hidden rows are no longer "recent"
    naive = await everything(http, base, auth, "Party", updatedOn=f"gt:{cursor}")
    assert naive == []  # a client trusting the filter has lost them for good
    overlap = await everything(http, base, auth, "Party", updatedOn=f"ge:{cursor[:10]}")
    assert sorted(r["PartyId"] for r in overlap) == sorted(changed)


async def test_flaky_updated_on_date_only_ignores_the_time(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=60)
    auth = await login(http, base)
    parties = await everything(http, base, auth, "Party")
    stamp = sorted(p["UpdateInformation"]["UpdatedOn"] for p in parties)[30]
    exact = await everything(http, base, auth, "Party", updatedOn=f"gt:{stamp}")
    await faults(http, base, {"extra": {"flaky_updated_on": "date_only"}})
    loose = await everything(http, base, auth, "Party", updatedOn=f"gt:{stamp}")
    day = stamp[:10]
    assert loose == [p for p in parties if updated(p) > ts(day)]
    assert len(loose) > len(exact)
    assert all(r in loose for r in exact)


# --- 5. validation (above) and restore windows ------------------------------------------------
@pytest.mark.parametrize(
    ("at", "status"),
    [(JAN_2 + 6 * 3600 + 120, 503), (JAN_2 + 6 * 3600 + 360, 200),
     (JAN_2 + 18 * 3600 + 299, 503), (JAN_2 + 18 * 3600 - 1, 200)],
)  # fmt: skip
@pytest.mark.imis_windows
async def test_restore_windows_answer_503(
    sandbox_factory: Any, http: Any, at: float, status: int
) -> None:
    clock = FakeClock(at - 600)  # log in ten minutes earlier, outside any window
    base, _ = await start(sandbox_factory, records=10, clock=clock)
    auth = await login(http, base)
    clock.set(at)
    got, body = await call(http, "GET", f"{base}/api/Party/101", auth)
    assert got == status
    token_status, token_body = await token_response(http, base)
    assert token_status == status
    if status == 503:
        assert "restore" in body["Message"]
        assert "restore" in token_body["Message"]


@pytest.mark.imis_windows
async def test_restore_hang_mode_waits_then_503(sandbox_factory: Any, http: Any) -> None:
    clock = FakeClock(JAN_2 + 6 * 3600 + 60)
    base, _ = await start(
        sandbox_factory, records=10, clock=clock, restore_mode="hang", restore_hang_s=0.3
    )
    began = time.monotonic()
    status, _ = await token_response(http, base)
    assert status == 503
    assert time.monotonic() - began >= 0.3
    timeout = aiohttp.ClientTimeout(total=0.1)
    with pytest.raises(TimeoutError):  # a client with a short timeout sees a hang
        await http.get(f"{base}/api/Party", timeout=timeout)


async def test_restore_settings_and_switch(sandbox_factory: Any, http: Any) -> None:
    clock = FakeClock(JAN_2 + 6 * 3600 + 60)
    base, _ = await start(sandbox_factory, records=10, clock=clock, restore_windows_utc=[])
    auth = await login(http, base)  # no windows configured: 06:01 is an ordinary minute
    await faults(http, base, {"extra": {"restore_now": True}})
    assert (await call(http, "GET", f"{base}/api/Party/101", auth))[0] == 503
    await faults(http, base, {"extra": {"restore_now": False}})
    assert (await call(http, "GET", f"{base}/api/Party/101", auth))[0] == 200
    base, _ = await start(sandbox_factory, records=10, clock=FakeClock(JAN_2 + 3600 * 12 + 30),
                          restore_windows_utc=["12:00"], restore_window_s=60)  # fmt: skip
    assert (await token_response(http, base))[0] == 503


# --- mutation API ---------------------------------------------------------------------------
async def test_mutation_fractions_change_delete_and_add(sandbox_factory: Any, http: Any) -> None:
    base, clock = await start(sandbox_factory, records=100)
    clock.advance(3600)
    auth = await login(http, base)
    result = await mutate(
        http, base, {"entity": "Party", "change": 0.1, "delete": 0.05, "add": 3, "seed": 9}
    )
    assert (len(result["changed"]), len(result["deleted"]), len(result["added"])) == (10, 5, 3)
    assert result["added"] == ["201", "202", "203"]
    assert result["updated_on"] == "2026-01-01T01:00:00"
    fresh = await everything(http, base, auth, "Party", updatedOn=f"ge:{result['updated_on']}")
    assert sorted(r["PartyId"] for r in fresh) == sorted(result["changed"] + result["added"])
    assert all(r["UpdateInformation"]["UpdatedOn"] == result["updated_on"] for r in fresh)
    for ident in result["deleted"]:
        assert (await call(http, "GET", f"{base}/api/Party/{ident}", auth))[0] == 404
    logs = await everything(http, base, auth, "PartyDeleteLog")
    assert sorted(log["PartyId"] for log in logs) == sorted(result["deleted"])
    _, page = await call(http, "GET", f"{base}/api/Party", auth, limit=1)
    assert page["TotalCount"] == 98
    ids = [p["PartyId"] for p in await everything(http, base, auth, "Party")]
    walked: list[str] = []
    for offset in range(0, 98, 7):  # small pages over the deletions land on the right rows
        _, page = await call(http, "GET", f"{base}/api/Party", auth, limit=7, offset=offset)
        walked += [p["PartyId"] for p in page["Items"]["$values"]]
    assert walked == ids
    assert ids == sorted(ids, key=int)
    assert len(ids) == 98


async def test_mutation_explicit_updates_and_deletes(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=20)
    auth = await login(http, base)
    body = {
        "entity": "party",
        "update": [
            {"id": "103", "lastName": "Zed", "email": "zed@example.org"},
            {"id": "104", "updatedOn": "2025-12-31T23:59:59.5"},
        ],
        "delete_ids": ["110"],
    }
    result = await mutate(http, base, body)
    assert (result["changed"], result["deleted"]) == (["103", "104"], ["110"])
    _, zed = await call(http, "GET", f"{base}/api/Party/103", auth)
    assert zed["PersonName"]["LastName"] == "Zed"
    assert zed["Emails"]["$values"][0]["Address"] == "zed@example.org"
    assert zed["UpdateInformation"]["UpdatedOn"] == NOW_TEXT
    rows = await everything(http, base, auth, "Party", email="zed@example.org")
    assert [r["PartyId"] for r in rows] == ["103"]
    rows = await everything(
        http, base, auth, "Party", updatedOn="between:2025-12-31T23:59:59|2025-12-31T23:59:59.9"
    )
    assert [r["PartyId"] for r in rows] == ["104"]
    status, error = await call(
        http, "POST", f"{base}/_sandbox/mutate", json={"entity": "Party", "delete_ids": ["110"]}
    )
    assert status == 400
    assert "110" in error["error"]
    status, _ = await call(http, "POST", f"{base}/_sandbox/mutate", json={"entity": "Nope"})
    assert status == 400


@pytest.mark.parametrize("entity", ["Event", "EventRegistration", "GroupMember", "Activity"])
async def test_mutation_works_on_other_entities(
    sandbox_factory: Any, http: Any, entity: str
) -> None:
    base, clock = await start(sandbox_factory, records=30)
    auth = await login(http, base)
    clock.advance(60)
    result = await mutate(http, base, {"entity": entity, "change": 0.2, "add": 2})
    assert len(result["changed"]) == 6
    assert len(result["added"]) == 2
    if entity == "Activity":  # no UpdatedOn: new activities happen now
        rows = await everything(http, base, auth, entity, TRANSACTION_DATE="ge:2026-01-01T00:01")
        assert len(rows) == 2
    else:
        rows = await everything(http, base, auth, entity, updatedOn="ge:2026-01-01T00:01")
        assert len(rows) == 8


async def test_reset_data_restores_the_generated_state(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=20)
    auth = await login(http, base)
    _, original = await call(http, "GET", f"{base}/api/Party", auth)
    await mutate(http, base, {"entity": "Party", "change": 0.5, "delete": 0.2, "add": 4})
    assert (await call(http, "GET", f"{base}/api/Party", auth))[1] != original
    status, _ = await call(http, "POST", f"{base}/_sandbox/reset", json={"data": True})
    assert status == 200
    assert (await call(http, "GET", f"{base}/api/Party", auth))[1] == original  # same token
    assert await everything(http, base, auth, "PartyDeleteLog") == []


# --- determinism, stats, limits, faults, size -------------------------------------------------
async def test_same_seed_same_data(sandbox_factory: Any, http: Any) -> None:
    pages = []
    for seed in (7, 7, 8):
        sandbox = await sandbox_factory("imis", records=40, seed=seed, clock=FakeClock())
        base = sandbox.url("imis")
        auth = await login(http, base)
        page = []
        for entity in ("Party", "GroupMember", "Activity", "ChangeLog"):
            page.append((await call(http, "GET", f"{base}/api/{entity}", auth, limit=40))[1])
        pages.append(page)
    assert pages[0] == pages[1]
    assert pages[0] != pages[2]


async def test_stats_count_requests_by_status(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10)
    await call(http, "GET", f"{base}/api/Party")
    auth = await login(http, base)
    await call(http, "GET", f"{base}/api/Party", auth)
    await call(http, "GET", f"{base}/api/Party/1", auth)
    status, stats = await call(http, "GET", f"{base}/_sandbox/stats")
    assert status == 200
    assert stats["vendor"] == "imis"
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 2, "401": 1, "404": 1}
    assert stats["caps"] == {"max_parallel": 5, "rate_per_s": None}


async def test_polite_concurrency_violations_are_counted(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    await faults(http, base, {"latency_ms": 200})
    results = await asyncio.gather(
        *(call(http, "GET", f"{base}/api/Party/101", auth) for _ in range(8))
    )
    assert all(status == 200 for status, _ in results)
    _, stats = await call(http, "GET", f"{base}/_sandbox/stats")
    assert stats["peak_in_flight"] == 8
    assert stats["violation_count"] == 3


async def test_limits_when_enabled_answer_429_in_imis_shape(
    sandbox_factory: Any, http: Any
) -> None:
    limits = {"enabled": True, "mode": "reject", "rate_per_s": 3}
    base, _ = await start(sandbox_factory, records=10, limits=limits)
    auth = await login(http, base)
    results = [await call(http, "GET", f"{base}/api/Party/101", auth) for _ in range(4)]
    assert [s for s, _ in results].count(429) >= 2
    assert (429, {"Message": "Too Many Requests"}) in results


async def test_injected_errors_use_the_imis_error_body(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10)
    auth = await login(http, base)
    await faults(http, base, {"error_rate": 1.0, "error_status": 502})
    assert await call(http, "GET", f"{base}/api/Party", auth) == (
        502,
        {"Message": "Injected server error"},
    )
    status, _body = await call(http, "POST", f"{base}/_sandbox/faults", json={"extra": {"nope": 1}})
    assert status == 400


async def test_unknown_setting_is_rejected(sandbox_factory: Any) -> None:
    with pytest.raises(ValueError, match="unknown imis setting"):
        await start(sandbox_factory, records=10, max_limt=10)


async def test_filtered_pages_on_large_tables_are_fast(sandbox_factory: Any, http: Any) -> None:
    base, _ = await start(sandbox_factory, records=10_000)
    auth = await login(http, base)
    await call(http, "GET", f"{base}/api/Party", auth, limit=1)  # warm the connection
    timings = []
    for query in ({"lastName": "contains:smi"}, {"email": "startsWith:grace"},
                  {"createdOn": "gt:2020-01-01", "status": "A"}):  # fmt: skip
        began = time.perf_counter()
        status, page = await call(http, "GET", f"{base}/api/Party", auth, **query)
        timings.append(time.perf_counter() - began)
        assert status == 200
        assert 0 < page["TotalCount"] < 10_000
    assert min(timings) < 0.1, timings  # one scan of 10,000 rows, not 10,000 records built
    assert max(timings) < 0.5, timings  # (slack for a loaded machine)
    began = time.perf_counter()
    status, page = await call(
        http, "GET", f"{base}/api/Party", auth, **{"lastName": "contains:smi"}, offset=100
    )
    assert status == 200
    assert time.perf_counter() - began < 0.1
    base, _ = await start(sandbox_factory, records=500_000)
    auth = await login(http, base)
    began = time.perf_counter()
    status, page = await call(http, "GET", f"{base}/api/Party", auth, updatedOn="gt:2025-06-30")
    assert status == 200
    assert time.perf_counter() - began < 0.2
    assert 0 < page["TotalCount"] < 2000
    assert all(updated(p) > ts("2025-06-30") for p in page["Items"]["$values"])


# --- pure functions -------------------------------------------------------------------------
def test_paged_result_and_paging_maths() -> None:
    page = paged_result("T", [1, 2], offset=4, limit=2, total=6)
    assert (page["Count"], page["HasNext"], page["NextOffset"]) == (2, False, 0)
    assert parse_paging(None, None, 100, 500) == (100, 0)
    assert parse_paging("0", "5", 100, 500) == (100, 5)
    assert parse_paging("9999", "", 100, 500) == (500, 0)
    assert parse_orderby("-Name") == ("Name", True)
    assert parse_orderby("Name asc") == ("Name", False)


def test_restore_window_maths() -> None:
    windows = ["06:00", "18:00"]
    assert in_restore_window(JAN_2 + 6 * 3600, windows, 300)
    assert in_restore_window(JAN_2 + 6 * 3600 + 299, windows, 300)
    assert not in_restore_window(JAN_2 + 6 * 3600 + 300, windows, 300)
    assert not in_restore_window(JAN_2 + 5 * 3600 + 3599, windows, 300)
    assert in_restore_window(JAN_2 + 30, ["23:59"], 120)  # across midnight


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_local_timestamps_round_trip(ms: int) -> None:
    text = format_local(ms)
    assert LOCAL_TIME.match(text)
    assert parse_local(text, 0) == ms
    assert not text.endswith("0") or "." not in text  # .NET drops trailing zeros


def test_parse_local_converts_explicit_offsets() -> None:
    assert parse_local("2024-05-01T02:00:00+02:00", 0) == parse_local("2024-05-01T00:00:00", 0)
    assert parse_local("2024-05-01T00:00:00Z", 60) == parse_local("2024-05-01T01:00:00", 0)
    with pytest.raises(FilterError):
        parse_local("yesterday", 0)


@pytest.mark.parametrize(
    "make",
    [PartySpec, EventSpec, lambda c: ActivitySpec(c, PartySpec(c)),
     lambda c: EventRegistrationSpec(c, PartySpec(c), EventSpec(c)),
     lambda c: GroupMemberSpec(c, PartySpec(c)), lambda c: ChangeLogSpec(c, PartySpec(c))],
)  # fmt: skip
def test_generated_fields_agree_with_generated_records(
    make: Callable[[Context], EntitySpec],
) -> None:
    """The fast filter path reads generators; the records must say the same."""
    spec = make(Context(seed=5, size=500, utc_offset_min=-300))
    for i in (0, 1, 2, 17, 250, 499):
        flat = spec.flatten(spec.build(i))
        for key, gen in spec.gens.items():
            assert flat[key] == gen(i), (spec.name, key, i)
        if spec.monotonic_key:
            assert spec.gens[spec.monotonic_key](i) <= spec.gens[spec.monotonic_key](i + 1)
