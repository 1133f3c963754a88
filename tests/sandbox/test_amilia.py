"""The Amilia simulator over real HTTP: auth, routing, paging, filters, writes, limits,
faults, the mutation API, determinism and stats (vendor-apis.md §4.8)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from sandbox.clock import FakeClock
from sandbox.server import RunningSandbox
from tests.sandbox.conftest import StartSandbox

V3 = "/api/v3/en/org/8008"
DEMO = ("demo@amilia.test", "demo-secret")
PERSON_FIELDS = {
    "Id", "FirstName", "LastName", "FullName", "Gender", "DateOfBirth", "Email", "Address",
    "Telephone", "TelephoneMobile", "TelephoneWork", "TelephoneWorkExtension", "IsChild",
}  # fmt: skip
TODAY = date(2026, 1, 1)  # FakeClock's default start
MAX_PAGES = 200


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwt_part(token: str, i: int) -> dict[str, Any]:
    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def assert_error(body: dict[str, Any]) -> None:
    assert isinstance(body["Message"], str)
    assert body["Message"]
    uuid.UUID(body["TransactionId"])


def digest(item: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


class Client:
    """A tiny Amilia client for the tests: base URL, token, helpers."""

    def __init__(self, http: aiohttp.ClientSession, sandbox: RunningSandbox) -> None:
        self.http = http
        self.sandbox = sandbox
        self.base = sandbox.url("amilia")
        self.token = ""

    async def login(self, user: str = DEMO[0], password: str = DEMO[1]) -> str:
        status, body = await self.call("GET", "/api/v3/authenticate", headers=basic(user, password))
        assert status == 200, body
        self.token = body["Token"]
        return self.token

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        url = path if path.startswith("http") else self.base + path
        hdrs = bearer(self.token) if headers is None and self.token else (headers or {})
        async with self.http.request(method, url, headers=hdrs, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def ok(self, path: str) -> Any:
        status, body = await self.get(path)
        assert status == 200, (path, body)
        return body

    async def walk(self, path: str) -> list[list[dict[str, Any]]]:
        """Follow Paging.Next to the end; returns the pages."""
        pages: list[list[dict[str, Any]]] = []
        url: str | None = path
        while url is not None:
            assert len(pages) < MAX_PAGES, "pagination did not end"
            body = await self.ok(url)
            pages.append(body["Items"])
            url = body["Paging"]["Next"]
        return pages

    async def items(self, path: str) -> list[dict[str, Any]]:
        return [item for page in await self.walk(path) for item in page]

    async def control(self, what: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if body is None and what == "stats" else "POST"
        async with self.http.request(
            method, f"{self.base}/_sandbox/{what}", json=body if body is not None else None
        ) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def connect(
    sandbox_factory: StartSandbox,
    http: aiohttp.ClientSession,
    clock: FakeClock,
    records: int = 30,
    login: bool = True,
    **settings: Any,
) -> Client:
    sandbox = await sandbox_factory(
        "amilia", records=records, clock=clock, vendors={"amilia": settings}
    )
    client = Client(http, sandbox)
    if login:
        await client.login()
    return client


# --- 1. authentication ------------------------------------------------------------------
async def test_authenticate_get_and_post_return_a_one_year_hs256_jwt(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, login=False)
    for method, path in (("GET", "/api/v3/authenticate"), ("POST", "/api/V3/authenticate")):
        status, body = await c.call(method, path, headers=basic(*DEMO))
        assert status == 200
        assert set(body) == {"Token"}
        token = body["Token"]
        assert jwt_part(token, 0) == {"alg": "HS256", "typ": "JWT"}
        claims = jwt_part(token, 1)
        assert claims["sub"] == DEMO[0]
        assert claims["iat"] == int(clock.now())
        assert claims["exp"] - claims["iat"] == 365 * 86400
    c.token = token
    assert (await c.get(f"{V3}/programs"))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        basic("demo@amilia.test", "wrong"),
        basic("nobody@amilia.test", "demo-secret"),
        {},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer abc"},
    ],
)
async def test_authenticate_rejects_bad_credentials(
    sandbox_factory: StartSandbox,
    http: aiohttp.ClientSession,
    clock: FakeClock,
    headers: dict[str, str],
) -> None:
    c = await connect(sandbox_factory, http, clock, login=False)
    status, body = await c.call("GET", "/api/v3/authenticate", headers=headers)
    assert status == 401
    assert_error(body)


async def test_bearer_is_validated_on_every_other_path(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    good = c.token
    head, payload, sig = good.split(".")
    forged_claims = {**jwt_part(good, 1), "exp": 9_999_999_999}
    forged = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    cases = {
        "missing": {},
        "garbage": bearer("not-a-jwt"),
        "tampered payload": bearer(f"{head}.{forged}.{sig}"),
        "bad signature": bearer(f"{head}.{payload}.{sig[::-1]}"),
        "basic on data path": basic(*DEMO),
    }
    for name, headers in cases.items():
        for path in (
            f"{V3}/accounts",
            f"{V3}/accounts/1000000/contacts",
            "/api/v2/en/org/8008/persons",
        ):
            status, body = await c.get(path, headers=headers)
            assert status == 401, (name, path)
            assert_error(body)


async def test_token_from_another_sandbox_secret_is_unknown(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    a = await connect(sandbox_factory, http, clock)
    sandbox_b = await sandbox_factory("amilia", records=10, seed=999, clock=clock)
    b = Client(http, sandbox_b)
    b.token = a.token  # signed with seed 42's secret
    status, body = await b.get(f"{V3}/programs")
    assert status == 401
    assert_error(body)


async def test_token_expires_after_one_year_by_the_clock(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    clock.advance(364 * 86400)
    assert (await c.get(f"{V3}/programs"))[0] == 200
    clock.advance(2 * 86400)
    status, body = await c.get(f"{V3}/programs")
    assert status == 401
    assert "expired" in body["Message"]
    await c.login()  # a fresh token works again
    assert (await c.get(f"{V3}/programs"))[0] == 200


async def test_token_expire_now_fault_invalidates_every_issued_token_once(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    old = c.token
    other = await Client(http, c.sandbox).login()
    assert (await c.control("faults", {"extra": {"token_expire_now": True}}))[0] == 200
    for token in (old, other):
        c.token = token
        status, body = await c.get(f"{V3}/programs")
        assert status == 401
        assert body["Message"] == "Authorization has been denied for this request."
    await c.login()  # a token issued afterwards works: the switch was one-shot
    assert (await c.get(f"{V3}/programs"))[0] == 200
    c.token = old
    assert (await c.get(f"{V3}/programs"))[0] == 401  # and the old ones stay dead


async def test_user_without_access_to_the_org_gets_403(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, login=False)
    await c.login("other@amilia.test", "other-secret")
    for path in (f"{V3}/accounts", "/api/v3/fr/org/forest-explorers/programs"):
        status, body = await c.get(path)
        assert status == 403
        assert_error(body)


# --- 2. routing -------------------------------------------------------------------------
async def test_language_org_number_and_slug_and_path_case(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    by_number = await c.ok("/api/v3/en/org/8008/accounts")
    by_slug = await c.ok("/api/v3/en/org/forest-explorers/accounts")
    upper = await c.ok("/api/V3/fr/org/forest-explorers/accounts")
    assert by_number["Items"] == by_slug["Items"] == upper["Items"]
    assert by_number["Paging"]["TotalCount"] == by_slug["Paging"]["TotalCount"]
    for lang in ("xx", "de", "EN"):
        status, body = await c.get(f"/api/v3/{lang}/org/8008/accounts")
        assert status == 400
        assert_error(body)
    for org in ("9999", "no-such-club"):
        status, body = await c.get(f"/api/v3/en/org/{org}/accounts")
        assert status == 404
        assert_error(body)


async def test_unknown_route_is_404_and_wrong_method_is_405(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    status, body = await c.get(f"{V3}/no-such-thing")
    assert status == 404
    assert_error(body)
    async with http.delete(c.base + f"{V3}/accounts", headers=bearer(c.token)) as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(", ")) == {"GET", "POST"}
        assert_error(await resp.json())
    status, body = await c.call("PUT", f"{V3}/registrations", json={})
    assert status == 405
    assert_error(body)


# --- 3. v3 paging -----------------------------------------------------------------------
async def test_v3_walk_follows_absolute_next_keeping_params_in_id_order(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    first = await c.ok(f"{V3}/accounts?perPage=7&showArchived=true")
    next_url = first["Paging"]["Next"]
    assert next_url.startswith(c.base + "/api/v3/en/org/8008/accounts?")
    query = dict(parse_qsl(urlsplit(next_url).query))
    assert query == {"perPage": "7", "showArchived": "true", "page": "2"}
    pages = await c.walk(f"{V3}/accounts?perPage=7&showArchived=true")
    ids = [a["Id"] for page in pages for a in page]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids)) == 30
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert first["Paging"]["TotalCount"] == 30
    for account in pages[0]:
        assert set(account) == {"Id", "Owners", "Members", "Corporate", "AccountMemberships"}
        assert all(set(p) == PERSON_FIELDS for p in account["Owners"] + account["Members"])


async def test_direct_page_and_out_of_range_page(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    pages = await c.walk(f"{V3}/accounts?perPage=5&showArchived=true")
    third = await c.ok(f"{V3}/accounts?perPage=5&showArchived=true&page=3")
    assert third["Items"] == pages[2]
    last = await c.ok(f"{V3}/accounts?perPage=5&showArchived=true&page={len(pages)}")
    assert last["Paging"]["Next"] is None
    beyond = await c.ok(f"{V3}/accounts?perPage=5&showArchived=true&page=99")
    assert beyond["Items"] == []
    assert beyond["Paging"] == {"TotalCount": 30, "Next": None}
    for bad in ("page=0", "page=x", "perPage=0", "perPage=-3", "perPage=ten"):
        status, body = await c.get(f"{V3}/accounts?{bad}")
        assert status == 400, bad
        assert_error(body)


async def test_per_page_defaults_to_200_and_the_cap_is_a_setting(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=250)
    body = await c.ok(f"{V3}/accounts?showArchived=true")
    assert len(body["Items"]) == 200
    assert body["Paging"]["TotalCount"] == 250
    big = await c.ok(f"{V3}/accounts?showArchived=true&perPage=1000")
    assert len(big["Items"]) == 200  # clamped to the cap
    capped = await connect(sandbox_factory, http, clock, records=30, per_page_max=10)
    body = await capped.ok(f"{V3}/accounts?showArchived=true&perPage=50")
    assert len(body["Items"]) == 10
    assert body["Paging"]["Next"] is not None


# --- 4. filters -------------------------------------------------------------------------
async def test_show_archived_and_account_owner_email(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=60)
    everything = await c.items(f"{V3}/accounts?showArchived=true")
    visible = await c.items(f"{V3}/accounts")
    target = visible[3]["Id"]
    status, _ = await c.control(
        "mutate", {"entity": "accounts", "update": [{"Id": target, "Archived": True}]}
    )
    assert status == 200
    after = {a["Id"] for a in await c.items(f"{V3}/accounts")}
    assert after == {a["Id"] for a in visible} - {target}
    assert target in {a["Id"] for a in await c.items(f"{V3}/accounts?showArchived=true")}
    assert len(everything) == 60 >= len(visible)

    account = visible[5]
    email = account["Owners"][0]["Email"]
    found = await c.ok(f"{V3}/accounts?accountOwnerEmail={email.upper()}")
    assert [a["Id"] for a in found["Items"]] == [account["Id"]]
    assert found["Paging"]["TotalCount"] == 1
    none = await c.ok(f"{V3}/accounts?accountOwnerEmail=nobody@example.org")
    assert none["Items"] == []
    assert none["Paging"]["TotalCount"] == 0


async def test_contacts_are_a_bare_array_of_documented_persons(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    account = (await c.ok(f"{V3}/accounts"))["Items"][0]
    contacts = await c.ok(f"{V3}/accounts/{account['Id']}/contacts")
    assert isinstance(contacts, list)
    assert len(contacts) == 2
    assert contacts == account["Owners"] + account["Members"]
    for person in contacts:
        assert set(person) == PERSON_FIELDS
        assert person["Gender"] in ("NotSpecified", "Male", "Female", "PreferNotToSay")
        date.fromisoformat(person["DateOfBirth"])
        assert person["FullName"] == f"{person['FirstName']} {person['LastName']}"
        assert {"Latitude", "Longitude"} <= set(person["Address"])
        assert isinstance(person["IsChild"], bool)
    for missing in ("999", "1000030", "abc"):
        status, body = await c.get(f"{V3}/accounts/{missing}/contacts")
        assert status == 404
        assert_error(body)


async def test_registrations_from_to_are_inclusive_on_date_created(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=400)
    every = await c.items(f"{V3}/registrations?showEnded=true")
    assert len(every) == 400
    ids = [r["RegistrationId"] for r in every]
    assert ids == sorted(ids)
    assert {"RegistrationId", "Program", "Activity", "Category", "SubCategory", "Group", "DropIn",
            "DateCreated", "Person", "AccountOwner", "Staff"} == set(every[0])  # fmt: skip
    day = every[200]["DateCreated"][:10]
    first, last = day, (date.fromisoformat(day) + timedelta(days=6)).isoformat()
    window = await c.items(f"{V3}/registrations?showEnded=true&from={first}&to={last}")
    expected = [r for r in every if first <= r["DateCreated"][:10] <= last]
    assert window
    assert window == expected
    one_day = await c.items(f"{V3}/registrations?showEnded=true&from={day}&to={day}")
    assert one_day
    assert all(r["DateCreated"].startswith(day) for r in one_day)
    assert one_day == [r for r in every if r["DateCreated"].startswith(day)]
    empty = await c.ok(f"{V3}/registrations?showEnded=true&from={last}&to={first}")
    assert empty["Items"] == []
    assert empty["Paging"]["TotalCount"] == 0
    for bad in ("from=2025-13-01", "to=yesterday", "from=2025-1-1", "showEnded=maybe"):
        status, body = await c.get(f"{V3}/registrations?{bad}")
        assert status == 400, bad
        assert_error(body)


async def test_show_ended_hides_registrations_to_ended_activities(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=120)
    every = await c.items(f"{V3}/registrations?showEnded=true")
    current = await c.items(f"{V3}/registrations")
    current_ids = {r["RegistrationId"] for r in current}
    ended = [r for r in every if r["RegistrationId"] not in current_ids]
    assert ended
    assert current
    assert current_ids < {r["RegistrationId"] for r in every}
    ends = {}
    for reg in ended[:5] + current[:5]:
        activity = reg["Activity"]["Id"]
        ends[activity] = (await c.ok(f"{V3}/activities/{activity}"))["EndDate"]
    assert all(ends[r["Activity"]["Id"]] < TODAY.isoformat() for r in ended[:5])
    assert all(ends[r["Activity"]["Id"]] >= TODAY.isoformat() for r in current[:5])


async def test_person_registrations_match_the_registration_list(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=90)
    every = await c.items(f"{V3}/registrations?showEnded=true")
    by_person: dict[int, list[int]] = {}
    for reg in every:
        by_person.setdefault(reg["Person"]["Id"], []).append(reg["RegistrationId"])
    assert max(len(v) for v in by_person.values()) >= 2
    for person_id, expected in list(by_person.items())[:12]:
        got = await c.items(f"{V3}/persons/{person_id}/registrations?showEnded=true")
        assert [r["RegistrationId"] for r in got] == expected
    account = (await c.ok(f"{V3}/accounts"))["Items"][0]
    lonely = [p["Id"] for p in account["Owners"] + account["Members"] if p["Id"] not in by_person]
    for person_id in lonely:
        assert (await c.ok(f"{V3}/persons/{person_id}/registrations?showEnded=true"))["Items"] == []
    status, body = await c.get(f"{V3}/persons/42/registrations")
    assert status == 404
    assert_error(body)


async def test_accessscans_default_to_today_and_bounds_are_inclusive(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=90)
    today = await c.items(f"{V3}/accessscans")
    assert today
    assert all(s["ScanDate"].startswith(TODAY.isoformat()) for s in today)
    start = (TODAY - timedelta(days=2)).isoformat()
    window = await c.items(f"{V3}/accessscans?start={start}&end={TODAY.isoformat()}")
    days = {s["ScanDate"][:10] for s in window}
    assert days == {start, (TODAY - timedelta(days=1)).isoformat(), TODAY.isoformat()}
    assert [s["Id"] for s in window] == sorted(s["Id"] for s in window)
    clock.advance(3 * 86400)  # "today" moves with the clock; no scans were made since
    assert (await c.ok(f"{V3}/accessscans"))["Items"] == []
    again = await c.items(f"{V3}/accessscans?start={start}&end={TODAY.isoformat()}")
    assert again == window


async def test_programs_activities_and_single_objects(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=500)
    programs = await c.items(f"{V3}/programs?showHidden=true&showArchived=true")
    assert len(programs) == 10
    visible = await c.items(f"{V3}/programs")
    assert {p["Id"] for p in visible} <= {p["Id"] for p in programs}
    assert all(not p["IsHidden"] and not p["IsArchived"] for p in visible)
    program = programs[0]
    assert await c.ok(f"{V3}/programs/{program['Id']}") == program
    acts = await c.items(
        f"{V3}/programs/{program['Id']}/activities?showHidden=true&showCancelled=true"
    )
    assert len(acts) == 10
    assert all(a["ProgramId"] == program["Id"] for a in acts)
    assert await c.ok(f"{V3}/activities/{acts[0]['Id']}") == acts[0]
    for path in (f"{V3}/programs/1", f"{V3}/activities/1", f"{V3}/programs/1/activities"):
        status, body = await c.get(path)
        assert status == 404
        assert_error(body)


# --- v2 (deprecated) --------------------------------------------------------------------
async def test_v2_lists_page_by_id_start(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=120)
    persons: list[dict[str, Any]] = []
    url: str | None = "/api/v2/en/org/8008/persons"
    pages = 0
    while url is not None and pages < 10:
        body = await c.ok(url)
        assert set(body) == {"Items", "Page"}
        persons += body["Items"]
        if body["Page"]["Next"] is not None:
            assert f"idStart={body['Page']['NextId']}" in body["Page"]["Next"]
            assert body["Page"]["Next"].startswith(c.base)
        url, pages = body["Page"]["Next"], pages + 1
    assert pages == 3
    assert len(persons) == 240
    ids = [p["Id"] for p in persons]
    assert ids == sorted(set(ids))
    v2_accounts = []
    url = "/api/v2/fr/org/forest-explorers/accounts?limit=5"
    while url is not None and pages < 60:
        body = await c.ok(url)
        assert len(body["Items"]) <= 5
        v2_accounts += [a["Id"] for a in body["Items"]]
        url, pages = body["Page"]["Next"], pages + 1
    v3_accounts = [a["Id"] for a in await c.items(f"{V3}/accounts")]
    assert v2_accounts == v3_accounts
    mid = await c.ok(f"/api/v2/en/org/8008/persons?limit=5&idStart={ids[10]}")
    assert [p["Id"] for p in mid["Items"]] == ids[10:15]
    assert mid["Page"]["NextId"] == ids[15]
    for bad in ("limit=4", "limit=101", "limit=x", "idStart=-1", "idStart=abc"):
        status, body = await c.get(f"/api/v2/en/org/8008/persons?{bad}")
        assert status == 400, bad
        assert_error(body)


# --- writes (assumed endpoints) ---------------------------------------------------------
NEW_ACCOUNT = {
    "Owners": [
        {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "Email": "ada@example.org",
            "Gender": "Female",
            "DateOfBirth": "1985-12-10",
            "Address": {"City": "Montréal", "Latitude": 45.5, "Longitude": -73.6},
        },
    ],
    "Members": [{"FirstName": "Byron", "LastName": "Lovelace", "IsChild": True}],
}


async def test_create_account_is_stored_and_listed(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    status, created = await c.call("POST", f"{V3}/accounts", json=NEW_ACCOUNT)
    assert status == 201
    assert created["Id"] > 1_000_029
    owner = created["Owners"][0]
    assert owner["FullName"] == "Ada Lovelace"
    assert owner["Id"] > 0
    assert set(owner) == PERSON_FIELDS
    assert owner["Address"]["City"] == "Montréal"
    walked = await c.items(f"{V3}/accounts?showArchived=true")
    assert walked[-1] == created
    assert len(walked) == 31
    contacts = await c.ok(f"{V3}/accounts/{created['Id']}/contacts")
    assert [p["FullName"] for p in contacts] == ["Ada Lovelace", "Byron Lovelace"]
    by_email = await c.ok(f"{V3}/accounts?accountOwnerEmail=ada@example.org")
    assert [a["Id"] for a in by_email["Items"]] == [created["Id"]]


def owner(**fields: Any) -> dict[str, Any]:
    return {"FirstName": "A", "LastName": "B", "Email": "a@b.org", **fields}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "Owners"),
        ({"Owners": []}, "Owners"),
        ({"Owners": [{"FirstName": "A", "LastName": "B"}]}, "Email"),
        ({"Owners": [owner(Email="not-an-email")]}, "Email"),
        ({"Owners": [owner(Gender="X")]}, "Gender"),
        ({"Owners": [owner(Nick="x")]}, "Nick"),
        ({"Owners": [owner(DateOfBirth="2099-01-01")]}, "DateOfBirth"),
        ({"Owners": [owner(FirstName="")]}, "FirstName"),
        ({"Owners": [owner(Id=5)]}, "Id"),
        ({"Owners": [owner(Address={"Latitude": 200})]}, "Latitude"),
        ({"Owners": [owner()], "Members": [{"FirstName": "C"}]}, "LastName"),
        ({"Owners": [owner()], "Color": 1}, "Color"),
        ([1, 2], "object"),
    ],
)
async def test_create_account_validation_is_422(
    sandbox_factory: StartSandbox,
    http: aiohttp.ClientSession,
    clock: FakeClock,
    body: Any,
    needle: str,
) -> None:
    c = await connect(sandbox_factory, http, clock, records=10)
    status, answer = await c.call("POST", f"{V3}/accounts", json=body)
    assert status == 422
    assert_error(answer)
    assert needle in answer["Message"]
    assert (await c.ok(f"{V3}/accounts?showArchived=true"))["Paging"]["TotalCount"] == 10


async def test_update_person_put(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    account = (await c.ok(f"{V3}/accounts"))["Items"][0]
    person = account["Owners"][0]
    change = {"FirstName": "Zed", "TelephoneMobile": "514-555-0000", "Address": {"City": "Laval"}}
    status, updated = await c.call("PUT", f"{V3}/persons/{person['Id']}", json=change)
    assert status == 200
    assert updated["FullName"] == f"Zed {person['LastName']}"
    assert updated["Address"] == {**person["Address"], "City": "Laval"}
    contacts = await c.ok(f"{V3}/accounts/{account['Id']}/contacts")
    assert contacts[0] == updated
    status, again = await c.call("PUT", f"{V3}/persons/{person['Id']}", json=updated)
    assert status == 200
    assert again == updated
    status, body = await c.call(
        "PUT", f"{V3}/persons/{person['Id']}", json={"DateOfBirth": "2020-13-01"}
    )
    assert status == 422
    assert "DateOfBirth" in body["Message"]
    status, body = await c.call("PUT", f"{V3}/persons/{person['Id']}", json={"Id": 1})
    assert status == 422
    assert "Id" in body["Message"]
    status, body = await c.call("PUT", f"{V3}/persons/77/", json={"FirstName": "x"})
    assert status == 404
    assert_error(body)
    async with http.put(
        c.base + f"{V3}/persons/{person['Id']}", data=b"{nope", headers=bearer(c.token)
    ) as resp:
        assert resp.status == 400
        assert_error(await resp.json())


async def test_add_skill(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    person_id = (await c.ok(f"{V3}/accounts"))["Items"][0]["Members"][0]["Id"]
    status, skill = await c.call(
        "POST", f"{V3}/persons/{person_id}/skills", json={"Name": "Swim level 3"}
    )
    assert status == 201
    assert skill["PersonId"] == person_id
    assert skill["Name"] == "Swim level 3"
    assert skill["DateObtained"] == TODAY.isoformat()
    assert isinstance(skill["Id"], int)
    status, second = await c.call(
        "POST", f"{V3}/persons/{person_id}/skills", json={"Name": "Lifeguard", "Level": "Gold"}
    )
    assert status == 201
    assert second["Id"] > skill["Id"]
    for bad in ({}, {"Name": ""}, {"Name": "x", "DateObtained": "soon"}, {"Name": "x", "Extra": 1}):
        status, body = await c.call("POST", f"{V3}/persons/{person_id}/skills", json=bad)
        assert status == 422, bad
        assert_error(body)


async def test_write_endpoints_can_be_switched_off(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, write_endpoints=False)
    status, body = await c.call("POST", f"{V3}/accounts", json=NEW_ACCOUNT)
    assert status == 405
    assert_error(body)
    status, _ = await c.call("PUT", f"{V3}/persons/3000000", json={})
    assert status == 404


async def test_unknown_setting_is_refused(sandbox_factory: StartSandbox, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="per_page_maxx"):
        await sandbox_factory("amilia", clock=clock, vendors={"amilia": {"per_page_maxx": 5}})


# --- 5. limits --------------------------------------------------------------------------
async def burst(c: Client, n: int) -> tuple[list[int], float, list[aiohttp.ClientResponse]]:
    async def one() -> tuple[int, aiohttp.ClientResponse]:
        async with c.http.get(c.base + f"{V3}/programs?perPage=1", headers=bearer(c.token)) as resp:
            await resp.read()
            return resp.status, resp

    started = time.monotonic()
    done = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), timeout=10)
    return [s for s, _ in done], time.monotonic() - started, [r for _, r in done]


async def test_burst_over_100_per_second_gets_429_and_is_counted(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    assert (await c.control("reset", {}))[0] == 200  # fresh window, login not counted
    statuses, elapsed_s, responses = await burst(c, 150)
    limited = statuses.count(429)
    assert set(statuses) <= {200, 429}
    assert limited > 0
    if elapsed_s < 1.0:  # all 150 inside one window: exactly the 50 over the cap
        assert limited == 50
    status_429 = next(r for s, r in zip(statuses, responses, strict=True) if s == 429)
    assert "Retry-After" not in status_429.headers
    _, stats = await c.control("stats")
    assert stats["rate_limited"] == limited
    assert stats["by_status"]["429"] == limited
    assert stats["violation_count"] >= limited
    assert stats["caps"]["rate_per_s"] == 100
    status, body = await c.get(f"{V3}/programs")  # the 429 body is vendor-shaped
    if status == 429:
        assert_error(body)


async def test_client_pacing_under_100_per_second_is_never_limited(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    await c.control("reset", {})
    interval_s, total = 1 / 80, 160  # 2 s at 80/s
    start = time.monotonic()
    statuses = []
    for i in range(total):
        delay = start + i * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        statuses.append((await c.get(f"{V3}/programs?perPage=1"))[0])
    assert statuses == [200] * total
    _, stats = await c.control("stats")
    assert stats["rate_limited"] == 0
    assert stats["violation_count"] == 0
    assert stats["requests"] == total
    assert stats["max_per_s"] <= 100


async def test_retry_after_setting_and_limit_overrides(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, retry_after_s=2, limits={"rate_per_s": 5})
    await c.control("reset", {})
    statuses, _, responses = await burst(c, 10)
    limited = [r for s, r in zip(statuses, responses, strict=True) if s == 429]
    assert limited
    assert all(r.headers["Retry-After"] == "2" for r in limited)
    status, _ = await c.control("faults", {"limits": {"enabled": False}})
    assert status == 200
    statuses, _, _ = await burst(c, 20)
    assert statuses == [200] * 20


# --- faults -----------------------------------------------------------------------------
async def test_injected_500_carries_a_transaction_id(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    assert (await c.control("faults", {"error_rate": 1.0}))[0] == 200
    status, body = await c.get(f"{V3}/accounts")
    assert status == 500
    assert_error(body)
    await c.control("faults", {"error_rate": 0.5, "seed": 3})
    statuses = [(await c.get(f"{V3}/programs?perPage=1"))[0] for _ in range(30)]
    assert set(statuses) == {200, 500}
    _, stats = await c.control("stats")
    assert stats["errors_injected"] == 1 + statuses.count(500)


async def test_reject_writes_fault_gives_422_on_writes_only(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    status, _ = await c.control("faults", {"reject_writes": True})
    assert status == 200
    for method, path, body in (
        ("POST", f"{V3}/accounts", NEW_ACCOUNT),
        ("PUT", f"{V3}/persons/3000000", {"FirstName": "Ok"}),
        ("POST", f"{V3}/persons/3000000/skills", {"Name": "Ok"}),
    ):
        status, answer = await c.call(method, path, json=body)
        assert status == 422, path
        assert_error(answer)
    assert (await c.get(f"{V3}/accounts"))[0] == 200
    await c.control("faults", {"reject_writes": False})
    assert (await c.call("POST", f"{V3}/accounts", json=NEW_ACCOUNT))[0] == 201
    assert (await c.control("faults", {"no_such_fault": 1}))[0] == 400


# --- mutation API -----------------------------------------------------------------------
async def test_random_account_mutations_show_in_a_full_walk_diff(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=80)
    path = f"{V3}/accounts?showArchived=true&perPage=50"
    before = {a["Id"]: digest(a) for a in await c.items(path)}
    status, result = await c.control(
        "mutate", {"entity": "accounts", "change": 0.2, "delete": 0.1, "add": 3, "seed": 7}
    )
    assert status == 200
    assert (len(result["changed"]), len(result["deleted"]), len(result["added"])) == (16, 8, 3)
    after = {a["Id"]: digest(a) for a in await c.items(path)}
    assert set(before) - set(after) == set(result["deleted"])
    assert set(after) - set(before) == set(result["added"])
    differs = {i for i in set(before) & set(after) if before[i] != after[i]}
    assert differs == set(result["changed"])
    assert result["total"] == len(after) == 75
    persons_deleted = result["related"]["persons"]["deleted"]
    assert len(persons_deleted) == 16
    assert len(result["related"]["persons"]["added"]) == 6
    v2_persons: set[int] = set()
    url: str | None = "/api/v2/en/org/8008/persons"
    for _ in range(5):
        if url is None:
            break
        body = await c.ok(url)
        v2_persons |= {p["Id"] for p in body["Items"]}
        url = body["Page"]["Next"]
    assert not v2_persons & set(persons_deleted)
    assert len(v2_persons) == 150


async def test_person_mutations_and_explicit_edits(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    accounts = await c.items(f"{V3}/accounts?showArchived=true")
    owner = accounts[0]["Owners"][0]
    member = accounts[0]["Members"][0]
    status, result = await c.control(
        "mutate",
        {
            "entity": "persons",
            "update": [{"Id": owner["Id"], "Email": "changed@example.org"}],
            "delete_ids": [member["Id"]],
            "change": 0.1,
            "add": 2,
            "seed": 1,
        },
    )
    assert status == 200
    assert result["updated"] == [owner["Id"]]
    assert member["Id"] in result["deleted"]
    assert len(result["added"]) == 2
    assert len(result["related"]["accounts"]["changed"]) >= 1
    contacts = await c.ok(f"{V3}/accounts/{accounts[0]['Id']}/contacts")
    assert [p["Id"] for p in contacts] == [owner["Id"]]
    assert contacts[0]["Email"] == "changed@example.org"
    found = await c.ok(f"{V3}/accounts?accountOwnerEmail=changed@example.org&showArchived=true")
    assert [a["Id"] for a in found["Items"]] == [accounts[0]["Id"]]
    gone = await c.ok(f"{V3}/accounts?accountOwnerEmail={owner['Email']}&showArchived=true")
    assert gone["Items"] == []
    after = await c.items(f"{V3}/accounts?showArchived=true")
    members_after = {p["Id"] for a in after for p in a["Members"]}
    assert set(result["added"]) <= members_after
    for bad in (
        {"entity": "widgets"},
        {"entity": "persons", "delete_ids": [1]},
        {"entity": "persons", "update": [{"Id": owner["Id"], "Gender": "Robot"}]},
        {"entity": "accounts", "update": [{"Id": accounts[1]["Id"], "Owners": []}]},
        {"entity": "accounts", "change": 2},
    ):
        status, body = await c.control("mutate", bad)
        assert status == 400, bad
        assert "error" in body


async def test_added_registrations_are_created_today_by_the_clock(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock, records=60)
    clock.advance(5 * 86400 + 3600)
    today = (TODAY + timedelta(days=5)).isoformat()
    window = f"{V3}/registrations?showEnded=true&from={today}&to={today}"
    assert (await c.ok(window))["Items"] == []
    status, result = await c.control("mutate", {"entity": "registrations", "add": 2, "seed": 4})
    assert status == 200
    found = await c.items(window)
    assert [r["RegistrationId"] for r in found] == result["added"]
    assert all(r["DateCreated"] == f"{today}T01:00:00" for r in found)


async def test_reset_data_restores_the_generated_records(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)
    path = f"{V3}/accounts?showArchived=true"
    original = await c.items(path)
    await c.control("mutate", {"entity": "accounts", "change": 0.5, "delete": 0.2, "add": 2})
    assert await c.items(path) != original
    assert (await c.control("reset", {"data": True}))[0] == 200
    assert await c.items(path) == original


# --- determinism, stats, size -----------------------------------------------------------
async def test_same_seed_same_data_other_seed_other_data(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def snapshot(seed: int) -> list[Any]:
        sandbox = await sandbox_factory("amilia", records=40, seed=seed, clock=clock)
        c = Client(http, sandbox)
        await c.login()
        return [
            await c.items(f"{V3}/accounts?showArchived=true"),
            await c.items(f"{V3}/registrations?showEnded=true"),
            await c.items(f"{V3}/accessscans?start=2025-12-01&end=2026-01-01"),
            await c.items(f"{V3}/programs?showHidden=true&showArchived=true"),
        ]

    first, second, other = await snapshot(5), await snapshot(5), await snapshot(6)
    assert first == second
    assert first[0] != other[0]
    assert first[1] != other[1]


async def test_stats_endpoint_counts_requests_by_status(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(sandbox_factory, http, clock)  # login: 1 request
    await c.get(f"{V3}/accounts")
    await c.get(f"{V3}/accounts/1/contacts")
    await c.get("/api/v3/xx/org/8008/accounts")
    status, stats = await c.control("stats")
    assert status == 200
    assert stats["vendor"] == "amilia"
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 2, "400": 1, "404": 1}
    assert stats["rate_limited"] == 0
    assert stats["violation_count"] == 0
    await c.control("reset", {})
    assert (await c.control("stats"))[1]["requests"] == 0


async def test_a_million_records_stay_lazy_and_fast(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    started = time.monotonic()
    c = await connect(sandbox_factory, http, clock, records=1_000_000)
    last_account = 1_000_000 + 999_999
    contacts = await c.ok(f"{V3}/accounts/{last_account}/contacts")
    assert [p["Id"] for p in contacts] == [3_000_000 + 1_999_998, 3_000_000 + 1_999_999]
    owner_email = contacts[0]["Email"]
    found = await c.ok(f"{V3}/accounts?accountOwnerEmail={owner_email}&showArchived=true")
    assert [a["Id"] for a in found["Items"]] == [last_account]
    window = await c.ok(
        f"{V3}/registrations?showEnded=true&from=2025-12-31&to=2025-12-31&perPage=5"
    )
    assert 2_000 < window["Paging"]["TotalCount"] < 4_000
    assert len(window["Items"]) == 5
    deep = await c.ok(
        f"{V3}/registrations?showEnded=true&from=2025-12-31&to=2025-12-31&perPage=5&page=300"
    )
    assert deep["Items"]
    assert deep["Items"][0]["RegistrationId"] > window["Items"][-1]["RegistrationId"]
    scans = await c.ok(f"{V3}/accessscans?perPage=1")
    assert 30_000 < scans["Paging"]["TotalCount"] < 40_000
    assert time.monotonic() - started < 5


async def test_anchor_date_and_error_message_key_settings(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    c = await connect(
        sandbox_factory, http, clock, anchor_date="2025-06-30", error_message_key="message"
    )
    regs = await c.items(f"{V3}/registrations?showEnded=true")
    assert max(r["DateCreated"][:10] for r in regs) <= "2025-06-30"
    assert min(r["DateCreated"][:10] for r in regs) >= "2024-06-30"
    status, body = await c.get(f"{V3}/accounts/1/contacts")
    assert status == 404
    assert set(body) == {"message", "TransactionId"}
